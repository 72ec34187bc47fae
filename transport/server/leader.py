"""Leader/followers for the endpoint's I/O thread: a transition run inline that turns out slow is left to the
thread running it, and another thread takes over the sockets.

The I/O thread (the *leader*) runs an idle, quick machine's request inline, with no hand-off. Before it does, it
notes the run in ``ServerLoop.inline`` (a ticket -> (start, session, seq, machine, kind); two dict operations per
request, no lock, no wake-up). One ``Watchdog`` thread per process looks at the watched loops every ``TICK``; an
inline run older than ``SLOW`` is *demoted*: under the loop's ``lead`` lock the watchdog takes the run out of
``inline`` (a dict pop: whichever of the watchdog and the leader pops the ticket first owns the outcome) and
starts a new thread that becomes the leader. The lock hand-over (and the thread start) is the full memory barrier
ZeroMQ asks for when a socket moves between threads; exactly one thread polls at a time, because the demoted
thread, when its transition returns, finds its ticket gone and never touches the socket again: it posts its
result like a lane's pool thread and leaves the loop (``Demoted``). The new leader first *adopts* the run: it
counts as outstanding on its machine's lane (later requests for that machine wait behind it; its reply is sent in
order) and the machine is marked slow.

A loop is watched from its first request; it stops being watched after ``QUIET`` seconds without one, so an idle
endpoint costs no wake-ups. Meanwhile, once every watched leader has waited in poll for ``NAP`` (no inline run can
be in progress then), the watchdog sleeps until a leader's poll returns with work (``Watchdog.nudge``): a fleet of
daemons a request a second each is not looked at 200 times a second each, each look taking the GIL from a busy
I/O thread.

A run's age leaves out the time its thread waited for a CPU, ready to run (Linux's per-thread schedstat): on a
busy box (a fleet of daemons on a few cores) a quick transition is often preempted for longer than ``SLOW``, and
demoting it would cost a thread start and a hand-over for nothing. Time blocked (sleep, I/O, a lock, the GIL)
still counts: that is what a demotion is for.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from machine.log import LazyLogger

if TYPE_CHECKING:
    from .loop import ServerLoop

log = LazyLogger("transport.server")

SLOW = 0.005  # seconds: an inline transition older than this is left to its thread; the machine counts as slow
TICK = 0.005  # seconds between two looks of the watchdog while no inline run is in progress
MAX_WAIT = 0.05  # seconds between two looks at most, however busy the box
NAP = 0.02  # seconds every watched leader has waited in poll after which the watchdog sleeps until one wakes
QUIET = 1.0  # seconds without a request after which a loop is no longer watched
IDLE = 5.0  # seconds the watchdog thread waits with no loop to watch before it exits


def _schedstat_path(native_id: int) -> str:
    return f"/proc/self/task/{native_id}/schedstat"


def queued_ns(fd: int) -> int | None:
    """The nanoseconds a thread has waited on a run queue so far, from its open schedstat file (None if
    unreadable)."""
    try:
        return int(os.pread(fd, 128, 0).split()[1])
    except (OSError, ValueError, IndexError):
        return None


def own_queued_ns() -> int | None:
    """``queued_ns`` of the calling thread (opens the file: for rare checks, not for each request)."""
    try:
        fd = os.open(_schedstat_path(threading.get_native_id()), os.O_RDONLY)
    except OSError:
        return None
    try:
        return queued_ns(fd)
    finally:
        os.close(fd)


class _Leader:
    """What the watchdog keeps about a loop's leader thread: its schedstat file, the run-queue wait read at the
    last look, and the wait credited to the inline run seen then."""

    __slots__ = ("native_id", "fd", "queued", "looked", "delta", "ticket", "credit")

    def __init__(self, native_id: int) -> None:
        self.native_id = native_id
        try:
            self.fd = os.open(_schedstat_path(native_id), os.O_RDONLY)
        except OSError:
            self.fd = -1
        self.queued = queued_ns(self.fd) if self.fd >= 0 else None
        self.looked = time.perf_counter()
        self.delta = 0.0  # seconds the thread waited for a CPU between the last two looks
        self.ticket = 0
        self.credit = 0.0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def look(self, now: float) -> float:
        """Read the thread's wait at a look; returns the share of the time since the last look it was not kept
        waiting for a CPU (1.0 on a quiet box; at least 0.1)."""
        q = queued_ns(self.fd) if self.fd >= 0 else None
        self.delta = (q - self.queued) / 1e9 if q is not None and self.queued is not None else 0.0
        self.queued = q
        span, self.looked = now - self.looked, now
        return max(0.1, 1.0 - self.delta / span) if span > 0 else 1.0

    def waited(self, ticket: int, age: float) -> float:
        """Seconds of ``age`` the run ``ticket`` spent waiting for a CPU (at most ``age``): the wait between the
        last two looks is credited to the run in progress now (a run begun since then gets the whole of it, so
        its demotion may come one look late)."""
        if ticket != self.ticket:
            self.ticket, self.credit = ticket, 0.0
        self.credit = min(self.credit + self.delta, age)
        return self.credit


class Demoted(BaseException):
    """Raised on a thread that was the I/O thread once its slow inline transition returns: it leaves the loop
    (past every ``except Exception``) without touching the socket, which another thread owns now."""


class Watchdog:
    """One thread for the whole process: demotes the leader of a loop whose inline run takes longer than
    ``SLOW``."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.loops: set[ServerLoop] = set()
        self.thread: threading.Thread | None = None
        self.demoted = 0  # runs demoted so far (tests and benchmarks read it)
        self.leaders: dict[ServerLoop, _Leader] = {}  # the watchdog thread's own
        self.napping = False  # asleep until nudged: every watched leader was waiting in poll (see NAP)

    def watch(self, loop: ServerLoop) -> None:
        """Look at ``loop`` from now on (called by its leader before it handles a request)."""
        with self.cond:
            loop.watched = True
            self.loops.add(loop)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="am-endpoint-watchdog", daemon=True)
                self.thread.start()
            else:
                self.cond.notify()

    def unwatch(self, loop: ServerLoop) -> None:
        """Stop looking at ``loop`` (its leader is idle or gone; it calls ``watch`` again before a request)."""
        with self.cond:
            loop.watched = False
            self.loops.discard(loop)

    def nudge(self) -> None:
        """A leader's poll returned with work while the watchdog naps: it looks again (a leader sets its
        ``idle_since`` to 0 before it reads ``napping``, and the watchdog the other way round, so one of the two
        sees the other)."""
        with self.cond:
            self.napping = False
            self.cond.notify()

    def _nap(self, loops: list[ServerLoop], now: float) -> None:
        """Sleep until nudged (or QUIET) if every loop's leader has waited in poll for NAP."""
        for loop in loops:
            since = loop.idle_since
            if not since or now - since < NAP:
                return
        with self.cond:
            self.napping = True
            if all(loop.idle_since for loop in loops):  # (read after napping is set: see nudge)
                self.cond.wait(QUIET)
            self.napping = False

    def _run(self) -> None:
        cond = self.cond
        while True:
            with cond:
                while not self.loops:
                    if not cond.wait(IDLE) and not self.loops:
                        self.thread = None
                        for old in self.leaders.values():
                            old.close()
                        self.leaders.clear()
                        return
                loops = list(self.loops)
            wait = MAX_WAIT
            now = time.perf_counter()
            leaders = self.leaders
            for gone in [lp for lp in leaders if lp not in loops]:
                leaders.pop(gone).close()
            for loop in loops:
                # a copy made in one C call, atomic against the leader's own writes
                runs = list(loop.inline.items())
                lead = leaders.get(loop)
                if lead is None or lead.native_id != loop.native_id:
                    if lead is not None:
                        lead.close()
                    lead = leaders[loop] = _Leader(loop.native_id)
                # the next look when the leader may have had SLOW (TICK) of its own time: a leader kept waiting
                # for a CPU is looked at less often, not taken the GIL from every TICK while it barely runs
                share = lead.look(now)
                if not runs:
                    wait = min(wait, TICK / share)
                for ticket, run in runs:
                    age = now - run[0]
                    age -= lead.waited(ticket, age)
                    if age < SLOW:
                        wait = min(wait, (SLOW - age) / share)
                    else:
                        try:
                            if loop.demote(ticket):
                                self.demoted += 1
                        except Exception:  # no thread could be started: the run goes on inline, as before
                            log.exception("could not hand the endpoint's sockets to a new thread")
            self._nap(loops, now)
            time.sleep(max(wait, 0.0005))


DOG = Watchdog()


def _after_fork() -> None:
    # a forked child has none of the parent's threads (nor its endpoints' loops): a fresh watchdog, made on demand
    DOG.__init__()  # type: ignore[misc]


os.register_at_fork(after_in_child=_after_fork)
