"""A mirror's push path (remote_link: the diff applied, the checksum checked, the waiters resolved): ticks seen
once each and in order by a waiter re-armed per push, and a push it cannot apply makes it sync instead."""

from __future__ import annotations

from tr_util import until

from machine import Machine, State
from transport import Endpoint, connect, expose
from transport import protocol as P

SCHEMA = {"M": State(multi=True), "Foo": State(), "Bar": State()}


def test_a_waiter_re_armed_per_push_sees_every_tick_in_order(served: tuple[Machine, Endpoint]) -> None:
    m, ep = served
    with connect(ep.address) as c:
        rm = c.machine("m")
        seen: list[int] = []

        def arm() -> None:
            w = rm.when_time(["M"], [rm.tick("M") + 1])

            def done() -> None:
                if not w.cancelled:
                    seen.append(rm.tick("M"))
                    arm()

            w.on_done(done)

        arm()
        for _ in range(200):
            m.add("M")  # the source's own mutations: pushes to the mirror (a burst may come summed in one)
        assert until(lambda: bool(seen) and seen[-1] == m.tick("M"), 10)
        assert seen == sorted(set(seen))  # never a tick twice, never one older than the last


def test_a_push_whose_diff_does_not_fit_the_clock_makes_the_mirror_sync(served: tuple[Machine, Endpoint]) -> None:
    m, ep = served
    with connect(ep.address) as c:
        rm = c.machine("m")
        m.add("Foo")
        assert until(lambda: rm.is_active("Foo"))
        q, mt = m.queue_tick, m.machine_tick
        bad = [
            [[0, 1], [2], q, mt, 0],  # idxs and deltas differ in length
            [[9], [2], q, mt, 0],  # no such index
            [[0], [2], q, mt, 12345],  # a checksum that does not match: an update missed
        ]
        for body in bad:
            m.add("M")  # the source moves on; the mirror may only learn it from the sync the bad push starts
            before = rm.tick("M")
            c._handle(P.pack(P.CLK, 0, "m", body))
            assert rm.tick("M") == before  # nothing of the bad push applied
            assert until(lambda: rm.tick("M") == m.tick("M"))


def test_pushes_reach_a_mirror_while_another_thread_opens_and_closes_mirrors_on_the_client() -> None:
    """The push path looks its mirror up without the client's lock: mirrors of other machines opened and closed
    meanwhile, on a real thread, neither stop nor misroute the pushes."""
    import threading

    machs = [Machine(SCHEMA, id=f"m{i}") for i in range(4)]
    ep = expose(machs)
    try:
        with connect(ep.address) as c:
            rm = c.machine("m0")
            stop = threading.Event()
            errors: list[BaseException] = []

            def churn() -> None:
                try:
                    while not stop.is_set():
                        for i in (1, 2, 3):
                            other = c.machine(f"m{i}")
                            assert other.tick("M") == 0  # never another machine's pushes
                            other.close()
                except BaseException as exc:
                    errors.append(exc)

            t = threading.Thread(target=churn)
            t.start()
            try:
                for _ in range(300):
                    machs[0].add("M")
                assert until(lambda: rm.tick("M") == machs[0].tick("M"), 10)
            finally:
                stop.set()
                t.join(10)
            assert not t.is_alive() and not errors, errors
            assert rm.tick("M") == machs[0].tick("M") and not rm.disposed
    finally:
        ep.stop()
