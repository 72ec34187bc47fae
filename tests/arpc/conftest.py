"""Helpers for the arpc tests, handed out as fixtures (never imported by name from here).

- ``x``: fixture X of spec section 7 with in-process machines (``x.machs["worker0"]``, ``x.addrs``,
  ``x.net`` the :class:`arpc.local.LocalNet`, ``x.seen("worker0", "Bar")`` the args Bar's enter handler saw).
- ``cli(*argv)``: runs ``arpc <x addrs> argv`` in-process on X; returns ``Out(code, out, err)``.
  ``cli.raw(*argv)`` runs without the X addresses.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))

# a suite started in the background (`&`, nohup) inherits SIGINT ignored, and so would every REPL and CLI it
# spawns: the Ctrl+C tests would fail for the shell's reason, not ours. A handler (unlike SIG_IGN) is reset to
# the default in a child at exec, so installing Python's own restores SIGINT for the children too.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from arpc_e2e import Run as Out  # noqa: E402  (one result type for every arpc run)
from arpc_fixture import HANDLERS, make_x  # noqa: E402

from arpc.cli import run  # noqa: E402
from arpc.local import LocalNet  # noqa: E402
from machine import Machine  # noqa: E402


@dataclass
class X:
    net: LocalNet
    machs: dict[str, Machine]
    addrs: list[str]

    def seen(self, mach_id: str, state: str) -> dict[str, Any] | None:
        return HANDLERS[mach_id].seen.get(state)


@pytest.fixture
def x() -> Iterator[X]:
    net, machs, addrs = make_x()
    yield X(net, {m.id: m for m in machs}, addrs)
    for m in machs:
        m.dispose()


class Cli:
    def __init__(self, x: X, capsys: pytest.CaptureFixture[str]) -> None:
        self.x = x
        self.capsys = capsys

    def raw(self, *argv: str, connector: Callable[[str, float], Any] | None = None) -> Out:
        self.capsys.readouterr()
        code = run(list(argv), connector=connector or self.x.net.connect)
        o = self.capsys.readouterr()
        return Out(code, o.out, o.err)

    def __call__(self, *argv: str) -> Out:
        if "--" in argv:
            return self.raw(*self.x.addrs, *argv)
        return self.raw(*self.x.addrs, "--", *argv)


@pytest.fixture
def cli(x: X, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(x, capsys)
