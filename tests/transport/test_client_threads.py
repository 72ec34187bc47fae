"""One Client shared by several threads, against a daemon process: mirrors, calls and batches stay correct."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from transport import RemoteMachine, connect


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
