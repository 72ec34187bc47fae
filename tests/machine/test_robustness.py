"""User callbacks never break the machine, and nothing grows per activation (issue 12, items 7-9).

- A ctx or waiter ``on_done`` callback that raises is logged (logger ``machine``) and the rest runs: the
  transition completes, its final handlers run, the later callbacks run.
- A queue left over by an exception that escaped (a handler raising a BaseException) is drained by the next
  mutation without holding the machine lock, so another thread's mutation is queued, not blocked.
- A finished state context or async final handler leaves nothing on the machine's context.
- The per-schema cache of auto-state results stays bounded (AUTO_CACHE_MAX).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from typing import Any

import pytest

from machine import Ctx, Event, Machine, Result, State
from machine import schema as schema_mod
from machine.schema import compiled_for

EXECUTED = Result.EXECUTED


class _Finals:
    def __init__(self) -> None:
        self.ran: list[str] = []

    def AState(self, e: Event) -> None:
        self.ran.append("AState")

    def BState(self, e: Event) -> None:
        self.ran.append("BState")


def _boom() -> None:
    raise RuntimeError("callback boom")


def test_state_ctx_callback_that_raises_is_logged_and_the_transition_completes(caplog: Any) -> None:
    h = _Finals()
    mach = Machine({"A": State(remove=["B"]), "B": State(remove=["A"])}, handlers=h)
    try:
        mach.add("A")
        ctx = mach.state_ctx("A")
        later: list[bool] = []
        ctx.on_done(_boom)
        ctx.on_done(lambda: later.append(True))
        with caplog.at_level(logging.ERROR, logger="machine"):
            assert mach.add("B") == EXECUTED  # A leaves: its ctx ends while the transition runs
        assert mach.active_states() == ["B"]
        assert h.ran == ["AState", "BState"]  # the final handler after the ctx ended still ran
        assert later == [True]  # the callback after the raising one still ran
        assert any("callback boom" in (r.exc_text or "") or "callback" in r.getMessage() for r in caplog.records)
        assert mach.add("A") == EXECUTED  # the machine goes on
        assert mach.active_states() == ["A"]
    finally:
        mach.dispose()


def test_waiter_callback_that_raises_is_logged_and_the_transition_completes(caplog: Any) -> None:
    h = _Finals()
    mach = Machine({"A": State(), "B": State()}, handlers=h)
    try:
        w = mach.when("B")
        later: list[bool] = []
        w.on_done(_boom)
        w.on_done(lambda: later.append(True))
        with caplog.at_level(logging.ERROR, logger="machine"):
            assert mach.set("B") == EXECUTED
        assert w.wait(0) is True
        assert h.ran == ["BState"]
        assert later == [True]
        assert any(r.levelno >= logging.ERROR for r in caplog.records)
    finally:
        mach.dispose()


def test_machine_ctx_and_dispose_callbacks_that_raise_do_not_stop_dispose() -> None:
    mach = Machine({"A": State()})
    mach.add("A")
    later: list[str] = []
    mach.ctx.on_done(_boom)
    mach.ctx.on_done(lambda: later.append("ctx"))
    mach.state_ctx("A").on_done(_boom)
    mach.on_dispose(_boom)
    mach.on_dispose(lambda: later.append("dispose"))
    mach.dispose()
    assert mach.disposed
    assert mach.when_disposed().wait(0) is True
    assert sorted(later) == ["ctx", "dispose"]


class _Fatal(BaseException):
    """Not an Exception: it escapes the handler guard, and so the queue (as KeyboardInterrupt would)."""


def test_a_leftover_queue_is_drained_without_holding_the_lock() -> None:
    t2_returned = threading.Event()
    seen: dict[str, Any] = {}

    class H:
        def AState(self, e: Event) -> None:
            e.machine.add("B")  # queued behind this transition...
            raise _Fatal()  # ...which escapes the queue and leaves add(B) in it

        def BState(self, e: Event) -> None:
            # runs in the next drain: another thread's mutation must be queued meanwhile, not blocked
            seen["t2 returned while BState ran"] = t2_returned.wait(2.0)

    mach = Machine({"A": State(), "B": State(), "C": State(), "D": State()}, handlers=H(), handler_timeout=None)
    try:
        with pytest.raises(_Fatal):
            mach.add("A")
        assert mach.queue_len == 1

        def other() -> None:
            seen["t2 result"] = mach.add("D")
            t2_returned.set()

        def runner() -> None:
            mach.add("C")  # drains the leftover add(B) first

        t1 = threading.Thread(target=runner)
        t1.start()
        # t2 starts once BState runs: the runner then holds the queue
        assert mach.when("B").wait(5)
        t2 = threading.Thread(target=other)
        t2.start()
        t1.join(5)
        t2.join(5)
        assert not t1.is_alive() and not t2.is_alive()
        assert seen["t2 returned while BState ran"] is True
        assert seen["t2 result"] >= Result.QUEUED
        assert mach.when_queue(seen["t2 result"]).wait(5)
        assert mach.is_active("B", "C", "D")
    finally:
        mach.dispose()


def _callbacks(ctx: Ctx) -> int:
    return len(ctx._callbacks)


def test_finished_state_contexts_leave_no_callback_on_the_machine_ctx() -> None:
    mach = Machine({"A": State()})
    try:
        root = mach.ctx
        for _ in range(1000):
            mach.add("A")
            ctx = mach.state_ctx("A")
            mach.remove("A")
            assert ctx.done
        assert _callbacks(root) <= 2
        mach.add("A")
        live = mach.state_ctx("A")
        assert not live.done and _callbacks(root) <= 3
    finally:
        mach.dispose()
    assert live.done  # a live state ctx still ends with the machine


def test_finished_async_final_handlers_leave_no_callback_on_the_machine_ctx() -> None:
    done = threading.Event()
    count = [0]

    class H:
        async def AEnd(self, e: Event) -> None:
            count[0] += 1
            if count[0] == 1000:
                done.set()

        async def AState(self, e: Event) -> None:
            pass

    mach = Machine({"A": State()}, handlers=H())
    try:
        for _ in range(1000):
            mach.add("A")
            mach.remove("A")
        assert done.wait(10)
        from machine.aio import background_loop

        loop = background_loop()
        for _ in range(3):  # the futures' done callbacks ran before these round trips on the same loop
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)
        assert _callbacks(mach.ctx) <= 2
    finally:
        mach.dispose()


def test_auto_state_cache_stays_bounded_over_many_toggles() -> None:
    # 30k random toggles visit ~29k active sets (each a miss: ~0.2 ms of resolving); the unbounded cache held one
    # entry per set (200k toggles: 193k entries, 50 MiB); 30k keep the test well inside its timeout under load
    names = [f"S{i:02}" for i in range(20)]
    schema = {n: State() for n in names[:-1]}
    schema[names[-1]] = State(auto=True, require=["S00", "S01"])
    mach = Machine(schema)
    try:
        rnd = random.Random(7)
        picks = [rnd.choice(names[:-1]) for _ in range(30_000)]
        for s in picks:
            mach.toggle(s)
        c = compiled_for(schema)
        assert len(c.autos) <= getattr(schema_mod, "AUTO_CACHE_MAX", 4096)  # the documented bound
    finally:
        mach.dispose()


class _BadStr:
    def __str__(self) -> str:
        raise ValueError("no str for you")

    __repr__ = __str__


def test_args_whose_str_raises_do_not_break_a_logged_transition(caplog: Any) -> None:
    h = _Finals()
    mach = Machine({"A": State(), "B": State()}, handlers=h, log_level="everything", id="badstr")
    try:
        with caplog.at_level(logging.INFO, logger="machine"):
            assert mach.add("A", args={"x": _BadStr()}) == EXECUTED
        assert h.ran == ["AState"]
        assert mach.is_active("A")
        assert any("x=" in r.getMessage() for r in caplog.records)
    finally:
        mach.dispose()


def test_awaits_that_time_out_leave_nothing_on_a_long_lived_ctx() -> None:
    mach = Machine({"A": State()})

    async def main() -> None:
        for _ in range(500):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(mach.ctx, 0.0001)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(mach.when("A"), 0.0001)

    try:
        asyncio.run(main())
        assert len(mach.ctx._futures) == 0
        assert len(mach.when("A")._futures) == 0
    finally:
        mach.dispose()


class _BadEq:
    def __eq__(self, other: object) -> bool:
        raise ValueError("no eq for you")

    __hash__ = object.__hash__


def test_a_when_args_waiter_whose_eq_raises_does_not_stop_the_others() -> None:
    mach = Machine({"A": State(multi=True)})
    try:
        bad = mach.when_args("A", {"x": _BadEq()})
        good = mach.when_args("A", {"y": 1})
        mach.add("A", args={"x": 1, "y": 1})
        assert good.wait(1) is True
        assert not bad.done
    finally:
        mach.dispose()


class _BadReprError(Exception):
    def __repr__(self) -> str:
        raise ValueError("no repr for you")


def test_query_and_eval_errors_whose_repr_raises_do_not_escape() -> None:
    def query(clock: dict[str, int]) -> bool:
        raise _BadReprError()

    def fn() -> None:
        raise _BadReprError()

    mach = Machine({"A": State(), "B": State()})
    try:
        mach.when_query(query)
        ok = mach.when("B")
        assert mach.add("B") == EXECUTED  # the query raises while its waiters are checked
        assert ok.wait(0) is True
        assert mach.eval(fn) is True
        assert isinstance(mach.err, _BadReprError)
        assert mach.add("A") == EXECUTED
    finally:
        mach.dispose()


def test_a_mutation_that_drains_a_leftover_queue_returns_its_own_result() -> None:
    class H:
        def AState(self, e: Event) -> None:
            e.machine.add("B")
            raise _Fatal()

        def BEnter(self, e: Event) -> bool:
            return False  # the leftover add(B) is canceled

    mach = Machine({"A": State(), "B": State(), "C": State()}, handlers=H())
    try:
        with pytest.raises(_Fatal):
            mach.add("A")
        assert mach.add("C") == EXECUTED  # its own result, not the leftover's
        assert mach.add_err(ValueError("x")) == EXECUTED
        assert mach.active_states() == ["A", "C", "Exception"]
    finally:
        mach.dispose()


def test_machine_loggers_are_not_kept_after_their_machines() -> None:
    # a daemon that makes a machine per job must not grow logging's registry of loggers without end
    import gc
    import logging

    reg = logging.Logger.manager.loggerDict
    before = sum(1 for n in reg if n.startswith("machine.leakjob"))
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    parent = logging.getLogger("machine")
    h = Keep(logging.INFO)
    parent.addHandler(h)
    level = parent.level
    parent.setLevel(logging.INFO)
    try:
        for i in range(200):
            m = Machine({"A": State()}, id=f"leakjob{i}", log_level=1)
            m.log("job %d", i)
            m.dispose()
        gc.collect()
    finally:
        parent.removeHandler(h)
        parent.setLevel(level)
    assert sum(1 for n in reg if n.startswith("machine.leakjob")) == before
    assert len([r for r in seen if r.name.startswith("machine.leakjob")]) >= 200  # still logged through `machine`


def test_a_logger_the_user_made_for_one_machine_is_used() -> None:
    import logging

    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    own = logging.getLogger("machine.mine1")
    own.addHandler(Keep())
    own.setLevel(logging.INFO)
    m = Machine({"A": State()}, id="mine1", log_level=1)
    m.log("hello %s", "there")
    assert [r.getMessage() for r in seen][-1].endswith("hello there")
