"""One Client shared by several threads, against a daemon process: mirrors, calls and batches stay correct."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from machine import Result
from transport import RemoteMachine, TransportError, connect

NAMES = ["Exception", "ErrOnClient", "Foo", "Bar", "Baz", "Start", "Ready", "Multi"]


def _in_threads(n: int, fn: Callable[[int], Any], timeout: float = 20.0) -> list[Any]:
    """Run ``fn(i)`` on ``n`` threads released together; their results (or exceptions), in order."""
    out: list[Any] = [None] * n
    gate = threading.Barrier(n, timeout=timeout)

    def run(i: int) -> None:
        try:
            gate.wait()
            out[i] = fn(i)
        except BaseException as exc:  # handed to the test, which raises it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a thread did not finish"
    for r in out:
        if isinstance(r, BaseException):
            raise r
    return out


def test_concurrent_machine_calls_share_one_mirror_that_gets_pushes_and_closes(daemon) -> None:
    d = daemon("--hub")
    c = connect(d.addrs[0])
    try:
        for round_ in range(5):  # the race needs a few tries to show on a busy box
            mach_id = f"worker{round_ % 3}"
            got: list[RemoteMachine] = _in_threads(8, lambda i, m=mach_id: c.machine(m, mutations=i % 2 == 1))
            assert len({id(rm) for rm in got}) == 1, f"round {round_}: {len({id(rm) for rm in got})} mirrors"
            rm = got[0]
            w = rm.when_ticks("Multi", 1)
            d.cmd(f"add {mach_id} Multi")
            assert w.wait(5), "the mirror did not get the push"
            rm.close()
        # a mirror made by racing threads is disposed with its client: its waiters end
        got = _in_threads(8, lambda i: c.machine("worker0"))
        waiters = [rm.when("Baz") for rm in got]
    finally:
        c.close()
    assert all(rm.disposed for rm in got)
    assert all(w.cancelled for w in waiters)


def test_a_batch_and_calls_from_other_threads_are_each_applied_once(daemon) -> None:
    """Thread 1 sends a batch of 20,000 adds while thread 2 lists the machines in a loop and thread 3 adds
    through a mirror, all on one Client: every add is applied exactly once and reported as such (a seq sent
    after a later one, far behind it, was taken by the server for a retry: thousands came back as 'duplicate',
    never applied), and the other threads' calls are answered while the batch runs."""
    d = daemon("--hub")
    n = 20_000
    with connect(d.addrs[0], timeout=30) as c:
        rm = c.machine("worker1")
        done = threading.Event()
        counts = [0, 0]

        def work(i: int) -> Any:
            if i == 0:
                try:
                    return c.mutate_many([("worker0", "add", ["Multi"], None)] * n)
                finally:
                    done.set()
            while not done.is_set():
                if i == 1:
                    assert len(c.machines()) == 3
                else:
                    assert rm.add("Multi") == Result.EXECUTED
                counts[i - 1] += 1
            return None

        results = _in_threads(3, work, timeout=120)[0]
        assert rm.tick("Multi") == 2 * counts[1] - 1  # the mirror saw each of its own adds
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} of {n} failed, e.g. {errors[0]!r}"
    assert all(r == Result.EXECUTED for r in results)
    ticks = [int(x) for x in d.cmd("time worker0").split()[1:]]
    assert ticks[NAMES.index("Multi")] == 2 * n - 1  # a multi state: +1 to enter, +2 for each add after
    ticks = [int(x) for x in d.cmd("time worker1").split()[1:]]
    assert ticks[NAMES.index("Multi")] == 2 * counts[1] - 1
    assert counts[0] > 1 and counts[1] > 1, counts  # not only before and after the batch


def test_calls_and_notifications_from_other_threads_do_not_wait_for_a_long_batch(daemon) -> None:
    """A batch that takes longer than the client's timeout holds the socket all along: the other threads'
    requests, notifications (``add_ns``) included, are sent by the batch's thread and answered meanwhile, not
    failed with 'timeout' after waiting for the socket."""
    d = daemon("--hub")
    n = 120_000
    with connect(d.addrs[0], timeout=1.5) as c:
        rm = c.machine("worker1")
        done = threading.Event()
        sent = [0]
        took = [0.0]

        def work(i: int) -> Any:
            if i == 0:
                try:
                    t = time.monotonic()
                    out = c.mutate_many([("worker0", "add", ["Multi"], None)] * n, timeout=300)
                    took[0] = time.monotonic() - t
                    return out
                finally:
                    done.set()
            while not done.is_set():
                rm.add_ns("Multi")
                sent[0] += 1
                if sent[0] % 10 == 0:  # a sync waits for every request queued before it: not too many
                    rm.sync()
            return None

        results = _in_threads(2, work, timeout=400)[0]
        rm.sync()
        assert rm.tick("Multi") == 2 * sent[0] - 1
    assert not [r for r in results if isinstance(r, BaseException)]
    ticks = [int(x) for x in d.cmd("time worker0").split()[1:]]
    assert ticks[NAMES.index("Multi")] == 2 * n - 1
    print(f"batch {took[0]:.1f}s, {sent[0]} add_ns meanwhile")


def test_a_callback_that_closes_its_client_in_the_middle_of_a_batch_ends_it_with_closed(daemon) -> None:
    """A mirror's update callback closes the client while a batch runs on the same thread (the batch's replies
    carry the mirror's updates): the batch ends at once with TransportError('closed'), not a ZeroMQ error."""
    d = daemon("--hub")
    c = connect(d.addrs[0])
    try:
        rm = c.machine("worker0")
        rm.on_update(lambda update: c.close())
        with pytest.raises(TransportError) as exc:
            c.mutate_many([("worker0", "add", ["Multi"], None)] * 5000)
        assert exc.value.code == "closed"
        assert rm.disposed
    finally:
        c.close()
