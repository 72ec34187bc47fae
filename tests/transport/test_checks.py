"""Dry runs (can_add / can_remove) over the wire: they never hold up the endpoint's other clients."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from tr_util import RawPeer, until

from transport import TransportError, connect


def test_dry_runs_on_a_busy_machine_do_not_stall_other_clients(daemon) -> None:
    """can_add ran on the endpoint's I/O thread and waited up to 1 s while the machine ran a handler on another
    thread: every other client of the endpoint waited too (4 dry runs = 4 s)."""
    d = daemon("--hub", "--slow-foo", "4")
    addr = d.addrs[0]
    busy = threading.Thread(target=lambda: d.cmd("add worker0 Foo", timeout=15))
    peer = RawPeer(addr)
    try:
        with connect(addr) as c:
            names = None

            def foo_running() -> bool:
                nonlocal names
                for info in c.machines():
                    if info["id"] == "worker0":
                        names = info["states"]
                        return bool(info["time"][names.index("Foo")] & 1)
                return False

            busy.start()
            assert until(foo_running, timeout=10)  # FooState sleeps on the daemon's main thread
            for seq in range(1, 5):
                peer.send("can", seq, "worker0", {"s": ["Bar"], "a": {"x": seq}})
            t0 = time.monotonic()
            c.machines()  # queued behind the 4 dry runs
            waited = time.monotonic() - t0
            assert waited < 0.5, f"another client waited {waited:.2f}s"
            replies: dict[int, Any] = {}  # in any order: each ends on its own worker
            deadline = time.monotonic() + 10
            while len(replies) < 4 and time.monotonic() < deadline:
                msg = peer.recv(0.5)
                if msg is not None and msg[0] in ("ok", "err"):
                    replies[msg[1]] = msg
            assert sorted(replies) == [1, 2, 3, 4], replies
            # issue 12 item 4: a dry run that timed out is its own error, not a "canceled" like a refusal
            assert all(r[0] == "err" and r[3]["code"] == "busy" for r in replies.values()), replies
            with pytest.raises(TransportError) as ei:
                c.machine("worker0").can_add("Bar")
            assert ei.value.code == "busy"
            assert c.machine("worker1").can_add("Bar") == 0      # another machine answers at once
    finally:
        peer.close()
        busy.join(15)
