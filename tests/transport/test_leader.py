"""Leader/followers on the endpoint (issue 19): a slow transition begun inline on the I/O thread is left to that
thread and another takes over the sockets; the hand-over survives errors, repeats, and a stop meanwhile."""

from __future__ import annotations

import threading
import time
from typing import Any

from tr_util import RawPeer, until

from machine import Event, Machine, State
from transport import expose
from transport.server.leader import DOG

SCHEMA = {"A": State(multi=True), "B": State()}


class Sleepy:
    def __init__(self, pause: float, fail: bool = False) -> None:
        self.pause = pause
        self.fail = fail
        self.runs = 0
        self.released = threading.Event()

    def AState(self, e: Event) -> None:
        self.runs += 1
        if self.pause:
            self.released.wait(self.pause)  # a slow handler (ended early by the test when it is done)
        if self.fail:
            raise RuntimeError("handler broke")


def _leaders(ep: Any) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == ep._loop.name and t.is_alive()]


def test_a_demoted_run_that_raises_is_answered_with_its_error_and_the_machine_goes_on() -> None:
    h = Sleepy(0.3, fail=True)
    m = Machine(SCHEMA, id="m", handlers=h, handler_timeout=None)
    ep = expose(m)
    peer = RawPeer(ep.address)
    try:
        before = DOG.demoted
        peer.send("add", 1, "m", {"s": ["A"]})
        assert until(lambda: DOG.demoted > before, 5)
        assert peer.request("ping", 2, None, {}, timeout=1) is not None  # answered by the new leader
        r = peer.reply(1, 5)
        assert r is not None and r[0] == "ok", r  # a raising handler: the transition is canceled, not an err
        h.fail, h.pause = False, 0
        r = peer.request("add", 3, "m", {"s": ["A"]}, timeout=5)
        assert r is not None and r[0] == "ok" and r[3][0] == 0, r
        assert h.runs == 2
    finally:
        peer.close()
        ep.stop()


def test_slow_first_runs_of_many_fresh_machines_leave_one_leader() -> None:
    """Each fresh machine's first transition is slow: a new leader per demotion, the old threads end."""
    hs = [Sleepy(0.05) for _ in range(6)]
    machs = [Machine(SCHEMA, id=f"m{i}", handlers=h, handler_timeout=None) for i, h in enumerate(hs)]
    ep = expose(machs)
    peer = RawPeer(ep.address)
    try:
        before = DOG.demoted
        for i in range(6):
            peer.send("add", i + 1, f"m{i}", {"s": ["A"]})
        got: list[int] = []
        deadline = time.monotonic() + 10
        while len(got) < 6 and time.monotonic() < deadline:
            r = peer.recv(0.5)
            if r is not None:
                assert r[0] == "ok", r
                got.append(r[1])
        assert peer.recv(0.2) is None
        assert sorted(got) == [1, 2, 3, 4, 5, 6], got
        assert DOG.demoted > before
        assert until(lambda: len(_leaders(ep)) == 1, 5), _leaders(ep)
        assert all(h.runs == 1 for h in hs)
    finally:
        peer.close()
        ep.stop()


def test_stop_while_a_run_is_demoted_returns_at_once_and_the_run_ends_quietly() -> None:
    h = Sleepy(5.0)
    m = Machine(SCHEMA, id="m", handlers=h, handler_timeout=None)
    ep = expose(m)
    peer = RawPeer(ep.address)
    try:
        before = DOG.demoted
        peer.send("add", 1, "m", {"s": ["A"]})
        assert until(lambda: DOG.demoted > before, 5)
        t0 = time.monotonic()
        ep.stop()
        assert time.monotonic() - t0 < 1.0  # the new leader closed the socket; the slow run did not hold it
        assert ep._loop.exited.is_set()
        h.released.set()  # the demoted thread returns now: it posts its result to a loop that is gone
        assert until(lambda: not _leaders(ep), 5), _leaders(ep)
        assert m.is_active("A")
        again = expose(m, addr=ep.address)  # the port was released by the stop
        again.stop()
    finally:
        h.released.set()
        peer.close()
