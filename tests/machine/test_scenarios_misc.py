"""Spec section 19, "Misc": T76-T80."""

import json

import pytest

from machine import LogLevel, MutationType, Result, SchemaError, State, Tracer

EXECUTED = Result.EXECUTED
CANCELED = Result.CANCELED


def test_t76_export_and_import(make):
    mach = make()
    mach.set("A")
    mach.remove("B")
    mach.add("A")
    mach.add("B")
    mach.add("C")
    data = mach.export()
    assert data == {
        "id": "t",
        "state_names": ["A", "B", "C", "D", "Exception"],
        "time": [1, 1, 1, 0, 0],
        "queue_tick": 6,
        "machine_tick": 0,
    }
    # msgpack/JSON-safe
    assert json.loads(json.dumps(data)) == data

    other = make(id="other")
    with pytest.raises(SchemaError, match=r"(?i)id mismatch"):
        other.import_data(data)
    assert other.string_all() == "() [A:0 B:0 C:0 D:0 Exception:0]"

    fresh = make()
    fresh.import_data(data)
    assert str(fresh) == "(A:1 B:1 C:1)"
    assert fresh.machine_tick == 1
    assert fresh.queue_tick == 1


def test_t77_set_schema(make, nr):
    mach = make()
    mach.set("A", "C")
    new = {
        "A": State(multi=True),
        "B": State(remove=("C",)),
        "C": State(),
        "D": State(add=("E",)),
        "Exception": State(multi=True),
        "E": State(),
    }
    mach.set_schema(new)
    assert mach.state_names == ["A", "B", "C", "D", "Exception", "E"]
    assert mach.string_all() == "(A:1 C:1) [B:0 D:0 Exception:0 E:0]"

    assert mach.set("A", "B", "D") == EXECUTED
    assert mach.string_all() == "(A:3 B:1 D:1 E:1) [C:2 Exception:0]"

    with pytest.raises(SchemaError, match="too short"):
        mach.set_schema(new)
    assert mach.state_names == ["A", "B", "C", "D", "Exception", "E"]


class HookLog(Tracer):
    def __init__(self) -> None:
        super().__init__()
        self.hooks: list[str] = []
        self.tx_types: list = []

    def machine_init(self, mach):
        self.hooks.append("machine_init")

    def mutation_queued(self, mach, mutation):
        self.hooks.append("mutation_queued")

    def transition_init(self, tx):
        self.hooks.append("transition_init")
        self.tx_types.append(tx.type)

    def transition_start(self, tx):
        self.hooks.append("transition_start")

    def handler_start(self, tx, binding_name, handler_name):
        self.hooks.append(f"handler_start {handler_name}")

    def handler_end(self, tx, binding_name, handler_name):
        self.hooks.append(f"handler_end {handler_name}")

    def transition_finals(self, tx):
        self.hooks.append("transition_finals")

    def transition_end(self, tx):
        self.hooks.append(f"transition_end accepted={bool(tx.is_accepted)}")

    def queue_end(self, mach):
        self.hooks.append("queue_end")


def _hs_he(*names):
    out = []
    for name in names:
        out += [f"handler_start {name}", f"handler_end {name}"]
    return out


def test_t78_tracer_hooks(make, record):
    tracer = HookLog()
    mach = make(tracers=[tracer])
    assert tracer.hooks == ["machine_init"]

    def a_state(e):
        mach.add("B")

    record(mach, {"AState": a_state})
    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "(A:1 B:1) [C:0 D:0 Exception:0]"
    assert tracer.hooks == [
        "machine_init",
        # A's transition
        "mutation_queued",
        "transition_init",
        "transition_start",
        *_hs_he("AEnter", "AnyEnter"),
        "transition_finals",
        "handler_start AState",
        "mutation_queued",
        "handler_end AState",
        *_hs_he("AnyState"),
        "transition_end accepted=True",
        # B's transition
        "transition_init",
        "transition_start",
        *_hs_he("BEnter", "AA", "AB", "AnyEnter"),
        "transition_finals",
        *_hs_he("BState", "AnyState"),
        "transition_end accepted=True",
        "queue_end",
    ]
    assert tracer.tx_types == [MutationType.ADD, MutationType.ADD]


def test_t79_log_lines(make, record, caplog):
    mach = make({"Foo": State(), "Bar": State(auto=True)}, id="abcdefgh", log_level=LogLevel.OPS)
    caplog.set_level(1, logger="machine.abcdefgh")
    rec = record(mach, {"BarEnter": False})

    assert mach.add("Foo", args={"arg": "foofoofoo", "id": 7}) == EXECUTED
    assert mach.string_all() == "(Foo:1) [Bar:0 Exception:0]"
    # a partial auto rejection that leaves no change: FooFoo, AnyEnter and AnyState still run
    assert rec.calls == [
        "FooEnter", "AnyEnter", "FooState", "AnyState", "BarEnter", "FooFoo", "AnyEnter", "AnyState",
    ]  # fmt: skip

    mach.log("hello %d\nworld", 1)

    lines = [r.getMessage() for r in caplog.records if r.name == "machine.abcdefgh"]
    text = "\n".join(lines)
    assert lines, "no log lines on logger machine.abcdefgh"
    assert all(line.startswith("[abcde] ") for line in lines), lines
    for part in (
        "[add] Foo",
        "[state] +Foo",
        "[auto] Bar",
        "[cancel] (Bar Foo) by BarEnter",
        "[exter] hello 1 world",
    ):
        assert part in text, f"{part!r} not logged:\n{text}"
    assert "[cancel]" in text


def test_t80_active_order(make, tx_tracer):
    tracer = tx_tracer()
    mach = make(tracers=[tracer])

    assert mach.add("B", "A", "B") == EXECUTED
    assert tracer.last_accepted_target == ["B", "A"]
    assert mach.active_states() == ["A", "B"]  # DESIGN: index order

    # the called states come first
    assert mach.add("D") == EXECUTED
    assert tracer.last_accepted_target == ["D", "B", "A"]
    assert mach.active_states() == ["A", "B", "D"]

    assert mach.set("C", "A") == EXECUTED
    assert tracer.last_accepted_target == ["C", "A"]
    assert mach.active_states() == ["A", "C"]
