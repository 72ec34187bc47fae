"""handler_thread=True: handlers on a worker thread, so a hanging one is timed out and abandoned (spec 10.4)."""

from __future__ import annotations

import threading
import time

from machine import Event, HandlerTimeoutError, Machine, Result, State


class Hangs:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.seen_thread: list[int] = []

    def AState(self, e: Event) -> None:
        self.seen_thread.append(threading.get_ident())
        # queued, not run inline: the machine is busy with this transition
        assert e.machine.add("C") >= Result.QUEUED

    def BEnter(self, e: Event) -> None:
        self.entered.set()
        self.release.wait(10)  # hangs until the test releases it


def schema() -> dict[str, State]:
    return {"A": State(), "B": State(), "C": State(), "ErrHandlerTimeout": State(require=("Exception",))}


def test_handlers_run_on_the_worker_thread() -> None:
    h = Hangs()
    m = Machine(schema(), handlers=h, handler_thread=True)
    try:
        assert m.add("A") == Result.EXECUTED
        assert m.is_active("A", "C")
        assert h.seen_thread and h.seen_thread[0] != threading.get_ident()
    finally:
        m.dispose()


def test_a_handler_past_the_timeout_cancels_and_past_the_deadline_is_abandoned() -> None:
    h = Hangs()
    m = Machine(schema(), handlers=h, handler_thread=True, handler_timeout=0.05, handler_deadline=0.2,
                handler_backoff=0.3)
    try:
        t0 = time.monotonic()
        assert m.add("B") == Result.CANCELED
        assert time.monotonic() - t0 < 2  # never waits for the hanging handler itself
        assert not m.is_active("B")
        assert any("handler timeout: BEnter" in str(e) for e in m.internal_errors)
        # past the deadline: the error state, and a backoff during which mutations are canceled
        assert m.is_active("ErrHandlerTimeout", "Exception")
        assert isinstance(m.err, HandlerTimeoutError)
        assert m.add("A") == Result.CANCELED
        # the abandoned handler finishes later: reported, and the machine works after the backoff
        w = m.when_ticks("Exception", 2)
        h.release.set()
        assert w.wait(timeout=5)
        assert "theoretical leak" in str(m.err)
        deadline = time.monotonic() + 5
        while m.add("A") != Result.EXECUTED and time.monotonic() < deadline:
            m.when_ticks("A", 1).wait(timeout=0.05)  # a bounded wait between retries, not a sync sleep
        assert m.is_active("A")
    finally:
        h.release.set()
        m.dispose()


def test_a_slow_handler_within_the_deadline_only_cancels() -> None:
    class Slow:
        def __init__(self) -> None:
            self.release = threading.Event()

        def AEnter(self, e: Event) -> None:
            self.release.wait(0.15)

    s = Slow()
    m = Machine({"A": State(), "B": State()}, handlers=s, handler_thread=True, handler_timeout=0.05,
                handler_deadline=5.0)
    try:
        assert m.add("A") == Result.CANCELED
        assert not m.is_err() and m.add("B") == Result.EXECUTED  # no error state, no backoff
    finally:
        m.dispose()


def test_mutations_dropped_with_the_queue_count_as_dequeued() -> None:
    # the queue cleared on abandon: each dropped mutation advances queue_tick and resolves its when_queue, so
    # the ticks of later mutations stay reachable (a mirror follows queue_tick to resolve its own when_queue)
    h = Hangs()
    m = Machine({**schema(), "M": State(multi=True)}, handlers=h, handler_thread=True, handler_timeout=1.0,
                handler_deadline=2.0, handler_backoff=0.1)
    ticks: list[int] = []
    t = threading.Thread(target=lambda: (h.entered.wait(5), ticks.extend(m.add("M") for _ in range(3))))
    try:
        t.start()
        assert m.add("B") == Result.CANCELED
        t.join(5)
        # queued behind the hanging handler (well before its timeout), then dropped with the queue
        assert len(ticks) == 3 and all(r >= Result.QUEUED for r in ticks) and m.tick("M") == 0
        assert m.when_queue(ticks[-1]).wait(timeout=2)
        assert m.queue_tick >= ticks[-1]
        later = m.when_queue(m.queue_tick + 1)  # the next mutation's tick: not reached by the drop
        assert not later.done
        deadline = time.monotonic() + 5
        while m.add("M") != Result.EXECUTED and time.monotonic() < deadline:
            m.when_ticks("M", 1).wait(timeout=0.05)  # a bounded wait while the back-off lasts
        assert later.wait(timeout=2) and m.tick("M") == 1
    finally:
        h.release.set()
        t.join(5)
        m.dispose()
