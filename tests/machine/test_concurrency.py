"""Threads and asyncio: serialised transitions, exact clocks under contention, waiters, async handlers."""

from __future__ import annotations

import asyncio
import threading

import pytest

from machine import Ctx, Event, Machine, Result, State


def test_threads_adding_a_multi_state_tick_exactly() -> None:
    mach = Machine({"M": State(multi=True), "Other": State()}, queue_limit=100_000)
    n_threads, per_thread = 8, 500
    start = threading.Barrier(n_threads)
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        start.wait(timeout=5)
        mine = [mach.add("M") for _ in range(per_thread)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    total = n_threads * per_thread
    assert len(results) == total
    assert all(r == Result.EXECUTED or r >= Result.QUEUED for r in results)
    # first add: 0 -> 1, every later one +2: nothing lost, nothing doubled
    assert mach.tick("M") == 1 + 2 * (total - 1)
    assert mach.queue_len == 0
    # every appended mutation got a tick and was dequeued once
    assert mach.queue_tick == total + 1


def test_threads_mutating_while_handlers_mutate() -> None:
    class H:
        def AState(self, e: Event) -> None:
            e.machine.add("C")

    mach = Machine({"A": State(remove=("B",)), "B": State(remove=("A",)), "C": State(multi=True)},
                   handlers=H(), queue_limit=100_000)
    rounds = 300

    def flipper(state: str) -> None:
        for _ in range(rounds):
            mach.add(state)

    threads = [threading.Thread(target=flipper, args=(s,)) for s in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert mach.when_queue(mach.queue_tick + mach.queue_len).wait(timeout=5)
    # each activation of A queued exactly one C
    activations_of_a = (mach.tick("A") + 1) // 2
    assert mach.tick("C") == 2 * activations_of_a - 1
    assert not (mach.is_active("A") and mach.is_active("B"))


def test_handler_mutating_its_own_machine_does_not_deadlock() -> None:
    class H:
        def AEnter(self, e: Event) -> None:
            # checks and queued mutations from a handler never block
            assert e.machine.is_active("B") is False
            assert e.machine.add("B") >= Result.QUEUED
            assert e.machine.eval(lambda: None) is False  # nested eval is refused at once

    mach = Machine({"A": State(), "B": State()}, handlers=H())
    assert mach.add("A") == Result.EXECUTED
    assert mach.is_active("A", "B")


def test_waiter_from_another_thread() -> None:
    mach = Machine({"A": State(), "B": State()})
    w = mach.when("A", "B")
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(w.wait(timeout=5)))
    t.start()
    mach.add("A")
    assert not w.done
    mach.add("B")
    t.join(timeout=5)
    assert got == [True]
    assert w.done and not w.cancelled


def test_wait_times_out_without_resolving() -> None:
    mach = Machine({"A": State()})
    w = mach.when("A")
    assert w.wait(timeout=0.05) is False
    assert not w.done


def test_waiters_in_asyncio() -> None:
    async def main() -> None:
        mach = Machine({"A": State(), "B": State()})
        w_a, w_not = mach.when("A"), mach.when_not("A")
        assert w_not.done  # already true
        loop = asyncio.get_running_loop()
        loop.call_soon(mach.add, "A")
        assert await asyncio.wait_for(w_a, timeout=5) is True
        w_gone = mach.when_not("A")
        # a mutation from another thread wakes the awaiting coroutine
        threading.Thread(target=mach.remove, args=("A",)).start()
        assert await asyncio.wait_for(w_gone, timeout=5) is True
        ctx = Ctx()
        w_ctx = mach.when("B", ctx=ctx)
        loop.call_soon(ctx.cancel)
        assert await asyncio.wait_for(w_ctx, timeout=5) is False
        assert w_ctx.cancelled

    asyncio.run(main())


def test_async_state_handler_cancelled_by_state_ctx() -> None:
    started, cancelled = threading.Event(), threading.Event()

    class H:
        async def WorkState(self, e: Event) -> None:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    mach = Machine({"Work": State()}, handlers=H())
    mach.add("Work")
    assert started.wait(timeout=5)
    mach.remove("Work")
    assert cancelled.wait(timeout=5)
    assert not mach.is_err()


def test_async_state_handler_on_the_creating_loop_and_its_error() -> None:
    async def main() -> None:
        loop_seen: list[asyncio.AbstractEventLoop] = []

        class H:
            async def FailState(self, e: Event) -> None:
                loop_seen.append(asyncio.get_running_loop())
                raise RuntimeError("boom")

        mach = Machine({"Fail": State()}, handlers=H())
        mach.add("Fail")
        assert await asyncio.wait_for(mach.when_err(), timeout=5)
        assert loop_seen == [asyncio.get_running_loop()]
        assert isinstance(mach.err, RuntimeError) and str(mach.err) == "boom"

    asyncio.run(main())


def test_async_negotiation_handler_is_refused() -> None:
    class H:
        async def AEnter(self, e: Event) -> None:
            pass

    with pytest.raises(TypeError, match="AEnter"):
        Machine({"A": State()}, handlers=H())


def test_eval_from_another_thread_runs_serialised() -> None:
    mach = Machine({"A": State()})
    seen: list[str] = []
    assert mach.eval(lambda: seen.append(str(mach)), timeout=2)
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(mach.eval(lambda: seen.append("thread"), timeout=2)))
    t.start()
    t.join(timeout=5)
    assert out == [True] and seen == ["()", "thread"]


def test_dispose_ends_waiters_contexts_and_mutations() -> None:
    mach = Machine({"A": State(), "B": State()})
    w = mach.when("B")
    ctx = mach.state_ctx("A")
    calls: list[str] = []
    mach.on_dispose(lambda: calls.append("disposed"))
    mach.dispose()
    assert mach.disposed and calls == ["disposed"]
    assert w.done and w.cancelled and ctx.done and mach.ctx.done
    assert mach.when_disposed().wait(timeout=1)
    assert mach.add("A") == Result.CANCELED
    assert mach.when("A").cancelled
    assert str(mach) == "" and mach.time() == []
    mach.dispose()  # idempotent


def test_dispose_from_a_handler() -> None:
    class H:
        def AState(self, e: Event) -> None:
            e.machine.dispose()

    mach = Machine({"A": State(), "B": State()}, handlers=H())
    mach.add("A")
    assert mach.disposed
    assert mach.add("B") == Result.CANCELED
