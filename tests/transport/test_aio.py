"""The asyncio client against a daemon process: same results and errors as the sync one, awaitable waiters,
the loop never blocked, a cancelled await applied once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
import time
from typing import Any

import pytest
from tr_util import freeze

from machine import StateError
from transport import MirrorLimitError, TransportError, connect
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


def test_a_retried_async_call_is_applied_once_and_a_cancelled_one_completes_in_the_background(daemon: Any) -> None:
    """FooState sleeps 1.5 s: the I/O thread sends the unanswered call again after 1 s with its seq and the server
    answers it once. A call cancelled while on the wire is not lost half way: it is applied once, its reply still
    reaches the mirror, and the client forgets it then."""
    d = daemon("--hub", "--slow-foo", "1.5")

    async def main() -> None:
        async with connect_async(d.addrs[0], timeout=5) as c:
            m = await c.machine("worker0")
            assert await m.add("Foo") == 0 and m.tick("Foo") == 1
            assert d.cmd("time worker0").split()[3] == "1"      # TIME, Exception, ErrOnClient, Foo

            m1 = await c.machine("worker1")
            task = asyncio.create_task(m1.add("Foo"))
            await asyncio.sleep(0.05)                          # the scenario: cancelled while on the wire
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            sc = c.sync_client
            assert len(sc._acalls) == 1                        # still in flight, resent past 1 s
            assert await asyncio.wait_for(m1.when("Foo"), 5)   # the first (and only) result reached the mirror
            assert d.cmd("time worker1").split()[3] == "1"
            assert await m1.add("Multi") == 0 and m1.tick("Foo") == 1
            assert not sc._acalls and not sc._pending

    _run(main())


def test_no_thread_per_call_and_1000_at_once_are_all_answered(daemon: Any) -> None:
    d = daemon("--hub")

    async def main() -> None:
        before = {t.ident for t in threading.enumerate()}
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker0")
            peak = 0

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, len({t.ident for t in threading.enumerate()} - before))
                    await asyncio.sleep(0)

            w = asyncio.create_task(watch())
            res = await asyncio.gather(*(m.add("Multi") for _ in range(1000)))
            w.cancel()
            assert res == [0] * 1000 and m.tick("Multi") == 1999
            assert [int(x) for x in d.cmd("time worker0").split()[1:]] == m.time()
            assert not c.sync_client._acalls and not c.sync_client._pending
        # at most the process's one client I/O thread, started for the first client of this process
        assert peak <= 1, peak

    _run(main())


def test_an_async_call_times_out_like_a_sync_one(daemon: Any) -> None:
    d = daemon("--hub")

    async def main() -> None:
        async with connect_async(d.addrs[0], timeout=0.5) as c:
            m = await c.machine("worker0")
            freeze(d.proc.pid)
            try:
                t0 = time.monotonic()
                with pytest.raises(TransportError) as ei:
                    await m.add("Foo")
                took = time.monotonic() - t0
            finally:
                os.kill(d.proc.pid, signal.SIGCONT)
            assert ei.value.code == "timeout" and "within 0.5s" in str(ei.value)
            assert 0.45 < took < 1.5, took                     # the I/O thread looks at deadlines every 0.1-0.25 s
            assert not c.sync_client._acalls
            assert await m.add("Bar") == 0                     # the link is fine afterwards

    _run(main())


def test_closing_the_client_fails_the_calls_in_flight_with_closed(daemon: Any) -> None:
    d = daemon("--hub", "--slow-foo", "0.5")

    async def main() -> None:
        c = await connect_async(d.addrs[0])
        m = await c.machine("worker0")
        task = asyncio.create_task(m.add("Foo"))
        await asyncio.sleep(0.1)                          # sent, the daemon busy with it
        await c.aclose()
        with pytest.raises(TransportError) as ei:
            await asyncio.wait_for(task, 5)
        assert ei.value.code == "closed" and not c.sync_client._acalls
        assert c.state.active_states() == ["Disconnected"]

    _run(main())


def test_mutate_many_gives_what_the_sync_client_gives(daemon: Any) -> None:
    d = daemon("--hub")
    ops: list[Any] = [("worker0", "add", ["Multi"], None)] * 1500 + [
        ("worker1", "add", ["Baz"], {"deny": "1"}), ("nope", "add", ["Foo"], None), ("worker2", "add", ["Nope"], None)]

    def shape(res: list[Any]) -> list[Any]:
        return [(type(x).__name__, getattr(x, "code", None)) if isinstance(x, BaseException) else int(x) for x in res]

    with connect(d.addrs[0]) as c:
        want = shape(c.mutate_many(ops))

    async def main() -> list[Any]:
        async with connect_async(d.addrs[0]) as c:
            m0 = await c.machine("worker0")
            got = shape(await c.mutate_many(ops))
            assert m0.tick("Multi") == 6000 - 1               # 3000 adds of a multi state over both runs
            with pytest.raises(ValueError):
                await c.mutate_many([("worker0", "toggle", ["Foo"], None)])
            return got

    assert _run(main()) == want
    assert want[-3:] == [1, ("TransportError", "unknown_machine"), ("StateError", None)]


def test_the_io_thread_resends_an_unanswered_async_call_and_it_is_applied_once(daemon: Any) -> None:
    """The daemon frozen past the resend interval: the client I/O thread sends the call again with its seq (no
    thread of the caller's is there to do it); once the daemon goes on, the call is answered once, applied once."""
    d = daemon("--hub")

    async def main() -> None:
        async with connect_async(d.addrs[0], timeout=8) as c:
            m = await c.machine("worker0")
            sc = c.sync_client
            frames: list[bytes] = []
            send = sc._send

            def spy(frame: bytes) -> bool:    # observes the adds that go out; sends everything as before
                if b"Multi" in frame:
                    frames.append(frame)
                return send(frame)

            sc._send = spy  # type: ignore[method-assign]
            freeze(d.proc.pid)
            try:
                task = asyncio.create_task(m.add("Multi"))
                assert await _until_async(lambda: len(frames) >= 2, 5), frames   # sent, then sent again
            finally:
                os.kill(d.proc.pid, signal.SIGCONT)
            assert await task == 0
            assert len(set(frames)) == 1                                    # the same frame: the same seq
            assert m.tick("Multi") == 1 and d.cmd("time worker0").split()[-1] == "1"

    _run(main())


async def _until_async(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def test_sync_threads_and_async_tasks_share_one_client(daemon: Any) -> None:
    """The sync client's threads and asyncio tasks on the same Client: each call answered once, each mutation
    applied once, whoever holds the socket sends the others' calls."""
    d = daemon("--hub")

    async def main() -> None:
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker0")
            sync_client = c.sync_client
            errors: list[BaseException] = []

            def hammer() -> None:
                try:
                    rm = sync_client.machine("worker0")
                    for _ in range(300):
                        rm.add("Multi")
                    sync_client.mutate_many([("worker0", "add", ["Multi"], None)] * 300)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=hammer) for _ in range(3)]
            for t in threads:
                t.start()
            res = await asyncio.gather(*(m.add("Multi") for _ in range(900)),
                                       *(m.add("Multi") for _ in range(300)))
            await asyncio.get_running_loop().run_in_executor(None, lambda: [t.join(30) for t in threads])
            assert not errors and res == [0] * 1200
            adds = 3 * 600 + 1200
            await m.sync()
            assert m.tick("Multi") == 2 * adds - 1
            assert d.cmd("time worker0").split()[-1] == str(2 * adds - 1)

    _run(main())


def test_add_ns_is_sent_without_a_thread_and_sync_sees_every_one(daemon: Any) -> None:
    d = daemon("--hub")

    async def main() -> None:
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker0")
            await m.add_ns("Multi")                            # alone: sent at once
            await asyncio.gather(*(m.add_ns("Multi") for _ in range(2000)))   # a burst: sent by the I/O thread
            await m.sync()                                     # after every earlier request was handled
            assert m.tick("Multi") == 2 * 2001 - 1
            assert d.cmd("time worker0").split()[-1] == str(2 * 2001 - 1)
            with pytest.raises(StateError):
                await m.add_ns("Nope")
            assert not c.sync_client._acalls

    _run(main())


class _NoThreads(concurrent.futures.ThreadPoolExecutor):
    """A default executor that refuses work: a member that runs on a thread fails the test."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the loop's default executor was used for {fn!r}")


def test_when_args_queue_len_close_and_aclose_take_no_thread(daemon: Any) -> None:
    d = daemon("--hub")

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(_NoThreads())
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker0")
            assert await m.queue_len() == 0
            w = await m.when_args("Foo", {"job": 2})      # registered on the server when this returns
            other = await m.when_args("Foo", {"job": 3})
            other.cancel()                                  # its cancel is posted, never waited for
            assert await m.add("Foo", args={"job": 1}) == 0
            assert not w.done
            assert await m.remove("Foo") == 0 and await m.add("Foo", args={"job": 2, "x": 1}) == 0
            assert await asyncio.wait_for(w, 5) is True
            assert other.done and not m.mirror._args_reg  # both tokens forgotten
            await m.close()
            assert m.disposed and (await c.machine("worker0")) is not None  # a new mirror after the close
        assert c.sync_client._closed and not c.connected

    _run(main())


def test_members_that_would_block_the_loop_say_what_to_do(daemon: Any) -> None:
    d = daemon("--hub")

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(_NoThreads())
        async with connect_async(d.addrs[0]) as c:
            plain = await c.machine("worker1")
            for call in (lambda: plain.bind_handlers({"FooState": print}), lambda: plain.bind_tracer(object()),
                         lambda: plain.on_update(print)):
                with pytest.raises(MirrorLimitError, match="mutations=True"):
                    call()
            with pytest.raises(StateError):
                await plain.when_args("Nope", {})
            m = await c.machine("worker1", mutations=True)  # the same mirror, following mutations now
            got: list[Any] = []
            m.bind_handlers({"FooState": lambda e: got.append(e.args.get("k"))})
            off = m.on_update(lambda u: got.append(u["added"]))
            assert await m.add("Foo", args={"k": 1}) == 0
            assert await _until_async(lambda: 1 in got and ["Foo"] in got, 5), got
            off()

    _run(main())


def test_history_and_on_history_are_awaited_without_a_thread(daemon: Any) -> None:
    d = daemon("--hub")

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(_NoThreads())
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker2")
            assert await m.add("Multi", args={"n": 1}) == 0
            recs = await m.history.records(limit=10)
            assert recs and recs[-1]["seq"] == await m.history.last_seq()
            assert await m.history(limit=1) == recs[-1:] and m.history.size == 0  # a new view each time
            assert await m.history.errors() == await m.errors() == []
            first: list[int] = []
            second: list[int] = []
            stop1 = await m.on_history(lambda r: first.append(r["seq"]), backlog=1)
            stop2 = await m.on_history(lambda r: second.append(r["seq"]), backlog=1)  # catches up, no follow
            assert first == second == [recs[-1]["seq"]]
            assert await m.add("Multi", args={"n": 2}) == 0
            assert await _until_async(lambda: len(first) == len(second) == 2, 5), (first, second)
            stop1()
            stop2()  # the last one: unfollow is posted, never waited for
            assert not m.mirror._hist_cbs

    _run(main())


def test_a_bad_value_in_a_burst_fails_its_own_await_as_the_sync_client_does(daemon: Any) -> None:
    d = daemon("--hub")

    async def main() -> None:
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker2")
            with pytest.raises(TypeError, match="msgpack") as alone:  # alone: packed on the loop's thread
                await m.add("Multi", args={"x": object()})
            sync = connect(d.addrs[0])
            try:
                with pytest.raises(TypeError) as sync_err:
                    sync.machine("worker2").add("Multi", args={"x": object()})
            finally:
                sync.close()
            assert str(alone.value).split(" (")[0] == str(sync_err.value).split(" (")[0]
            assert await m.add("Multi") == 0  # active: each add from here adds 2 ticks
            t0 = m.tick("Multi")
            # in a burst the sending thread packs each call: the bad ones fail their own awaits, nothing is
            # sent for them, and the others are applied
            calls = [m.add("Multi", args={"x": object() if i % 10 == 3 else i}) for i in range(200)]
            out = await asyncio.gather(*calls, return_exceptions=True)
            bad = [r for r in out if isinstance(r, BaseException)]
            assert len(bad) == 20 and all(isinstance(r, TypeError) and "msgpack" in str(r) for r in bad), bad[:3]
            assert out.count(0) == 180
            await m.sync()
            assert m.tick("Multi") == t0 + 2 * 180

    _run(main())


def test_a_cancelled_when_args_waiter_frees_its_server_side_slot(daemon: Any) -> None:
    from transport.server.dispatch import MAX_WHEN_ARGS

    d = daemon("--hub")
    n = MAX_WHEN_ARGS + 50  # more than the server keeps per session: each cancel must reach it

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(_NoThreads())
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker1")
            for i in range(n):
                (await m.when_args("Foo", {"n": i})).cancel()  # posted, never waited for
            w = await m.when_args("Foo", {"n": -1})
            assert await m.add("Foo", args={"n": -1}) == 0
            assert await asyncio.wait_for(w, 5) is True

    _run(main())
    with connect(d.addrs[0]) as sc:  # the sync mirror posts its cancels the same way
        sm = sc.machine("worker2")
        for i in range(n):
            sm.when_args("Foo", {"n": i}).cancel()
        w = sm.when_args("Foo", {"n": -1})
        assert sm.add("Foo", args={"n": -1}) == 0
        assert w.wait(5) is True


def test_async_mutate_many_gives_a_mirror_s_handlers_each_mutation_s_args(daemon: Any) -> None:
    # as the sync mutate_many: the replies carry each mutation's record to the mirror this client holds
    d = daemon("--hub")

    async def main() -> list[Any]:
        async with connect_async(d.addrs[0]) as c:
            m = await c.machine("worker0", mutations=True)
            got: list[Any] = []
            m.bind_handlers({"MultiState": lambda e: got.append(e.args.get("n"))})
            assert await c.mutate_many([("worker0", "add", ["Multi"], {"n": i}) for i in range(3)]) == [0, 0, 0]
            assert m.tick("Multi") == 5
            return got

    assert _run(main()) == [0, 1, 2]
