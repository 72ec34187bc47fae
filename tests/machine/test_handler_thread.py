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
