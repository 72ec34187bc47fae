"""Declared args on the wire: round trip, bounded and lenient reading (a newer peer's types are left out), and
peers without declarations (an older server: no ``args`` key) still give working mirrors."""

from __future__ import annotations

from machine import Arg, Machine, State, declared_args
from transport import connect, expose
from transport import protocol as P


def test_round_trip_and_lenient_reading() -> None:
    schema = {"A": State(args={"job": Arg(int, "job number"), "raw": bytes}), "B": State()}
    wire = P.schema_to_wire(schema)
    assert wire["A"]["args"] == {"job": {"type": "int", "help": "job number"}, "raw": {"type": "bytes"}}
    assert "args" not in wire["B"]  # nothing on the wire for a state that declares none
    assert P.schema_from_wire(wire) == schema
    wire["A"]["args"].update({"when": {"type": "date"}, "bad name": {"type": "int"}, "h": {"type": "str", "help": 5},
                              "long": {"type": "str", "help": "x" * 5000}, "odd": [1]})
    back = P.schema_from_wire(wire)["A"].args
    assert set(back) == {"job", "raw", "h", "long"} and back["h"].help == "" and len(back["long"].help) == 200
    many = {f"a{i}": {"type": "int"} for i in range(100)}
    assert len(P.schema_from_wire({"A": {"args": many}})["A"].args) == 32
    assert P.schema_from_wire({"A": {"args": "nope"}})["A"].args == {}


def test_a_mirror_without_declarations_and_one_with() -> None:
    plain = Machine({"A": State()}, id="plain")
    typed = Machine({"A": State(args={"n": Arg(float)})}, id="typed")
    ep = expose([plain, typed])
    try:
        with connect(ep.address) as c:
            listed = {m["id"]: m for m in c.machines()}
            assert "args" not in listed["plain"] and listed["typed"]["args"] == {"n": {"type": "float"}}
            rp, rt = c.machine("plain"), c.machine("typed")
            assert declared_args(rp) == {} and declared_args(rt) == {"n": Arg(float)}
            assert rp.add("A") == rt.add("A", args={"n": 1.5})
    finally:
        ep.stop()
