"""Pipelined ``add_ns`` travel in batches (``ns_many``): applied in order, exactly once, each as its own ``add_ns``
would be; a malformed batch changes nothing; a batch cut by a slow transition (the watchdog's demotion) goes on
in order; mutations made while the server is down wait in the client and are applied once it is back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from tr_util import RawPeer, free_port, until

from machine import Machine, State
from transport import Endpoint, connect, expose
from transport.server.leader import DOG

SCHEMA = {"Multi": State(multi=True), "Foo": State()}


class Recorder:
    """Records each Multi transition's ``n`` arg; sleeps ``sleep`` s when asked to (a slow transition)."""

    def __init__(self) -> None:
        self.log: list[Any] = []

    def MultiState(self, e: Any) -> None:
        self.log.append(e.args.get("n"))
        if e.args.get("sleep"):
            time.sleep(e.args["sleep"])


@pytest.fixture
def served2() -> Iterator[tuple[Machine, Machine, Recorder, Recorder, Endpoint]]:
    ra, rb = Recorder(), Recorder()
    a = Machine(SCHEMA, id="a", handlers=ra, handler_timeout=None)
    b = Machine(SCHEMA, id="b", handlers=rb, handler_timeout=None)
    ep = expose([a, b])
    yield a, b, ra, rb, ep
    ep.stop()


def _hello(raw: RawPeer) -> None:
    assert raw.request("hello", 1, None, {"proto": 1}) is not None


def test_a_burst_of_add_ns_is_batched_and_applied_in_order_once_with_the_client_s_other_calls(served2) -> None:
    a, b, ra, rb, ep = served2
    with connect(ep.address) as c:
        rm, rb_m = c.machine("a"), c.machine("b")
        n = 3000
        for i in range(n):
            if i % 250 == 249:
                rm.add("Multi", args={"n": i})  # a call with a reply: sent after the add_ns queued before it
            elif i % 7 == 0:
                rb_m.add_ns("Multi", args={"n": i})  # the other machine, in the same batches
            else:
                rm.add_ns("Multi", args={"n": i})
        rm.sync()
        rb_m.sync()
        expect_b = [i for i in range(n) if i % 7 == 0 and i % 250 != 249]
        assert rb.log == expect_b
        assert ra.log == [i for i in range(n) if i not in set(expect_b)]
        assert rm.tick("Multi") == a.tick("Multi") == 2 * len(ra.log) - 1
    # they went as batches, not one message each
    assert 0 < ep._loop.kinds.get("ns_many", 0) < n // 10
    assert ep._loop.kinds.get("add_ns", 0) < n // 10


def test_threads_add_ns_at_once_each_thread_s_order_kept(served2) -> None:
    a, _, ra, _, ep = served2
    per, threads = 2000, 4
    with connect(ep.address) as c:
        rm = c.machine("a")

        def work(t: int) -> None:
            for i in range(per):
                rm.add_ns("Multi", args={"n": [t, i]})
                if i % 500 == 0:
                    rm.sync()

        ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        rm.sync()
        assert len(ra.log) == per * threads
        for t in range(threads):
            assert [i for tt, i in ra.log if tt == t] == list(range(per))
        assert a.tick("Multi") == 2 * per * threads - 1


def test_a_malformed_batch_is_refused_whole_and_changes_nothing(served2) -> None:
    a, b, ra, _, ep = served2
    raw = RawPeer(ep.address)
    try:
        _hello(raw)
        before = a.time()
        bad_batches: list[Any] = [
            [["a", ["Multi"]], ["a", "Multi"]],               # states not a list
            [["a", ["Multi"]], ["a"]],                         # too short
            [["a", ["Multi"]], ["a", ["Multi"], [1]]],         # args not a map
            [["a", ["Multi"]], [7, ["Multi"]]],                # mach not a string
            [["a", ["Multi"]], ["a", ["Multi"], {}, "x"]],     # too long
            [["a", ["Multi"]], "a"],                           # not an entry
            {"s": ["Multi"]},                                  # not a list
            [["a", ["Multi"]], ["a", ["Multi"], {"x": "y" * (1024 * 1024 + 10)}]],  # args past MAX_ARGS_BYTES
            [["a", ["Multi"]]] * 1025,                          # past MAX_NS_MANY: it would hold the I/O thread
        ]
        for body in bad_batches:
            raw.send("ns_many", 0, None, body)
            err = raw.reply(0)
            assert err is not None and err[0] == "err", body
            assert err[3]["code"] in ("invalid_params", "limit"), err
        # a batch with a seq: a notification only
        err = raw.request("ns_many", 5, None, [["a", ["Multi"]]])
        assert err is not None and err[0] == "err" and err[3]["code"] == "invalid_params"
        assert raw.request("sync", 6, "a", {}) is not None
        assert a.time() == before and ra.log == []
        # the unknown machine and the unknown state fail alone, as their own add_ns would; the rest is applied
        raw.send("ns_many", 0, None, [["a", ["Multi"], {"n": 1}], ["zz", ["Multi"]], ["a", ["Nope"]],
                                      ["a", ["Multi"], {"n": 2}]])
        errs = [raw.reply(0), raw.reply(0)]
        assert sorted(e[3]["code"] for e in errs if e) == ["unknown_machine", "unknown_state"]
        assert raw.request("sync", 7, "a", {}) is not None
        assert ra.log == [1, 2]
    finally:
        raw.close()


def test_a_batch_cut_by_a_slow_transition_goes_on_in_order_exactly_once(served2) -> None:
    """The 4th mutation sleeps past the watchdog's SLOW: its run is demoted and a new I/O thread takes over; the
    rest of the batch (both machines') is applied after it, in order, once; a sync answers after all of it."""
    a, b, ra, rb, ep = served2
    raw = RawPeer(ep.address)
    demoted = DOG.demoted
    try:
        _hello(raw)
        batch = []
        for i in range(40):
            args: dict[str, Any] = {"n": i, "sleep": 0.05} if i in (3, 20) else {"n": i}
            batch.append(["b" if i % 5 == 4 else "a", ["Multi"], args])
        raw.send("ns_many", 0, None, batch)
        assert raw.request("sync", 2, "a", {}, timeout=10) is not None
        assert raw.request("sync", 3, "b", {}, timeout=10) is not None
        assert until(lambda: len(ra.log) + len(rb.log) == 40, timeout=5)
        assert ra.log == [i for i in range(40) if i % 5 != 4]
        assert rb.log == [i for i in range(40) if i % 5 == 4]
        assert a.tick("Multi") == 2 * len(ra.log) - 1 and b.tick("Multi") == 2 * len(rb.log) - 1
        assert DOG.demoted > demoted  # the batch was cut: the case this test is about
    finally:
        raw.close()


def test_add_ns_made_while_the_server_is_down_are_applied_once_when_it_is_back(daemon) -> None:
    addr = f"127.0.0.1:{free_port()}"
    d = daemon("--addr", addr, "--hub")
    c = connect(addr, timeout=3.0)
    statuses: list[bool] = []
    c.on_status(statuses.append)
    try:
        rm = c.machine("worker0")
        for _ in range(10):
            rm.add_ns("Multi")
        rm.sync()
        d.kill()
        assert until(lambda: statuses == [False], timeout=6), "the client did not notice the drop"
        for _ in range(200):
            rm.add_ns("Multi")  # nobody there: queued in the client, not raised, not lost
        d2 = daemon("--addr", addr, "--hub")
        assert until(lambda: statuses == [False, True], timeout=10), "the client did not reconnect"
        rm.sync()
        assert d2.cmd("time worker0").split()[-1] == str(2 * 200 - 1)  # each applied once, on the new daemon
        assert rm.tick("Multi") == 2 * 200 - 1
    finally:
        c.close()


def test_one_add_ns_the_server_refuses_costs_no_other_its_place_in_the_batch(served2) -> None:
    """A batch with a malformed entry is refused whole, so an add_ns the server would refuse (args with a map key
    that is not a string, args past MAX_ARGS_BYTES) goes alone, as before: it fails, the burst around it does
    not."""
    a, _, ra, _, ep = served2
    with connect(ep.address) as c:
        rm = c.machine("a")
        for i in range(600):
            if i == 100:
                rm.add_ns("Multi", args={"n": -1, "bad": {1: "an int key"}})
            elif i == 300:
                rm.add_ns("Multi", args={"n": -2, "big": "x" * (1024 * 1024 + 10)})
            else:
                rm.add_ns("Multi", args={"n": i})
        rm.sync()
        assert ra.log == [i for i in range(600) if i not in (100, 300)]
        assert a.tick("Multi") == 2 * 598 - 1


class _OlderServer:
    """A proxy in front of a real endpoint that speaks as a server from before ``ns_many`` did: its hello does not
    offer batches, and it answers a batch with the error an unknown kind gets (nothing of it applied)."""

    def __init__(self, upstream: str) -> None:
        import zmq

        ctx = zmq.Context.instance()
        self.front = ctx.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        port = self.front.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.back = ctx.socket(zmq.DEALER)
        self.back.setsockopt(zmq.LINGER, 0)
        self.back.connect(upstream)
        self.batches = 0
        self.who: bytes | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import msgpack
        import zmq

        from transport.protocol import pack

        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        while not self.stop.is_set():
            for sock, _ in poller.poll(20):
                if sock is self.front:
                    who, data = self.front.recv_multipart()
                    self.who = who
                    kind, seq, mach, _body = msgpack.unpackb(data, raw=False, strict_map_key=False)
                    if kind == "ns_many":
                        self.batches += 1
                        self.front.send_multipart([who, pack("err", seq, mach, {
                            "code": "invalid_params", "msg": "unknown message kind: ns_many"})])
                        continue
                    self.back.send(data)
                else:
                    data = self.back.recv()
                    msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
                    if msg[0] == "ok" and isinstance(msg[3], dict) and "session" in msg[3]:
                        msg[3].pop("ns_many", None)  # the hello of a server that has no batches
                        data = pack(*msg)
                    assert self.who is not None
                    self.front.send_multipart([self.who, data])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.front.close()
        self.back.close()


def test_add_ns_to_a_server_without_batches_go_one_a_frame_and_none_is_lost(served2) -> None:
    _a, _b, ra, _rb, ep = served2
    old = _OlderServer(ep.address)
    try:
        with connect(old.address) as c:
            rm = c.machine("a")
            n = 300
            for i in range(n):
                rm.add_ns("Multi", args={"n": i})
            rm.sync()
            until(lambda: len(ra.log) == n, timeout=10)
            assert ra.log == list(range(n))  # all of them, in order, once
        assert old.batches == 0
    finally:
        old.close()


def test_batches_queued_in_an_outage_reach_a_server_restarted_without_batches_one_a_frame(daemon) -> None:
    """add_ns batches queued while the link was down went out as ns_many before the client's next hello: a server
    restarted as one from before batches refused them whole (up to 512 mutations lost)."""
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    d = daemon("--hub", "--addr", addr)
    with connect(addr, timeout=5) as c:
        rm = c.machine("worker0")
        rm.add_ns("Multi")
        rm.sync()
        assert rm.tick("Multi") == 1 and c._ns_ok
        d.kill()

        def link_gone() -> bool:  # with IMMEDIATE, a DEALER can send again only once connected to a peer
            with c._io:
                return not c._sock.getsockopt(zmq.EVENTS) & zmq.POLLOUT

        assert until(link_gone, timeout=10)
        n = 200  # (at most NS_AHEAD batches wait: the first add_ns alone, then one of up to 256)
        for _ in range(n):
            rm.add_ns("Multi")  # queued in batches: nothing to send them to
        assert c._ns_q
        older = daemon("--hub", "--addr", addr, "--no-batches")
        assert until(lambda: not c._ns_q, timeout=15)  # the batches went, after the new server's hello
        assert until(lambda: older.cmd("time worker0").split()[1 + rm.index("Multi")] == str(2 * n - 1), timeout=10)
        assert until(lambda: c.connected, timeout=10)
        rm.sync()
        assert rm.tick("Multi") == 2 * n - 1  # every one of them, once
