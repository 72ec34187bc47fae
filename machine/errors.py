"""Exceptions raised by the machine package."""

from __future__ import annotations

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
