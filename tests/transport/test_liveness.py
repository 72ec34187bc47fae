"""Client and server agree on liveness: a daemon process stopped (SIGSTOP) and continued, sessions it forgot."""

from __future__ import annotations

import os
import signal
import time

from tr_util import RawPeer, freeze, until

from transport import connect
from transport import protocol as P


def _stall(pid: int, seconds: float) -> None:
    """Freeze a process for ``seconds`` (a GC pause, a VM freeze), then let it go on. The time counts from the
    moment the process is seen stopped: a SIGSTOP is delivered asynchronously."""
    freeze(pid)
    try:
        time.sleep(seconds)  # the length of the fault itself, not a wait for anything
    finally:
        os.kill(pid, signal.SIGCONT)


def test_mirror_recovers_after_the_daemon_forgot_its_idle_session(daemon, monkeypatch) -> None:
    """Stopped a little past its session timeout, the daemon drops the client's session when it goes on, while
    the client, whose last exchange came right before the stop, has not yet missed PEER_TIMEOUT of pongs. The
    client must notice on its next heartbeat, report it, and subscribe again: later pushes reach the mirror.
    The timings are scaled down (the daemon forgets a session after 1 s, the client pings every 0.25 s and counts
    the link gone after the usual 3.5 s): the same scenario as 3.6 s stops against the real 3.5 s, in a third of
    the time."""
    monkeypatch.setattr(P, "HEARTBEAT", 0.25)
    d = daemon("--hub", "--peer-timeout", "1.0")
    with connect(d.addrs[0]) as c:
        status: list[bool] = []
        c.on_status(status.append)
        rm = c.machine("worker0")
        # a few rounds: whether the daemon reads the pings queued meanwhile before it looks at idle sessions is
        # up to its scheduling; the code before the fix went stale in most rounds
        for round_ in range(3):
            c.machines()  # the last exchange, right before the stop: both sides' clocks of the link start here
            _stall(d.proc.pid, 1.2)
            w = rm.when_ticks("Multi", 1)
            assert d.cmd("add worker0 Multi").startswith("OK")
            assert w.wait(10), f"round {round_}: the mirror went stale (status changes: {status})"
            assert rm.time() == [int(x) for x in d.cmd("time worker0").split()[1:]]
            assert c.connected
        # whenever the link was reported down, it was reported up again
        assert status == [False, True] * (len(status) // 2)


def test_a_client_whose_session_the_server_dropped_finds_out_at_its_next_heartbeat(daemon) -> None:
    """The daemon forgets the session (here: a peer taking over the client's identity says bye, as an expiry
    would drop it) while the client's link never goes quiet: its next pong names another session, so the client
    reports the link down and up again and subscribes its mirrors again."""
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        status: list[bool] = []
        c.on_status(status.append)
        rm0, rm1 = c.machine("worker0"), c.machine("worker1")
        peer = RawPeer(d.addrs[0], identity=c.id.encode())
        try:
            peer.send("bye", 0, None, {})
            assert peer.request("ping", 1, None, {}, timeout=5) is not None  # after the bye: it was handled
        finally:
            peer.close()
        assert until(lambda: status == [False, True], timeout=10), status
        for rm, mach_id in ((rm0, "worker0"), (rm1, "worker1")):
            w = rm.when_ticks("Multi", 1)
            assert d.cmd(f"add {mach_id} Multi").startswith("OK")
            assert w.wait(5), f"{mach_id}: the mirror went stale"



def test_requests_without_a_waiting_caller_are_forgotten_once_overdue(daemon) -> None:
    """Resyncs (and resubscriptions) a mirror sends on its own, on a link that dies before they are answered, must
    not stay pending for good: one per push with a bad checksum, per reconnect, for the life of the client."""
    d = daemon("--hub")
    with connect(d.addrs[0], timeout=1.0) as c:
        rm = c.machine("worker0")
        freeze(d.proc.pid)  # seen stopped: none of the resyncs below can be answered
        try:
            for _ in range(50):
                rm._resync()  # what a push failing its checksum makes a mirror do
            assert len(c._pending) >= 50
        finally:
            d.kill()  # never answered
        assert until(lambda: len(c._pending) <= 2, timeout=10), len(c._pending)
