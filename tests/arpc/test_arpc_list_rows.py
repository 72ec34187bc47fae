"""``list`` shares one formatted row between machines of one schema in one clock: mirrors of different schemas
in equal clocks must each show their own states (a row keyed by a freed names list's id was once reused)."""

from __future__ import annotations

from arpc.commands.inspecting import _list_lines
from arpc.session import Session
from machine import Machine, State
from transport import expose


def test_mirrors_of_two_schemas_in_equal_clocks_each_show_their_own_states() -> None:
    a = {"Pa": State(), "Qa": State()}
    b = {"Xb": State(), "Yb": State()}
    machs = []
    for i in range(60):
        m = Machine(a if i % 3 else b, id=f"m{i:02d}")  # a period of 3: a freed list comes back two rows on
        m.add("Pa" if i % 3 else "Xb")  # the same clock in both schemas: [0, 1, 0]
        machs.append(m)
    ep = expose(machs)
    try:
        with Session(connect_timeout=10.0) as s:
            s.add_address(ep.address)
            s.open()
            entries = s.entries()
            assert len(entries) == 60
            for e in entries:
                s.mirror(e)
            lines = _list_lines(entries, True, False)
            states = {lines[k].split()[1]: lines[k + 1] for k in range(0, len(lines), 2)}
            for i in range(60):
                want, other = ("Pa", "Xb") if i % 3 else ("Xb", "Pa")
                assert want in states[f"m{i:02d}"] and other not in states[f"m{i:02d}"], states[f"m{i:02d}"]
    finally:
        ep.stop()
