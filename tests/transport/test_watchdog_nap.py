"""The watchdog's nap (leader.py): once every watched leader has waited in poll for NAP it sleeps until a leader's
poll returns; a slow inline handler that starts then is still left to its thread, so another machine's request is
answered while it runs (issue 19's guarantee)."""

from __future__ import annotations

import threading
import time

from tr_util import until

from machine import Event, Machine, State
from transport import connect, expose
from transport.server.leader import DOG

SCHEMA = {"Foo": State(), "Multi": State(multi=True)}


def test_a_slow_handler_begun_while_the_watchdog_naps_does_not_hold_up_other_machines() -> None:
    gate, entered = threading.Event(), threading.Event()

    class Slow:
        def FooState(self, e: Event) -> None:
            entered.set()
            gate.wait(5)

    slow = Machine(SCHEMA, id="slow", handlers=Slow(), handler_timeout=None)
    fast = Machine(SCHEMA, id="fast")
    ep = expose([slow, fast])
    try:
        with connect(ep.address, timeout=5) as c, connect(ep.address, timeout=5) as c2:
            rs, rf = c2.machine("slow"), c.machine("fast")
            rf.add("Multi")  # the loop is watched from a request on
            assert until(lambda: DOG.napping, timeout=0.9)  # within QUIET: still watched, napping
            demoted = DOG.demoted
            t = threading.Thread(target=lambda: rs.add("Foo"))
            t.start()
            try:
                assert entered.wait(5)  # the slow handler runs (inline, begun while the watchdog napped)
                t0 = time.monotonic()
                rf.add("Multi")  # answered by a new leader while the handler still runs
                took = time.monotonic() - t0
                assert not gate.is_set() and took < 0.5, took  # (a watchdog not woken would look after QUIET, 1 s)
                assert DOG.demoted == demoted + 1
            finally:
                gate.set()
                t.join(5)
            assert not t.is_alive() and rs.tick("Foo") == 1
    finally:
        ep.stop()
