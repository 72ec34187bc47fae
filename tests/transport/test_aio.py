"""The asyncio client against a daemon process: same results and errors as the sync one, awaitable waiters,
the loop never blocked, a cancelled await applied once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from machine import StateError
from transport import TransportError
from transport.aio import connect_async


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_mutations_reads_and_waiters(daemon: Any) -> None:
    d = daemon("--hub")

    async def main() -> None:
        async with connect_async(d.addrs[0]) as c:
            assert {m["id"] for m in await c.machines()} == {"worker0", "worker1", "worker2"}
            m = await c.machine("worker0")
            assert await m.add("Foo") == 0 and m.is_active("Foo")      # the mirror is updated on return
            assert await m.can_add("Baz", args={"deny": "1"}) == 1
            assert await m.add("Baz", args={"deny": "1"}) == 1
            waiter = m.when("Bar")
            assert d.cmd("add worker0 Bar") == "OK 0"
            assert await asyncio.wait_for(waiter, 5) is True
            assert (await m.info())["records"] >= 3 and await m.errors() == []
            assert (await c.info())["machines"] == 3
            with pytest.raises(StateError):
                await m.add("Nope")
            with pytest.raises(TransportError) as ei:
                await c.machine("nope")
            assert ei.value.code == "unknown_machine"

    _run(main())


def test_the_loop_is_never_blocked_by_round_trips(daemon: Any) -> None:
    d = daemon("--hub", "--slow-foo", "0.2")     # every Foo holds the daemon 200 ms

    async def main() -> float:
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker1")
            lag = 0.0
            stop = asyncio.Event()

            async def ticker() -> None:
                nonlocal lag
                while not stop.is_set():
                    t0 = time.perf_counter()
                    await asyncio.sleep(0.005)   # the measurement itself: how late the loop wakes
                    lag = max(lag, time.perf_counter() - t0 - 0.005)

            t = asyncio.create_task(ticker())
            for _ in range(5):
                await m.toggle("Foo")
            await asyncio.gather(*(m.add("Multi") for _ in range(200)))
            stop.set()
            await t
            assert m.tick("Multi") == 399       # 200 adds of a multi state: 1, then +2 each
            return lag

    lag = _run(main())
    assert lag < 0.15, lag      # a blocked loop would have lagged by a 200 ms handler


def test_a_cancelled_await_is_applied_once_and_a_closed_client_says_so(daemon: Any) -> None:
    d = daemon("--hub", "--slow-foo", "0.3")

    async def main() -> None:
        c = await connect_async(d.addrs[0])
        m = await c.machine("worker2")
        task = asyncio.create_task(m.add("Foo"))
        await asyncio.sleep(0.05)          # the scenario: cancel while the request is on the wire
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await m.sync()                     # after the cancelled add was handled (requests keep their order)
        assert m.tick("Foo") == 1
        await c.aclose()
        with pytest.raises(TransportError) as ei:
            await m.add("Bar")
        assert ei.value.code == "closed"

    _run(main())
