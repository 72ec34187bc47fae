"""Spec section 19, "Handler order and negotiation": T22-T37 (the recorder is bound after the setup)."""

from machine import LogLevel, MutationType, Result, State

EXECUTED = Result.EXECUTED
CANCELED = Result.CANCELED


def test_t22_set_exits_two_enters_one(make, record):
    mach = make()
    mach.set("A", "B")
    rec = record(mach)
    assert mach.set("C") == EXECUTED
    assert rec.calls == ["AExit", "BExit", "CEnter", "AC", "BC", "AnyEnter", "AEnd", "BEnd", "CState", "AnyState"]


def test_t23_set_exits_one_enters_two(make, record):
    mach = make()
    mach.set("A")
    rec = record(mach)
    assert mach.set("B", "C") == EXECUTED
    assert rec.calls == ["AExit", "BEnter", "CEnter", "AB", "AC", "AnyEnter", "AEnd", "BState", "CState", "AnyState"]


def test_t24_set_two_for_two(make, record):
    mach = make()
    mach.set("A", "B")
    rec = record(mach)
    assert mach.set("D", "C") == EXECUTED
    assert rec.calls == [
        "AExit", "BExit", "DEnter", "CEnter", "AD", "AC", "BD", "BC", "AnyEnter",
        "AEnd", "BEnd", "DState", "CState", "AnyState",
    ]  # fmt: skip


def test_t25_after_orders_handlers(make, nr, record):
    mach = make(nr(A=State(after=("B",)), C=State(after=("D",))))
    mach.set("A", "B")
    rec = record(mach)
    assert mach.set("C", "D") == EXECUTED
    assert rec.calls == [
        "BExit", "AExit", "DEnter", "CEnter", "BD", "BC", "AD", "AC", "AnyEnter",
        "BEnd", "AEnd", "DState", "CState", "AnyState",
    ]  # fmt: skip


def test_t26_after_with_require(make, record):
    mach = make({"Foo": State(after=("Bar",)), "Bar": State(require=("Foo",))})
    rec = record(mach)
    assert mach.add("Foo", "Bar") == EXECUTED
    assert mach.string_all() == "(Foo:1 Bar:1) [Exception:0]"
    assert rec.calls == ["BarEnter", "FooEnter", "AnyEnter", "BarState", "FooState", "AnyState"]


def test_t27_after_insertion_sort_quirk(make, nr, record, tx_tracer):
    tracer = tx_tracer()
    mach = make(nr(C=State(after=("A",))), tracers=[tracer])
    rec = record(mach)
    assert mach.set("C", "B", "A") == EXECUTED
    # `after` is not honoured: C and A never meet during the insertion sort
    assert rec.calls == ["CEnter", "BEnter", "AEnter", "AnyEnter", "CState", "BState", "AState", "AnyState"]
    assert tracer.last_accepted_target == ["C", "B", "A"]
    assert mach.active_states() == ["A", "B", "C"]  # DESIGN: index order


def test_t28_self_and_pair_handlers(make, record):
    mach = make()
    mach.set("A")
    rec = record(mach)

    assert mach.set("A", "B") == EXECUTED
    assert rec.calls == ["BEnter", "AA", "AB", "AnyEnter", "BState", "AnyState"]

    rec.clear()
    assert mach.add("C") == EXECUTED
    assert rec.calls == ["CEnter", "AA", "BB", "AC", "AB", "BC", "BA", "AnyEnter", "CState", "AnyState"]

    rec.clear()
    assert mach.add("A") == EXECUTED
    assert rec.calls == ["AA", "CC", "BB", "CA", "CB", "AC", "AB", "BA", "BC", "AnyEnter", "AnyState"]


def test_t29_remove_handlers(make, record):
    mach = make()
    mach.set("A", "B")
    rec = record(mach)

    assert mach.remove("A") == EXECUTED
    assert mach.string_all() == "(B:1) [A:2 C:0 D:0 Exception:0]"
    assert rec.calls == ["AExit", "AB", "AnyEnter", "AEnd", "AnyState"]

    # inactive state, idle machine: a no-op transition runs
    rec.clear()
    assert mach.remove("C") == EXECUTED
    assert rec.calls == ["AnyEnter", "AnyState"]


def test_t30_enter_cancels(make, record, mlog):
    mach = make(log_level=LogLevel.DECISIONS)
    mach.set("A")
    rec = record(mach, {"DEnter": False})
    log = mlog("t")

    assert mach.add("D") == CANCELED
    assert rec.calls == ["DEnter"]
    assert "[cancel] (D A) by DEnter" in log.text

    rec.clear()
    assert mach.set("D") == CANCELED
    assert rec.calls == ["AExit", "DEnter"]
    assert "[cancel] (D) by DEnter" in log.text

    assert mach.string_all() == "(A:1) [B:0 C:0 D:0 Exception:0]"


def test_t31_exit_cancels(make, record, mlog):
    mach = make(log_level=LogLevel.DECISIONS)
    mach.set("A")
    rec = record(mach, {"AExit": False})
    log = mlog("t")
    assert mach.remove("A") == CANCELED
    assert rec.calls == ["AExit"]
    assert "[cancel] () by AExit" in log.text
    assert mach.string_all() == "(A:1) [B:0 C:0 D:0 Exception:0]"


def test_t32_pair_and_self_handlers_cancel(make, record, mlog):
    mach = make()
    mach.set("A")
    rec = record(mach, {"AB": False})
    assert mach.add("B") == CANCELED
    assert rec.calls == ["BEnter", "AA", "AB"]
    assert mach.string_all() == "(A:1) [B:0 C:0 D:0 Exception:0]"

    # a fresh copy
    mach2 = make(id="t2", log_level=LogLevel.DECISIONS)
    mach2.set("A")
    rec2 = record(mach2, {"AA": False})
    log = mlog("t2")
    assert mach2.set("A", "B") == CANCELED
    assert rec2.calls == ["BEnter", "AA"]
    assert "[cancel:self] (A B) by AA" in log.text
    assert mach2.string_all() == "(A:1) [B:0 C:0 D:0 Exception:0]"


def test_t33_any_enter_cancels(make, record):
    mach = make()
    rec = record(mach, {"AnyEnter": False})
    assert mach.add("A") == CANCELED
    assert mach.string_all() == "() [A:0 B:0 C:0 D:0 Exception:0]"
    assert rec.calls == ["AEnter", "AnyEnter"]


def test_t34_implied_enter_cancels_everything(make, nr, record):
    mach = make(nr(C=State(add=("D",))))
    rec = record(mach, {"DEnter": False})
    assert mach.add("C") == CANCELED
    assert rec.calls == ["CEnter", "DEnter"]
    assert mach.string_all() == "() [A:0 B:0 C:0 D:0 Exception:0]"


def test_t35_event_and_transition_fields(make, record):
    # Go's order was [Bar Baz Exception Foo]; here it is the dict order [Foo Bar Baz Exception].
    mach = make({"Foo": State(add=("Bar",)), "Bar": State(), "Baz": State()})
    mach.add("Baz")
    seen: dict = {}

    def foo_enter(e):
        tx = e.transition
        seen["enter"] = {
            "name": e.name,
            "states_before": list(tx.states_before),
            "target_states": list(tx.target_states),
            "called_states": list(tx.called_states),
            "is_foo_bar": mach.is_active("Foo", "Bar"),
            "type": tx.type,
            "args": dict(e.args),
            "is_valid": e.is_valid(),
            "time_before": list(tx.time_before),
            "time_after": list(tx.time_after),
        }

    def foo_state(e):
        tx = e.transition
        seen["state"] = {
            "name": e.name,
            "is_foo_bar": mach.is_active("Foo", "Bar"),
            "enters": list(tx.enters),
            "exits": list(tx.exits),
        }

    rec = record(mach, {"FooEnter": foo_enter, "FooState": foo_state})
    assert mach.add("Foo", args={"x": 1}) == EXECUTED
    assert mach.string_all() == "(Foo:1 Bar:1 Baz:1) [Exception:0]"
    assert rec.calls == [
        "FooEnter", "BarEnter", "BazBaz", "BazFoo", "BazBar", "AnyEnter", "FooState", "BarState", "AnyState",
    ]  # fmt: skip

    assert seen["enter"] == {
        "name": "FooEnter",
        "states_before": ["Baz"],
        "target_states": ["Foo", "Baz", "Bar"],
        "called_states": ["Foo"],
        "is_foo_bar": False,
        "type": MutationType.ADD,
        "args": {"x": 1},
        "is_valid": True,
        "time_before": [0, 0, 1, 0],
        "time_after": [1, 1, 1, 0],  # predicted
    }
    assert seen["state"] == {
        "name": "FooState",
        "is_foo_bar": True,
        "enters": ["Foo", "Bar"],
        "exits": [],
    }


def test_t36_multi_handlers(make, nr, record):
    mach = make(nr(A=State(multi=True)))
    rec = record(mach)

    mach.add("A")
    assert mach.string_all() == "(A:1) [B:0 C:0 D:0 Exception:0]"
    assert rec.calls == ["AEnter", "AnyEnter", "AState", "AnyState"]

    rec.clear()
    mach.add("A")
    assert mach.string_all() == "(A:3) [B:0 C:0 D:0 Exception:0]"
    assert rec.calls == ["AEnter", "AA", "AnyEnter", "AState", "AnyState"]

    rec.clear()
    mach.add("B")
    assert mach.string_all() == "(A:3 B:1) [C:0 D:0 Exception:0]"
    assert rec.calls == ["BEnter", "AA", "AB", "AnyEnter", "BState", "AnyState"]

    rec.clear()
    mach.set("A", "B")
    assert mach.string_all() == "(A:5 B:1) [C:0 D:0 Exception:0]"
    assert rec.calls == ["AEnter", "AA", "BB", "BA", "AB", "AnyEnter", "AState", "AnyState"]

    rec.clear()
    mach.remove("A")
    assert mach.string_all() == "(B:1) [A:6 C:0 D:0 Exception:0]"
    assert rec.calls == ["AExit", "AB", "AnyEnter", "AEnd", "AnyState"]


def test_t37_two_bindings_run_in_bind_order(make, record):
    mach = make()
    r1 = record(mach, {"BEnter": False})
    r2 = record(mach)

    assert mach.add("A") == EXECUTED
    assert r1.calls == ["AEnter", "AnyEnter", "AState", "AnyState"]
    assert r2.calls == ["AEnter", "AnyEnter", "AState", "AnyState"]

    r1.clear()
    r2.clear()
    assert mach.add("B") == CANCELED
    assert r1.calls == ["BEnter"]
    assert r2.calls == []
