"""Pushes to watchers (mirrors subscribed with mutation records): what they are told, and that an applied change
always reaches them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from tr_util import RawPeer, until

from machine import Machine, State
from transport import Endpoint, RemoteMachine, connect

SCHEMA = {"Exception": State(multi=True), "Foo": State(), "Bar": State(), "Multi": State(multi=True)}


@pytest.fixture
def watcher(served: tuple[Machine, Endpoint]) -> Iterator[tuple[RemoteMachine, list[dict[str, Any]]]]:
    with connect(served[1].address) as c:
        rm = c.machine("m", mutations=True)
        got: list[dict[str, Any]] = []
        rm.on_update(got.append)
        yield rm, got


def records(got: list[dict[str, Any]]) -> list[tuple[list[str], Any]]:
    return [(mu["called"], mu["args"]) for u in got for mu in u["mutations"]]


def test_a_dry_run_is_not_reported_to_watchers(served, watcher) -> None:
    """can_add with args was recorded as a mutation, with the clock the real add then reached: the watcher got
    the dry run's args on the next real add of that state."""
    m, ep = served
    rm, got = watcher
    with connect(ep.address) as other:
        mirror = other.machine("m")
        assert mirror.can_add("Foo", args={"dry": 1}) == 0
        mirror.add("Foo", args={"real": 1})
    assert m.can_add("Multi", args={"dry": 2}) == 0  # a local one too
    m.add("Multi", args={"real": 2})
    assert until(lambda: len(records(got)) >= 2)
    assert records(got) == [(["Foo"], {"real": 1}), (["Multi"], {"real": 2})]


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_args_whose_repr_raises_are_applied_and_pushed(served, watcher) -> None:
    """The record's sanitising raised in the tracer, so the change was applied and never pushed to watchers."""
    m, _ = served
    rm, got = watcher
    m.add("Multi", args={"x": BadRepr(), "n": 1})
    assert until(lambda: rm.tick("Multi") == 1, timeout=3)
    assert until(lambda: len(records(got)) == 1, timeout=3)
    (called, args), = records(got)
    assert called == ["Multi"] and args["n"] == 1 and "BadRepr" in args["x"]


def test_deeply_nested_args_from_a_client_are_applied_and_pushed(served, watcher) -> None:
    """1000-deep args from a client: applied, then the record's repr hit the recursion limit: never pushed."""
    m, ep = served
    rm, got = watcher
    head = b"\x94" + msgpack.packb("add") + msgpack.packb(5) + msgpack.packb("m")
    body = (b"\x82" + msgpack.packb("s") + msgpack.packb(["Multi"]) + msgpack.packb("a") + b"\x81"
            + msgpack.packb("k") + b"\x91" * 1000 + b"\xc0")
    peer = RawPeer(ep.address)
    try:
        peer.send_raw(head + body)
        reply = peer.reply(5)
        assert reply is not None and reply[0] == "ok", reply
    finally:
        peer.close()
    assert m.tick("Multi") == 1
    assert until(lambda: rm.tick("Multi") == 1, timeout=3)
    assert until(lambda: len(records(got)) == 1, timeout=3)
    assert records(got)[0][0] == ["Multi"]


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_watcher_that_does_not_read_costs_the_daemon_a_bounded_amount(daemon) -> None:
    """A watcher subscribed with records that keeps pinging and never reads grew the daemon by ~100 MB/s while
    the source mutated with 20 KB args; now what it has not taken is bounded in bytes, and it resyncs once it
    reads again."""
    d = daemon("--hub")
    addr = d.addrs[0]
    slow = RawPeer(addr, rcvhwm=1)
    try:
        assert slow.request("hello", 1, None, {"id": "slow", "proto": 1}) is not None
        assert slow.request("sub", 2, "worker0", {"muts": True}) is not None
        seq = 10
        with connect(addr, timeout=30.0) as c:
            blob = {"blob": "x" * 20_000}
            c.mutate_many([("worker0", "add", ["Multi"], blob)] * 200)  # warm-up
            start = _rss(d.proc.pid)
            deadline = time.monotonic() + 4.0
            next_ping = 0.0
            done = 0
            while time.monotonic() < deadline:
                res = c.mutate_many([("worker0", "add", ["Multi"], blob)] * 100)
                done += len(res)
                if time.monotonic() >= next_ping:  # alive, never reading
                    seq += 1
                    slow.send("ping", seq, None, {})
                    next_ping = time.monotonic() + 0.5
            grown = _rss(d.proc.pid) - start
            assert grown < 64 * 1024 * 1024, f"the daemon grew {grown / 2**20:.0f} MiB over {done} mutations"
            # it reads again: it gets pushes again
            while slow.recv(0.5) is not None:
                pass
            seq += 1
            slow.send("ping", seq, None, {})
            c.mutate_many([("worker0", "add", ["Multi"], None)])
            got = []
            end = time.monotonic() + 5.0
            while time.monotonic() < end and not got:
                msg = slow.recv(0.5)
                if msg is not None and msg[0] == "clk":
                    got.append(msg)
            assert got, "no push after the watcher read its backlog"
    finally:
        slow.close()


def test_a_change_replied_to_one_mirror_still_reaches_the_others(served) -> None:
    """A mutation's reply brings its caller's mirror to now, and the push is skipped only when that mirror is the
    machine's only one: with two mirrors, three, and two again after one left, every other mirror gets each
    change; a lone mirror still gets a change made on the server after its own."""
    m, ep = served
    with connect(ep.address) as a, connect(ep.address) as b:
        ra, rb = a.machine("m"), b.machine("m")
        ra.add("Multi")
        assert until(lambda: rb.tick("Multi") == 1)
        with connect(ep.address) as c:
            rc = c.machine("m")
            rb.add("Multi")
            assert until(lambda: ra.tick("Multi") == 3 and rc.tick("Multi") == 3)
        ra.add("Multi")  # c is gone (its session dropped or not yet): b is still told
        assert until(lambda: rb.tick("Multi") == 5)
    with connect(ep.address) as d:
        rd = d.machine("m")
        rd.add("Multi")
        m.add("Multi")
        assert until(lambda: rd.tick("Multi") == m.tick("Multi") == 9)
