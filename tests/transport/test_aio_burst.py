"""The asyncio client's calls in a burst (many started in one loop turn), against a daemon process: the loop's
thread only starts them (the I/O thread makes the requests), a bad name still fails its own await with the sync
mirror's error and nothing is sent for it, and replies ready at once are completed a bounded number per loop
callback."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from machine import StateError
from transport import TransportError, acalls
from transport.aio import connect_async


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_burst_s_requests_are_made_off_the_loop_s_thread(daemon: Any) -> None:
    d = daemon("--hub")

    async def main() -> None:
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker0")
            rm = m.mirror
            made_on: list[int] = []
            make = rm._mut_reply_handler

            def spy(*a: Any) -> Any:  # the real handler, and the thread that made the request
                made_on.append(threading.get_ident())
                return make(*a)

            rm._mut_reply_handler = spy  # type: ignore[method-assign,assignment]
            res = await asyncio.gather(*(m.add("Multi") for _ in range(300)))
            assert res == [0] * 300 and m.tick("Multi") == 599
            loop_thread = threading.get_ident()
            # the first is alone in flight: made and sent on the loop's thread (a round trip with no hand-off);
            # the other 299 only started there, their requests made by the client I/O thread
            assert len(made_on) == 300 and made_on[0] == loop_thread
            assert loop_thread not in made_on[1:]

    _run(main())


def test_a_bad_name_in_a_burst_fails_its_own_await_and_nothing_is_sent_for_it(daemon: Any) -> None:
    d = daemon("--hub")

    async def main() -> None:
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker1")
            with pytest.raises(StateError) as alone:  # alone: checked on the loop's thread
                await m.add("Nope")
            assert await m.add("Multi") == 0  # active: each add from here adds 2 ticks
            t0 = m.tick("Multi")
            calls = [m.add("Nope") if i % 10 == 3 else m.add("Multi", args={"i": i}) for i in range(200)]
            calls += [m.remove("Multi", "Nope2"), m.set("Nope3"), m.add("Multi", args=[1])]  # type: ignore[arg-type]
            out = await asyncio.gather(*calls, return_exceptions=True)
            bad = [r for r in out[:200] if isinstance(r, BaseException)]
            assert len(bad) == 20 and all(type(r) is StateError and str(r) == str(alone.value) for r in bad)
            assert out[:200].count(0) == 180
            assert isinstance(out[200], StateError) and "Nope2" in str(out[200])
            assert isinstance(out[201], StateError) and "Nope3" in str(out[201])
            assert isinstance(out[202], TypeError)
            await m.sync()
            assert m.tick("Multi") == t0 + 2 * 180  # only the good ones reached the server
            assert [int(x) for x in d.cmd("time worker1").split()[1:]] == m.time()
            sc = c.sync_client
            assert not sc._acalls and not sc._pending and not sc._intake

    _run(main())


def test_replies_ready_at_once_are_completed_a_bounded_number_per_loop_callback(daemon: Any) -> None:
    """All replies of a burst wait in the loop's sink before the loop runs again: the loop completes at most
    ``BATCH`` futures per callback, so a callback scheduled when the first task finishes runs while most of
    the burst is still pending (one callback completing all of them would have run every task first)."""
    d = daemon("--hub")
    n = 6 * acalls.BATCH

    async def main() -> None:
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker2")
            sc = c.sync_client
            tasks = [asyncio.ensure_future(m.add("Multi")) for _ in range(n)]
            await asyncio.sleep(0)  # the scenario: every task started (up to its await) in this loop turn,
            await asyncio.sleep(0)  # and the I/O thread woken after it
            seen: list[int] = []

            def probe() -> None:
                seen.append(sum(t.done() for t in tasks))

            tasks[0].add_done_callback(lambda _: asyncio.get_running_loop().call_soon(probe))
            # hold the loop (no await) until the I/O thread has read every reply: all wait in the sink at once
            deadline = time.monotonic() + 10
            while sc._pending or sc._intake or sc._outbox or any(not x.done for x in list(sc._acalls)):
                assert time.monotonic() < deadline, "replies not read in time"
                threading.Event().wait(0.002)
            assert await asyncio.gather(*tasks) == [0] * n
            assert len(seen) == 1 and seen[0] <= 3 * acalls.BATCH, seen

    _run(main())


def test_burst_calls_cancelled_at_once_are_each_applied_at_most_once_and_forgotten(daemon: Any) -> None:
    """Calls cancelled right after they started, most before the I/O thread made them (those are never sent;
    one made meanwhile is sent and completes): none is applied twice, the mirror agrees with the source, and
    the client keeps nothing of them."""
    d = daemon("--hub")

    async def main() -> None:
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker0")
            assert await m.add("Multi") == 0  # active: each add from here adds 2 ticks
            t0 = m.tick("Multi")
            tasks = [asyncio.ensure_future(m.add("Multi")) for _ in range(200)]
            await asyncio.sleep(0)  # the scenario: each task started, the I/O thread woken after this turn
            for t in tasks[1:]:
                t.cancel()
            out = await asyncio.gather(*tasks, return_exceptions=True)
            assert out[0] == 0 and all(isinstance(x, asyncio.CancelledError) for x in out[1:])
            await m.sync()  # after every request sent before it
            applied = (m.tick("Multi") - t0) // 2
            assert (m.tick("Multi") - t0) % 2 == 0 and 1 <= applied <= 200
            assert [int(x) for x in d.cmd("time worker0").split()[1:]] == m.time()
            sc = c.sync_client
            deadline = time.monotonic() + 10  # cancelled calls already sent complete in the background
            while sc._acalls or sc._pending or sc._intake:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert m.tick("Multi") == t0 + 2 * applied

    _run(main())


def test_a_request_started_after_a_burst_s_mutations_never_overtakes_them(daemon: Any) -> None:
    """Only add/remove/set go through the intake; a later request of another kind (here an add_ns) is sent
    after the intake's calls started before it, as the order they were started in."""
    d = daemon("--hub")

    async def main() -> None:
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker2")
            for _ in range(20):
                await m.add("Start")
                first = asyncio.ensure_future(m.add("Multi"))  # alone in flight: sent at once
                rm_start = asyncio.ensure_future(m.remove("Start"))  # others in flight: into the intake
                await asyncio.sleep(0)  # both started, the intake not made yet (its wake-up comes after the turn)
                await m.add_ns("Start")  # started after the remove: must reach the server after it
                assert await rm_start == 0 and await first == 0
                await m.sync()
                assert m.is_active("Start"), "the add_ns overtook the remove started before it"

    _run(main())


def test_close_fails_the_awaits_of_calls_still_in_the_intake(daemon: Any) -> None:
    d = daemon("--hub")

    async def main() -> None:
        c = await connect_async(d.addrs[0])
        m = await c.machine("worker0")
        first = asyncio.ensure_future(m.add("Multi"))
        burst = [asyncio.ensure_future(m.add("Multi")) for _ in range(100)]
        await asyncio.sleep(0)  # started: one in flight, 100 in the intake
        first.cancel()  # given up: no call of the client's is in flight any more, only the intake's
        await asyncio.gather(first, return_exceptions=True)
        await c.aclose()
        out = await asyncio.wait_for(asyncio.gather(*burst, return_exceptions=True), 10)
        for r in out:  # each either went out before the close (its result) or failed with closed: none hangs
            assert r == 0 or (isinstance(r, TransportError) and r.code == "closed"), r

    _run(main())
