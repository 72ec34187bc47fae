"""A busy machine never blocks the daemon: a slow handler on one machine delays only that machine's requests;
the other machines' clients, and reads of the slow machine itself, are answered meanwhile (issue 19)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tr_util import Daemon, RawPeer

from transport import connect

ISO_DAEMON = Path(__file__).with_name("iso_daemon.py")


class IsoDaemon(Daemon):
    """iso_daemon.py in a subprocess: machines m0..m<N-1> on one endpoint, m0 slow."""

    def __init__(self, *args: str) -> None:
        super().__init__(*args, script=ISO_DAEMON, endpoints=1)
        self.addr = self.addrs[0]

    def log(self, mach: str) -> list[list[Any]]:
        out = self.cmd(f"log {mach}")
        assert out.startswith("LOG "), out
        return list(json.loads(out[4:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # its lanes may hold minutes of slow work: no graceful stop needed
        self.proc.wait(5)


@pytest.fixture
def iso() -> Iterator[Callable[..., IsoDaemon]]:
    started: list[IsoDaemon] = []

    def start(*args: str) -> IsoDaemon:
        d = IsoDaemon(*args)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


class SlowLoop:
    """One client mutating the slow machine m0 in a loop, on a thread of its own."""

    def __init__(self, addr: str, args: dict[str, Any] | None = None) -> None:
        self.client = connect(addr, timeout=10)
        self.stop = threading.Event()
        self.first = threading.Event()  # its first transition is done
        self.done = 0
        self.args = args
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        rm = self.client.machine("m0")
        while not self.stop.is_set():
            rm.add("Multi", args=self.args)
            self.done += 1
            self.first.set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.client.close()


def test_a_slow_machine_does_not_stall_the_other_machines_nor_reads(iso) -> None:
    """100 machines; m0's handler sleeps 800 ms on every transition and one client mutates it in a loop. Before,
    the endpoint ran each transition on its I/O thread: every other client waited up to 800 ms per request."""
    d = iso("--machines", "100", "--slow", "0.8")
    slow = SlowLoop(d.addr)
    try:
        with connect(d.addr) as c:
            assert slow.first.wait(10)  # the first slow transition ran inline: from now on m0 counts as slow
            rm = c.machine("m5")
            lat = []
            deadline = time.monotonic() + 3.0  # several of m0's transitions
            while time.monotonic() < deadline or len(lat) < 100:
                t0 = time.monotonic()
                rm.add("Multi")
                lat.append(time.monotonic() - t0)
            lat.sort()
            p99 = lat[int(len(lat) * 0.99)]
            assert p99 < 0.05, f"another machine's add: p99 {p99 * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms"

            t0 = time.monotonic()
            machs = c.machines()
            waited = time.monotonic() - t0
            assert len(machs) == 100 and waited < 0.4, f"machines() took {waited:.2f}s"

            # the slow machine itself: a mirror, its resync and its history, while its handler sleeps
            slow_rm = c.machine("m0")
            for _ in range(5):
                t0 = time.monotonic()
                slow_rm.sync()
                records = slow_rm.history.records(limit=5)
                info = slow_rm.info()
                waited = time.monotonic() - t0
                assert waited < 0.4, f"sync + history + info of the slow machine took {waited:.2f}s"
                assert records and info["id"] == "m0"
            assert slow_rm.time()[0] >= 1
    finally:
        slow.close()
    assert slow.done >= 2


def test_order_per_client_is_kept_on_a_machine_that_goes_slow_and_back(iso) -> None:
    """The issue's size: 8 clients x 1,000 pipelined adds on m1, whose handler is slow now and then (so its
    requests move between the inline path, a demoted inline run, and its lane), while m0 is slow throughout:
    each client's order kept, none lost or doubled, the tick exact."""
    n_clients, n = 8, 1000
    d = iso("--machines", "3", "--slow", "0.2")
    slow = SlowLoop(d.addr)
    clients = [connect(d.addr, timeout=30) for _ in range(n_clients)]
    results: dict[int, list[Any]] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        # every 100th add sleeps 10 ms in the handler: m1 counts as slow for a while after it
        ops: list[tuple[str, str, list[str], dict[str, Any] | None]] = [
            ("m1", "add", ["Multi"], {"c": i, "n": k, **({"sleep": 0.01} if k % 100 == 7 else {})})
            for k in range(n)]
        try:
            out: list[Any] = []
            for k in range(0, n, 100):  # batches: the next is sent while m0 and other clients' work runs
                out += clients[i].mutate_many(ops[k:k + 100])
            results[i] = out
        except BaseException as exc:
            errors.append(exc)

    try:
        assert slow.first.wait(10)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        for i in range(n_clients):
            assert results[i] == [0] * n, (i, [r for r in results[i] if r != 0][:5])
    finally:
        slow.close()
        for c in clients:
            c.close()
    log = d.log("m1")
    assert len(log) == n_clients * n
    for i in range(n_clients):
        assert [k for c, k in log if c == i] == list(range(n)), f"client {i} out of order or lost/doubled"
    ticks = d.cmd("time m1").split()[1:]
    assert int(ticks[0]) == 2 * n_clients * n - 1  # Multi: +1 on the first add, +2 on each later one
    assert int(d.cmd("demoted").split()[1]) >= 2  # m0's first run, and m1's slow ones met while it was quick


def test_a_machine_with_too_many_waiting_requests_answers_limit_and_others_go_on(iso) -> None:
    """A lane holds at most 1000 requests: past that, m0's requests answer limit; m1's are answered as usual."""
    d = iso("--machines", "3", "--slow", "0.3")
    peer = RawPeer(d.addr)
    try:
        peer.send("add", 1, "m0", {"s": ["Multi"]})
        r = peer.reply(1, 5)  # inline: m0 is not known to be slow yet
        assert r is not None and r[0] == "ok", r
        n = 1100
        for seq in range(2, n + 2):
            peer.send("add", seq, "m0", {"s": ["Multi"]})
        peer.send("add", n + 2, "m1", {"s": ["Multi"]})
        limits = 0
        other = None
        deadline = time.monotonic() + 10
        while other is None and time.monotonic() < deadline:
            msg = peer.recv(0.5)
            if msg is None or msg[0] not in ("ok", "err"):
                continue
            if msg[1] == n + 2:
                other = msg
            elif msg[0] == "err":
                assert msg[3]["code"] == "limit", msg
                limits += 1
        assert other is not None and other[0] == "ok", "m1's add waited behind m0's queue"
        assert limits >= n - 1000 - 5, limits
        with connect(d.addr) as c:  # another client of another machine: unaffected
            assert c.machine("m2").add("Foo") == 0
    finally:
        peer.close()


def test_sync_answers_after_the_clients_own_requests_still_on_the_lane(iso) -> None:
    """A sync returns "after every earlier request": pipelined add_ns waiting on the machine's lane are applied
    before this client's sync is answered (another client's reads are not held up by them). More add_ns than
    MAX_LANE wait there at once: none is refused (a notification has no reply to say limit)."""
    d = iso("--machines", "2", "--slow", "0")
    with connect(d.addr, timeout=10) as c:
        rm = c.machine("m1")
        rm.add("Multi", args={"sleep": 0.02})  # a slow transition: m1's next requests go to its lane
        before = rm.tick("Multi")
        for n in range(1500):
            rm.add_ns("Multi", args={"c": 0, "n": n, **({"sleep": 0.02} if n % 100 == 0 else {})})
        rm.sync()
        assert rm.tick("Multi") == before + 2 * 1500
    assert [n for c_, n in d.log("m1") if c_ == 0] == list(range(1500))


def test_the_first_slow_transition_of_a_fresh_machine_does_not_stall_the_endpoint(iso) -> None:
    """m0 is fresh (idle, never slow), so its first request runs inline on the I/O thread; its handler sleeps
    800 ms. Before, that froze every other client for the whole 800 ms. Now the watchdog hands the sockets to a
    new I/O thread after SLOW: other machines' adds, machines() and a read of m0 itself answer meanwhile, and the
    slow request's reply still arrives exactly once, before the next request of its client for m0."""
    d = iso("--machines", "10", "--slow", "0.8")
    peer = RawPeer(d.addr)
    with connect(d.addr) as c:
        other = c.machine("m5")
        other.add("Foo")  # connected and warm before the slow run starts
        try:
            t_sent = time.monotonic()
            peer.send("add", 1, "m0", {"s": ["Multi"], "a": {"c": 0, "n": 1}})
            peer.send("add", 2, "m0", {"s": ["Multi"], "a": {"c": 0, "n": 2}})
            worst, ops, retried = 0.0, 0, False
            replies: list[list[Any]] = []
            while not replies and time.monotonic() - t_sent < 5:
                t0 = time.monotonic()
                other.add("Multi")
                assert len(c.machines()) == 10
                worst = max(worst, time.monotonic() - t0)
                ops += 1
                if not retried and time.monotonic() - t_sent > 0.2:
                    peer.send("add", 1, "m0", {"s": ["Multi"], "a": {"c": 0, "n": 1}})  # a retry: not applied
                    retried = True
                msg = peer.recv(0.001)
                if msg is not None:
                    replies.append(msg)
            t0 = time.monotonic()
            assert c.machine("m0").time() is not None  # the slow machine itself, read while it may still sleep
            worst = max(worst, time.monotonic() - t0)
            assert worst < 0.2, f"another client waited {worst * 1000:.0f} ms during the slow inline transition"
            assert replies, "the slow request was never answered"
            assert time.monotonic() - t_sent > 0.7 and ops >= 5, (ops, replies)
            # the first reply is seq 1's; seq 2 (m0 slow again) follows; nothing else comes
            deadline = time.monotonic() + 5
            while len(replies) < 2 and time.monotonic() < deadline:
                msg = peer.recv(0.5)
                if msg is not None:
                    replies.append(msg)
            extra = peer.recv(0.3)
            assert extra is None, extra
            assert [(r[0], r[1]) for r in replies] == [("ok", 1), ("ok", 2)], replies
            assert replies[0][3][0] == 0 and replies[1][3][0] == 0  # both executed
        finally:
            peer.close()
    assert d.log("m0") == [[0, 1], [0, 2]]


def test_when_args_on_a_busy_lane_keep_the_session_limit_exactly(iso) -> None:
    """when_args requests for a machine with a mutation on its lane are registered there, later; they used to be
    counted only once registered, so a burst passed MAX_WHEN_ARGS (266 of 266 registered), and a cancel sent
    while one still waited was lost. Now they count from the moment they are accepted."""
    from transport.server.dispatch import MAX_WHEN_ARGS

    d = iso("--machines", "2", "--slow", "0.3")
    peer = RawPeer(d.addr)
    try:
        r = peer.request("add", 1, "m0", {"s": ["Multi"]}, timeout=5)  # slow: m0's next requests take its lane
        assert r is not None and r[0] == "ok", r
        peer.send("add", 2, "m0", {"s": ["Multi"]})  # on the lane for 0.3 s: the when_args below wait behind it
        extra = 10
        for k in range(MAX_WHEN_ARGS + extra):
            peer.send("when_args", 3 + k, "m0", {"state": "Foo", "args": {"k": k}, "token": k})
            if k == 0:
                peer.send("when_args_cancel", 0, "m0", {"token": 0})  # while it still waits on the lane
        peer.send("when_args", 3 + MAX_WHEN_ARGS + extra, "m0", {"state": "Foo", "args": {}, "token": 1})
        codes: dict[int, str] = {}
        last = 3 + MAX_WHEN_ARGS + extra
        deadline = time.monotonic() + 10
        while len(codes) < last - 2 and time.monotonic() < deadline:
            msg = peer.recv(0.5)
            if msg is not None and msg[0] in ("ok", "err") and msg[1] >= 3:
                codes[msg[1]] = "ok" if msg[0] == "ok" else msg[3]["code"]
        assert len(codes) == last - 2, len(codes)
        assert codes.pop(last) == "invalid_params"  # token 1 is taken (pending): refused at once
        assert list(codes.values()).count("limit") == extra - 1, codes  # token 0 was cancelled: one more fits
        assert list(codes.values()).count("ok") == MAX_WHEN_ARGS + 1
        # registered now: exactly MAX_WHEN_ARGS (token 0's ended when it was cancelled)
        r = peer.request("when_args", last + 1, "m0", {"state": "Foo", "args": {}, "token": "x"}, timeout=5)
        assert r is not None and r[0] == "err" and r[3]["code"] == "limit", r
        peer.send("when_args_cancel", 0, "m0", {"token": 5})
        r = peer.request("when_args", last + 2, "m0", {"state": "Foo", "args": {}, "token": "x"}, timeout=5)
        assert r is not None and r[0] == "ok", r
    finally:
        peer.close()


def test_a_handler_that_computes_on_the_io_thread_is_left_to_it_too(iso) -> None:
    """The same with a handler busy in Python for 0.6 s (it holds the GIL, released only at the interpreter's
    switch interval): the watchdog still gets its turn, and the new I/O thread shares the interpreter with it."""
    d = iso("--machines", "3", "--slow", "0")
    peer = RawPeer(d.addr)
    with connect(d.addr) as c:
        other = c.machine("m2")
        other.add("Foo")
        try:
            t_sent = time.monotonic()
            peer.send("add", 1, "m1", {"s": ["Multi"], "a": {"c": 0, "n": 1, "spin": 0.6}})
            worst, ops, reply = 0.0, 0, None
            while reply is None and time.monotonic() - t_sent < 10:
                t0 = time.monotonic()
                other.add("Multi")
                worst = max(worst, time.monotonic() - t0)
                ops += 1
                reply = peer.recv(0.001)
            assert reply is not None and (reply[0], reply[1]) == ("ok", 1), reply
            assert time.monotonic() - t_sent > 0.5 and ops >= 5, ops
            assert worst < 0.3, f"another client waited {worst * 1000:.0f} ms while a handler computed for 600 ms"
        finally:
            peer.close()
    assert d.log("m1") == [[0, 1]]
