"""Rules of DESIGN.md and spec/machine-semantics.md that the section 19 scenarios do not cover."""

import asyncio
import enum
import json
import re
import threading
import time

import pytest

from machine import (
    Ctx,
    LogLevel,
    Machine,
    Result,
    SchemaError,
    State,
    StateError,
    StateNames,
)

EXECUTED = Result.EXECUTED
CANCELED = Result.CANCELED


# --- types -------------------------------------------------------------------------------------------------


def test_result_values():
    assert issubclass(Result, enum.IntEnum)
    assert (Result.EXECUTED, Result.CANCELED, Result.QUEUED) == (0, 1, 2)


def test_state_is_frozen_and_stores_tuples():
    s = State(require=["A"], remove={"B": 1}, add=iter(["C", "D"]), after=("E",))
    assert s.require == ("A",)
    assert s.remove == ("B",)
    assert s.add == ("C", "D")
    assert s.after == ("E",)
    assert s.auto is False and s.multi is False
    assert State(require=["A"]) == State(require=("A",))
    with pytest.raises(AttributeError):
        s.auto = True  # type: ignore[misc]


def test_state_error_is_value_error():
    assert issubclass(StateError, ValueError)


# --- unknown state names -------------------------------------------------------------------------------------

RAISING = [
    ("add", lambda m: m.add("A", "Z")),
    ("remove", lambda m: m.remove("A", "Z")),
    ("set", lambda m: m.set("B", "Z")),
    ("toggle", lambda m: m.toggle("Z")),
    ("add_err_state", lambda m: m.add_err_state("Z", ValueError("x"))),
    ("can_add", lambda m: m.can_add("Z")),
    ("can_remove", lambda m: m.can_remove("Z")),
    ("not_active", lambda m: m.not_active("A", "Z")),
    ("when", lambda m: m.when("B", "Z")),
    ("when_not", lambda m: m.when_not("Z")),
    ("when_args", lambda m: m.when_args("Z", {"x": 1})),
    ("when_time", lambda m: m.when_time(["Z"], [1])),
    ("state_ctx", lambda m: m.state_ctx("Z")),
    ("clock", lambda m: m.clock("Z")),
    ("time", lambda m: m.time("A", "Z")),
    ("inspect", lambda m: m.inspect("Z")),
    ("active_states", lambda m: m.active_states("Z")),
]


@pytest.mark.parametrize("call", [c for _, c in RAISING], ids=[n for n, _ in RAISING])
def test_unknown_state_raises_before_anything_changes(make, record, call):
    mach = make()
    mach.add("A")
    rec = record(mach)
    before = (mach.clock(), mach.queue_tick, mach.string_all(), mach.queue_len)

    with pytest.raises(StateError) as info:
        call(mach)

    msg = str(info.value)
    assert "Z" in msg
    assert re.search(r"\bt\b", msg), f"the machine id is not named: {msg!r}"
    assert (mach.clock(), mach.queue_tick, mach.string_all(), mach.queue_len) == before
    assert rec.calls == []
    assert mach.is_err() is False


def test_unknown_states_are_named(make):
    mach = make()
    with pytest.raises(StateError) as info:
        mach.add("Y", "Z")
    assert "Y" in str(info.value) and "Z" in str(info.value)


def test_lenient_getters_with_unknown_states(make):
    mach = make()
    mach.add("A")
    assert mach.is_active("Z") is False
    assert mach.is_active("A", "Z") is False
    assert mach.any_active("Z") is False
    assert mach.any_active("Z", "A") is True
    assert mach.has("Z") is False
    assert mach.has("A") is True
    assert mach.index("Z") == -1
    assert mach.tick("Z") == 0
    assert mach.string_all() == "(A:1) [B:0 C:0 D:0 Exception:0]"


# --- schema ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Any", "FooEnter", "FooExit", "FooState", "FooEnd"])
def test_reserved_state_names_raise(name):
    with pytest.raises(SchemaError):
        Machine({"A": State(), name: State()}, id="t")


def test_relation_naming_the_state_itself_is_dropped(make):
    mach = make({"A": State(remove=("A", "B"), after=("A",)), "B": State()})
    schema = mach.schema
    assert list(schema["A"].remove) == ["B"]
    assert list(schema["A"].after) == []
    assert mach.is_err() is False
    assert mach.add("A") == EXECUTED
    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "(A:1) [B:0 Exception:0]"


def test_schema_is_a_copy(make, nr):
    mach = make()
    schema = mach.schema
    schema["X"] = State()
    schema.pop("A")
    assert mach.state_names == ["A", "B", "C", "D", "Exception"]
    assert set(mach.schema) == {"A", "B", "C", "D", "Exception"}


def test_user_exception_is_kept(make):
    mach = make({"A": State(), "Exception": State()})
    assert mach.state_names == ["A", "Exception"]
    assert mach.schema["Exception"] == State()


class S(StateNames):
    Foo: str
    Bar: str


def test_state_names_class(make):
    assert S.Foo == "Foo"
    assert S.Bar == "Bar"
    assert S.names() == ["Foo", "Bar"]
    mach = make({S.Foo: State(), S.Bar: State(require=(S.Foo,))})
    assert mach.add(S.Foo, S.Bar) == EXECUTED
    assert mach.is_active(S.Foo, S.Bar)


def test_set_schema_during_a_transition_raises(make, nr, record):
    mach = make()
    box: dict = {}

    def a_state(e):
        try:
            mach.set_schema(nr(Exception=State(multi=True), E=State()))
        except SchemaError as err:
            box["err"] = err

    record(mach, {"AState": a_state})
    assert mach.add("A") == EXECUTED
    assert isinstance(box.get("err"), SchemaError)
    assert "transition" in str(box["err"])
    assert mach.state_names == ["A", "B", "C", "D", "Exception"]


def test_set_schema_keeps_ticks_and_waiters(make, nr):
    mach = make()
    mach.add("A")
    w = mach.when("B")
    wt = mach.when_time(["A"], [3])
    # Exception is not added by set_schema: the new schema lists it
    mach.set_schema(nr(Exception=State(multi=True), E=State()))
    assert mach.clock() == {"A": 1, "B": 0, "C": 0, "D": 0, "Exception": 0, "E": 0}
    assert w.done is False
    assert wt.done is False
    mach.add("B", "E")
    assert w.done is True
    # spec 16: the port fixes Go's stale clock copy in when_time after set_schema
    mach.remove("A")
    mach.add("A")
    assert wt.done is True


# --- export / import ---------------------------------------------------------------------------------------


def test_export_import_round_trip(make, nr):
    m1 = make()
    m1.set("A", "C")
    m1.add("B")
    m1.remove("C")
    m1.add("D")
    data = json.loads(json.dumps(m1.export()))

    m2 = make.track(Machine.from_export(data, nr()))
    assert m2.id == "t"
    assert m2.clock() == m1.clock()
    assert m2.string_all() == m1.string_all() == "(A:1 B:1 D:1) [C:2 Exception:0]"
    assert m2.machine_tick == data["machine_tick"] + 1 == 1
    assert m2.queue_tick == 1
    assert m2.export()["time"] == data["time"]

    assert m2.add("C") == EXECUTED
    assert m2.tick("C") == 3

    # a second round trip bumps the machine tick again
    m3 = make.track(Machine.from_export(m2.export(), nr()))
    assert m3.machine_tick == 2


def test_import_schema_mismatch_raises(make, nr):
    m1 = make()
    m1.add("A")
    data = m1.export()
    with pytest.raises(SchemaError):
        Machine.from_export(data, {"A": State(), "B": State()})
    other = make({"A": State(), "B": State(), "C": State(), "X": State()})
    with pytest.raises(SchemaError):
        other.import_data(data)
    assert other.string_all() == "() [A:0 B:0 C:0 X:0 Exception:0]"


def test_import_adds_machine_restored(make, nr):
    schema = nr(MachineRestored=State())
    m1 = make(schema)
    m1.add("A")
    m2 = make.track(Machine.from_export(m1.export(), schema))
    assert m2.is_active("A")
    assert m2.is_active("MachineRestored")


# --- waiters, contexts ---------------------------------------------------------------------------------------


def test_waiter_reuse_cancel_and_own_ctx(make):
    mach = make()
    w1 = mach.when("B")
    assert mach.when("B") is w1
    w_own = mach.when("B", ctx=Ctx())
    assert w_own is not w1

    w1.cancel()
    assert w1.done is True
    assert w1.cancelled is True
    assert w1.wait(timeout=0.1) is False
    assert w_own.done is False

    mach.add("B")
    assert w_own.done is True
    assert w_own.cancelled is False


def test_when_queue_resolves_after_a_canceled_mutation(make, record):
    # spec 16: fix the Go quirk where when_queue hangs when the awaited mutation is canceled
    mach = make()
    box: dict = {}

    def a_state(e):
        box["r"] = mach.add("B")
        box["w"] = mach.when_queue(box["r"])

    record(mach, {"AState": a_state, "BEnter": False})
    assert mach.add("A") == EXECUTED
    assert box["r"] == 3
    assert mach.not_active("B")
    assert box["w"].wait(timeout=2) is True


def test_waiter_and_ctx_are_awaitable(make):
    mach = make()

    async def main():
        loop = asyncio.get_running_loop()
        w = mach.when("B")
        ctx = mach.state_ctx("B")
        fut = loop.run_in_executor(None, mach.add, "B")
        ok = await asyncio.wait_for(w, timeout=2)
        ctx_ok = await asyncio.wait_for(ctx, timeout=2)
        res = await asyncio.wait_for(fut, timeout=2)
        return ok, ctx_ok, res

    assert asyncio.run(main()) == (True, True, EXECUTED)


def test_waiter_wait_from_another_thread(make):
    mach = make()
    w = mach.when("A", "B")
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("ok", w.wait(timeout=2)), daemon=True)
    thread.start()
    mach.add("A")
    mach.add("B")
    thread.join(timeout=3)
    assert box.get("ok") is True


def test_wait_times_out(make):
    mach = make()
    w = mach.when("A")
    start = time.monotonic()
    assert w.wait(timeout=0.05) is False
    assert time.monotonic() - start < 1.5
    assert w.done is False


def test_ctx_on_done():
    ctx = Ctx()
    seen: list = []
    ctx.on_done(lambda *a: seen.append("first"))
    assert seen == []
    ctx.cancel()
    assert ctx.done is True
    assert seen == ["first"]
    ctx.on_done(lambda *a: seen.append("late"))  # runs at once
    assert seen == ["first", "late"]


def test_state_ctx_inside_state_handler_is_fresh(make, record):
    mach = make()
    old = mach.state_ctx("A")
    box: dict = {}

    def a_state(e):
        ctx = mach.state_ctx("A")
        box["ctx"] = ctx
        box["done"] = ctx.done

    record(mach, {"AState": a_state})
    mach.add("A")
    assert old.done is True
    assert box["done"] is False
    assert box["ctx"] is not old
    assert box["ctx"].done is False
    mach.remove("A")
    assert box["ctx"].done is True


# --- handlers ------------------------------------------------------------------------------------------------


def test_dict_handlers_and_detach(make, record):
    mach = make(handlers={"AEnter": lambda e: False})
    assert mach.add("A") == CANCELED
    assert mach.string_all() == "() [A:0 B:0 C:0 D:0 Exception:0]"

    mach2 = make(id="t2")
    rec = record(mach2)
    mach2.add("A")
    assert rec.calls == ["AEnter", "AnyEnter", "AState", "AnyState"]
    mach2.detach_handlers(rec)
    rec.clear()
    assert mach2.add("B") == EXECUTED
    assert rec.calls == []


def test_handler_class_methods(make):
    calls: list = []

    class Handlers:
        def AEnter(self, e):
            calls.append(("AEnter", e.name, e.machine is mach))

        def AState(self, e):
            calls.append(("AState", dict(e.args)))

    mach = make()
    mach.bind_handlers(Handlers())
    assert mach.add("A", args={"k": "v"}) == EXECUTED
    assert calls == [("AEnter", "AEnter", True), ("AState", {"k": "v"})]


def test_machine_keeps_working_after_a_raising_handler(make, record, boom):
    mach = make()
    record(mach, {"AEnter": boom("AEnter panic")})
    assert mach.add("A") == CANCELED
    assert mach.is_err()
    assert mach.add("B") == EXECUTED
    assert mach.remove("Exception") == EXECUTED
    assert mach.string_all() == "(B:1) [A:0 C:0 D:0 Exception:2]"


def test_add_err_args_are_flat(make, record):
    mach = make()
    box: dict = {}
    record(mach, {"ExceptionState": lambda e: box.update(dict(e.args))})
    err = ValueError("x")
    assert mach.add_err(err, args={"k": 1}) == EXECUTED
    assert box["err"] is err
    assert box["k"] == 1
    assert isinstance(box["err_trace"], str)
    assert not box.get("panic")


def test_mutation_from_another_thread_during_a_handler_is_queued(make, record):
    mach = make()
    box: dict = {}

    def a_state(e):
        thread = threading.Thread(target=lambda: box.setdefault("r", mach.add("B")), daemon=True)
        thread.start()
        thread.join(timeout=0.5)
        box["alive"] = thread.is_alive()

    record(mach, {"AState": a_state})
    assert mach.add("A") == EXECUTED
    assert box["alive"] is False
    assert box["r"] == 3
    assert mach.string_all() == "(A:1 B:1) [C:0 D:0 Exception:0]"


def test_will_be_inside_a_handler(make, record):
    mach = make()
    box: dict = {}

    def a_state(e):
        mach.add("B")
        box["B"] = mach.will_be("B")
        box["C"] = mach.will_be("C")

    record(mach, {"AState": a_state})
    mach.add("A")
    assert box == {"B": True, "C": False}


def test_async_final_handler_is_cancelled_when_its_state_ends(make):
    started = threading.Event()
    cancelled = threading.Event()

    class Handlers:
        async def AState(self, e):
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    mach = make(handlers=Handlers())
    assert mach.add("A") == EXECUTED
    assert started.wait(timeout=2)
    assert mach.remove("A") == EXECUTED
    assert cancelled.wait(timeout=2)
    assert mach.is_err() is False


def test_async_final_handler_error_becomes_add_err(make):
    class Handlers:
        async def AState(self, e):
            raise ValueError("async boom")

    mach = make(handlers=Handlers())
    w = mach.when_err()
    assert mach.add("A") == EXECUTED
    assert w.wait(timeout=2) is True
    assert str(mach.err) == "async boom"


# --- eval, dispose, getters ----------------------------------------------------------------------------------


def test_eval(make, record):
    mach = make()
    ran: list = []
    assert mach.eval(lambda: ran.append(mach.is_active("A"))) is True
    assert ran == [False]

    box: dict = {}

    def a_state(e):
        start = time.monotonic()
        box["r"] = mach.eval(lambda: ran.append("nested"), timeout=1.0)
        box["took"] = time.monotonic() - start

    record(mach, {"AState": a_state})
    mach.add("A")
    # nested eval from a handler of the same machine: False right away
    assert box["r"] is False
    assert box["took"] < 0.5


def test_dispose(make):
    mach = make()
    seen: list = []
    mach.on_dispose(lambda *a: seen.append("disposed"))
    mach.add("A")
    mach.dispose()
    assert mach.when_disposed().wait(timeout=2) is True
    assert mach.disposed is True
    assert mach.ctx.done is True
    assert seen == ["disposed"]
    mach.dispose()  # again: nothing
    assert seen == ["disposed"]
    assert mach.add("B") == CANCELED
    assert mach.when("B").done is True


def test_switch_and_clock_checks(make):
    mach = make()
    mach.set("A", "C")
    assert mach.switch("B", "C", "A") == "C"
    assert mach.switch("B", "D") is None

    assert mach.is_clock({"A": 1, "C": 1}) is True
    assert mach.is_clock({"A": 2}) is False
    assert mach.was_clock({"A": 0, "B": 0}) is True
    assert mach.was_clock({"A": 2}) is False
    assert mach.is_time([1, 0, 1], ["A", "B", "C"]) is True
    assert mach.is_time([1, 0, 1, 0, 0]) is True
    assert mach.was_time([1, 0], ["A", "B"]) is True
    assert mach.was_time([2], ["A"]) is False


def test_ids_parent_and_tags(make):
    parent = make(id="parent")
    child = make(id="child", parent=parent, tags=("x", "y", "x"))
    assert child.parent_id == "parent"
    assert list(child.tags) == ["x", "y"]
    by_id = make(id="child2", parent="parent")
    assert by_id.parent_id == "parent"
    anon = make.track(Machine({"A": State()}))
    assert isinstance(anon.id, str) and anon.id


# --- logging -------------------------------------------------------------------------------------------------


def test_log_level_nothing_is_silent(make, mlog, monkeypatch):
    monkeypatch.delenv("AM_LOG", raising=False)
    mach = make(id="quiet")
    log = mlog("quiet")
    mach.add("A")
    assert log.lines == []


def test_am_log_env(make, mlog, monkeypatch):
    monkeypatch.setenv("AM_LOG", "2")
    mach = make(id="envlog")
    log = mlog("envlog")
    mach.add("A")
    assert "[state] +A" in log.text


def test_log_level_enum():
    assert [int(v) for v in LogLevel] == [0, 1, 2, 3, 4, 5]
    assert [v.name for v in LogLevel] == ["NOTHING", "EXTERNAL", "CHANGES", "OPS", "DECISIONS", "EVERYTHING"]
