"""Exceptions raised by the machine package, and helpers to tell and format errors."""

from __future__ import annotations

import sys
from collections.abc import Iterable


class StateError(ValueError):
    """A state name is not in the machine's schema.

    Raised before anything changes. ``states`` holds the unknown names, ``machine_id`` the machine.
    """

    def __init__(self, states: Iterable[str], machine_id: str) -> None:
        self.states = list(states)
        self.machine_id = machine_id
        noun = "state" if len(self.states) == 1 else "states"
        super().__init__(f"unknown {noun}: {' '.join(self.states)} (machine {machine_id})")


class SchemaError(ValueError):
    """A schema is invalid (reserved or malformed names, relation conflicts), or an import or a schema change
    does not fit the machine."""


class HandlerTimeoutError(TimeoutError):
    """A handler ran longer than the machine's ``handler_timeout``; its transition was canceled."""


def trace_text(err: BaseException) -> str:
    """The formatted traceback of ``err`` (traceback is imported on first use: only errors need it)."""
    import traceback

    return "".join(traceback.format_exception(err))


def is_cancel(err: BaseException) -> bool:
    """True for exactly a cancellation (asyncio's or concurrent.futures'), without importing either."""
    for mod, name in (("asyncio", "CancelledError"), ("concurrent.futures", "CancelledError")):
        m = sys.modules.get(mod)
        if m is not None and type(err) is getattr(m, name):
            return True
    return False
