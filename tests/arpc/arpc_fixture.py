"""Fixture X (spec section 7) with in-process machines: worker0..2, each behind ``local://<id>``.

``python tests/arpc/arpc_fixture.py [ARPC ARGS...]`` runs arpc (REPL or ``-- CMD``) on it, for pty tests that
need no daemon. ``--active ID=STATE,STATE`` sets initial states. ``--announce`` prints ``[waiting]`` on stderr
whenever a ``when*`` waiter is made (so a test knows a command is waiting before it sends Ctrl+C).
"""

from __future__ import annotations

import sys
from typing import Any

from arpc.local import LocalNet
from machine import Machine, State

SCHEMA = {
    "Exception": State(multi=True),
    "ErrOnClient": State(require=("Exception",)),
    "Foo": State(remove=("Foo", "Bar", "Baz")),
    "Bar": State(remove=("Foo", "Bar", "Baz")),
    "Baz": State(remove=("Foo", "Bar", "Baz")),
    "Start": State(),
    "Ready": State(require=("Start",)),
}


class Handlers:
    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}

    def FooEnter(self, e: Any) -> None:
        self.seen["Foo"] = dict(e.args)

    def BarEnter(self, e: Any) -> None:
        self.seen["Bar"] = dict(e.args)

    def BazEnter(self, e: Any) -> bool:
        self.seen["Baz"] = dict(e.args)
        return bool(e.args.get("deny") != "1")


class AnnouncingMachine(Machine):
    announce = False

    def when(self, *states: str, ctx: Any = None) -> Any:
        w = super().when(*states, ctx=ctx)
        if self.announce:
            print("[waiting]", file=sys.stderr, flush=True)
        return w


HANDLERS: dict[str, Handlers] = {}  # machine id -> its handlers (of the last make_x)


def make_x(n: int = 3) -> tuple[LocalNet, list[Machine], list[str]]:
    net = LocalNet()
    machs = []
    for i in range(n):
        h = Handlers()
        m = AnnouncingMachine(SCHEMA, id=f"worker{i}", parent="daemon", handlers=h)
        HANDLERS[m.id] = h
        machs.append(m)
        net.serve(f"local://{m.id}", [m])
    return net, machs, [f"local://{m.id}" for m in machs]


def main(argv: list[str]) -> int:
    from arpc.cli import run

    net, machs, addrs = make_x()
    by_id = {m.id: m for m in machs}
    rest = []
    it = iter(argv)
    for a in it:
        if a == "--announce":
            AnnouncingMachine.announce = True
        elif a == "--active":
            mid, _, states = next(it).partition("=")
            by_id[mid].add(*states.split(","))
        else:
            rest.append(a)
    return run([*addrs, *rest], connector=net.connect)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
