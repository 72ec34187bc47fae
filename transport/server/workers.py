"""Per-machine lanes and the bounded pool of threads that runs them: where requests that may block (handlers) go
when the endpoint's I/O thread must not run them.

A ``Lane`` is one machine's FIFO of jobs. The pool runs at most one job of a lane at a time, so a machine's jobs
run in the order they were submitted; lanes of different machines run in parallel on up to ``MAX_THREADS``
threads. Threads are made on demand and exit after ``IDLE`` seconds without work.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from machine import Machine
from machine.log import LazyLogger

log = LazyLogger("transport.server")

MAX_THREADS = 32  # lanes that run at once; more busy machines than this wait their turn (the I/O thread never)
IDLE = 2.0  # seconds a pool thread waits for work before it exits


class Lane:
    """One machine's hand-off state. ``jobs`` is shared with the pool (under its lock); ``outstanding`` and
    ``slow_until`` belong to the I/O thread."""

    __slots__ = ("mach", "jobs", "scheduled", "held", "outstanding", "slow_until", "quick", "waiting")

    def __init__(self, mach: Machine) -> None:
        self.mach = mach
        self.jobs: deque[Callable[[], None]] = deque()
        self.scheduled = False  # in the ready queue or running on a pool thread
        self.held = False  # its turn is taken by a transition demoted from the I/O thread (under the pool's lock)
        self.outstanding = 0  # handed off and not yet answered (the I/O thread's count)
        self.slow_until = 0.0  # monotonic time until which the machine counts as slow
        self.quick = 0  # quick transitions in a row on this lane since the last slow one
        self.waiting: dict[bytes, int] = {}  # outstanding requests per session identity (the I/O thread's)


class Workers:
    """A bounded pool that runs lanes: each lane's jobs in order, one at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cond = threading.Condition(threading.Lock())
        self.ready: deque[Lane] = deque()
        self.threads = 0
        self.idle = 0
        self.stopped = False

    def submit(self, lane: Lane, job: Callable[[], None]) -> None:
        """Queue ``job`` on ``lane``; it runs after the lane's earlier jobs, on a pool thread."""
        with self.cond:
            if self.stopped:
                return
            lane.jobs.append(job)
            if lane.scheduled or lane.held:
                return
            start = self._schedule(lane)
        if start:
            self._start()

    def hold(self, lane: Lane) -> None:
        """Run none of the lane's jobs until ``release``: a transition of its machine, begun on the I/O thread,
        still runs on the thread that was the I/O thread (``leader.py``)."""
        with self.cond:
            lane.held = True

    def release(self, lane: Lane) -> None:
        """That transition is done: the lane's jobs run again, in order."""
        with self.cond:
            lane.held = False
            start = bool(lane.jobs) and not lane.scheduled and not self.stopped and self._schedule(lane)
        if start:
            self._start()

    def _schedule(self, lane: Lane) -> bool:
        """Put the lane in the ready queue (under the lock); True when a thread must be started for it."""
        lane.scheduled = True
        self.ready.append(lane)
        if self.idle:
            self.cond.notify()
            return False
        if self.threads >= MAX_THREADS:
            return False  # a running thread takes it when it is done with its lane's job
        self.threads += 1
        return True

    def _start(self) -> None:
        t = threading.Thread(target=self._run, name=f"{self.name} {self.threads}", daemon=True)
        t.start()

    def _run(self) -> None:
        cond, ready = self.cond, self.ready
        while True:
            with cond:
                while not ready:
                    if self.stopped:
                        self.threads -= 1
                        return
                    self.idle += 1
                    woke = cond.wait(IDLE)
                    self.idle -= 1
                    if not woke and not ready:
                        self.threads -= 1
                        return
                lane = ready.popleft()
                if lane.held:  # (queued before it was held) release() queues it again
                    lane.scheduled = False
                    continue
                job = lane.jobs.popleft()
            try:
                job()
            except Exception:
                log.exception("endpoint worker job failed")
            with cond:
                if lane.jobs and not self.stopped and not lane.held:
                    ready.append(lane)  # at the back: a machine with a long queue does not starve the others
                else:
                    lane.scheduled = False

    def stop(self) -> None:
        """Drop the jobs not started; running ones finish. Idle threads exit."""
        with self.cond:
            self.stopped = True
            for lane in self.ready:
                lane.jobs.clear()
                lane.scheduled = False
            self.ready.clear()
            self.cond.notify_all()
