"""Requests about many machines at once (server/fleet.py): ``group`` (one mutation of many machines, one request)
and ``watch`` (an endpoint-wide stream of transition records), against daemon processes."""

from __future__ import annotations

import queue
import threading

import pytest
from tr_util import RawPeer, until

from machine import Machine, Result, State, StateError
from transport import TransportError, connect, expose

IDS = ["worker0", "worker1", "worker2"]


def _ticks(d, mach: str) -> list[int]:
    return [int(x) for x in d.cmd(f"time {mach}").split()[1:]]


MULTI = 7  # index of Multi in the daemon's schema


def test_group_applies_the_mutation_once_per_machine_and_reports_unknown_ones(daemon):
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        out = c.mutate_group("add", ["Multi"], ["worker0", "nope", "worker1", "worker0", "worker2"])
        assert out[0] == Result.EXECUTED and out[2:] == [Result.EXECUTED] * 3  # worker0 twice: applied once
        assert isinstance(out[1], TransportError) and out[1].code == "unknown_machine"
        for mid in IDS:
            assert _ticks(d, mid)[MULTI] == 1  # once each (a second add of a multi state would tick it again)
        # states a machine does not have: a StateError for each, and nothing changes
        out = c.mutate_group("add", ["Nope"], IDS)
        assert all(isinstance(r, StateError) for r in out)
        assert [_ticks(d, mid)[MULTI] for mid in IDS] == [1, 1, 1]
        # remove and set, with args
        assert c.mutate_group("remove", ["Multi"], IDS) == [Result.EXECUTED] * 3
        assert c.mutate_group("set", ["Baz"], IDS, {"deny": "1"}) == [Result.CANCELED] * 3  # BazEnter says no
        assert c.mutate_group("set", ["Baz"], IDS, {"deny": "0"}) == [Result.EXECUTED] * 3
        assert c.mutate_group("add", ["Foo"], []) == []


def test_a_held_mirror_is_current_when_the_group_returns(daemon):
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        m = c.machine("worker1")
        c.mutate_group("add", ["Bar"], IDS)
        assert m.is_active("Bar")


def test_a_retried_group_request_is_answered_again_and_not_applied_twice(daemon):
    d = daemon("--hub")
    peer = RawPeer(d.addrs[0])
    try:
        assert peer.request("hello", 1, None, {"id": "t", "proto": 1})[0] == "ok"
        body = {"k": "add", "s": ["Multi"], "ids": IDS}
        first = peer.request("group", 5, None, body)
        again = peer.request("group", 5, None, body)  # the client's resend of an unanswered call
        assert first[0] == "ok" and again == first
        assert first[3] == {"r": [0, 0, 0], "e": {}}
        assert [_ticks(d, mid)[MULTI] for mid in IDS] == [1, 1, 1]
    finally:
        peer.close()


@pytest.mark.parametrize("body", [
    None, [], {"k": "toggle", "s": ["Foo"], "ids": IDS}, {"k": "add", "s": "Foo", "ids": IDS},
    {"k": "add", "s": [], "ids": IDS}, {"k": "add", "s": [1], "ids": IDS}, {"k": "add", "s": ["Foo"]},
    {"k": "add", "s": ["Foo"], "ids": "worker0"}, {"k": "add", "s": ["Foo"], "ids": [1, 2]},
    {"k": "add", "s": ["Foo"], "ids": IDS, "a": [1]},
    {"k": "add", "s": ["Foo"], "ids": IDS, "a": {"x": "y" * (1024 * 1024 + 1)}},
    {"k": "add", "s": ["Foo"], "ids": [f"m{i}" for i in range(10_001)]},
])
def test_a_malformed_group_request_gets_an_error_and_changes_nothing(daemon, body):
    d = daemon("--hub")
    before = [_ticks(d, mid) for mid in IDS]
    peer = RawPeer(d.addrs[0])
    try:
        r = peer.request("group", 3, None, body)
        assert r is not None and r[0] == "err", r
        assert r[3]["code"] in ("invalid_params", "limit")
        assert peer.request("ping", 4, None, {})[0] == "ok"  # still serving
    finally:
        peer.close()
    assert [_ticks(d, mid) for mid in IDS] == before


def test_a_slow_machine_s_part_is_demoted_and_the_rest_of_the_group_goes_on(daemon):
    # worker0's Foo takes 0.3 s: begun inline, the watchdog hands the sockets to a new thread, which goes on with
    # worker1 and worker2; each is applied once and answered in the one reply
    d = daemon("--hub", "--slow-foo", "0.3", "--slow-mach", "worker0")
    with connect(d.addrs[0], timeout=5) as c, connect(d.addrs[0], timeout=5) as other:
        assert c.mutate_group("add", ["Foo"], IDS) == [Result.EXECUTED] * 3
        # again, now that worker0 counts as slow: its part goes to its lane, behind another client's request
        done = threading.Event()
        threading.Thread(target=lambda: (other.mutate_many([("worker0", "add", ["Multi"], None)]), done.set()),
                         daemon=True).start()
        assert c.mutate_group("add", ["Bar"], IDS) == [Result.EXECUTED] * 3
        assert done.wait(5)
        assert c.mutate_group("add", ["Foo"], IDS) == [Result.EXECUTED] * 3
    for mid in IDS:
        t = _ticks(d, mid)
        assert t[2] == 3 and t[3] == 2  # Foo on, off (Bar on), on again (Bar off): once each time
    assert _ticks(d, "worker0")[MULTI] == 1


def test_an_older_daemon_gets_one_request_a_machine_and_no_watch(daemon):
    d = daemon("--hub", "--no-fleet")
    with connect(d.addrs[0]) as c:
        out = c.mutate_group("add", ["Multi"], ["worker0", "nope", "worker2"])
        assert out[0] == out[2] == Result.EXECUTED
        assert isinstance(out[1], TransportError) and out[1].code == "unknown_machine"
        assert c.mutate_group("add", ["Bar"], IDS) == [Result.EXECUTED] * 3  # remembered: no group request
        with pytest.raises(TransportError) as exc:
            c.watch_machines(lambda recs, dropped: None)
        assert exc.value.code == "unsupported"
    assert [_ticks(d, mid)[MULTI] for mid in IDS] == [1, 0, 1]


# ---------------------------------------------------------------------------------------------------- watch


def test_watch_streams_every_machine_s_transitions_without_mirrors(daemon):
    d = daemon("--hub")
    got: queue.SimpleQueue = queue.SimpleQueue()
    with connect(d.addrs[0]) as c:
        stop = c.watch_machines(lambda recs, dropped: [got.put((r, dropped)) for r in recs])
        some = c.watch_machines(lambda recs, dropped: [got.put(("w2", r)) for r in recs], ids=["worker2"])
        assert not c._mirrors
        c.mutate_group("add", ["Foo"], IDS, {"job": 7})
        d.cmd("add worker1 Bar")
        recs = [got.get(timeout=5) for _ in range(5)]
        mine = [r for r, _ in recs if not isinstance(r, str)]
        theirs = [r for k, r in recs if k == "w2"]
        assert sorted(r.machine for r in mine) == ["worker0", "worker1", "worker1", "worker2"]
        assert [r.machine for r in theirs] == ["worker2"]
        foo = next(r for r in mine if r.machine == "worker0")
        assert foo.before[2] == 0 and foo.after[2] == 1 and foo.type == "add" and foo.called == ["Foo"]
        assert foo.args == {"job": 7} and foo.at_ms > 0
        bar = [r for r in mine if r.machine == "worker1"][-1]
        assert bar.after[3] == 1 and bar.after[2] == 2  # Bar removes Foo
        stop()
        some()
        assert c.mutate_group("add", ["Foo"], IDS) == [Result.EXECUTED] * 3  # no tracer left in the way


def test_a_watch_is_renewed_after_the_daemon_forgets_the_session(tmp_path):
    # the server drops the session (as after a restart): the client says hello and watches again
    m = Machine({"A": State(multi=True)}, id="m")
    with expose(m) as ep:
        got: queue.SimpleQueue = queue.SimpleQueue()
        with connect(ep.address) as c:
            c.watch_machines(lambda recs, dropped: [got.put(r) for r in recs])
            m.add("A")
            assert got.get(timeout=5).machine == "m"
            fl = ep._loop.dispatcher.fleet
            old = next(iter(ep._loop.sessions.values()))
            ep._post(lambda: ep._loop.drop_session(old))

            def watching_again() -> bool:
                w = next(iter(fl.watches.values()), None)
                return w is not None and w.sess is not old and w.sess is ep._loop.sessions.get(old.identity)

            assert until(watching_again, timeout=10)
            m.add("A")
            assert got.get(timeout=5).machine == "m"


def test_a_watcher_that_does_not_read_holds_a_bounded_backlog_and_is_told_what_it_missed(monkeypatch):
    import transport.server.fleet as fleet

    monkeypatch.setattr(fleet, "MAX_BACKLOG", 64 * 1024)
    m = Machine({"A": State(multi=True)}, id="m")
    with expose(m) as ep:
        peer = RawPeer(ep.address, rcvhwm=1)
        try:
            assert peer.request("hello", 1, None, {"id": "t", "proto": 1})[0] == "ok"
            assert peer.request("watch", 2, None, {})[0] == "ok"
            n, pad = 4000, 10_000
            fl = ep._loop.dispatcher.fleet
            sess = next(iter(ep._loop.sessions.values()))
            most = 0
            for i in range(n):
                m.add("A", args={"pad": "x" * pad, "i": i})
                if i % 100 == 0:
                    most = max(most, sess.backlog.pending())
            assert until(lambda: not fl.queue and not fl.draining, timeout=10)
            # never more than the bound (and the one push that found room under it) held for it: not 40 MB
            assert max(most, sess.backlog.pending()) <= 64 * 1024 + fleet.PUSH_RECORDS * (pad + 100)
            seen, dropped = 0, 0
            while seen + dropped < n:  # reading again: told what it missed, once there is room
                msg = peer.recv(5.0)
                assert msg is not None, (seen, dropped)
                if msg[0] == "wrec":
                    seen += len(msg[3]["r"])
                    dropped += msg[3]["d"]
            assert dropped > 0 and seen + dropped == n
        finally:
            peer.close()


def test_a_group_s_slow_inline_run_is_handed_over_like_a_request_of_its_own():
    import time

    from transport.server.leader import DOG

    class Slow:
        def FooState(self, e: object) -> None:
            time.sleep(0.3)

    ms = [Machine({"Foo": State(), "Bar": State()}, id=f"m{i}", handlers=Slow() if i == 0 else None,
                  handler_timeout=None) for i in range(3)]
    ids = [m.id for m in ms]
    with expose(ms) as ep, connect(ep.address, timeout=5) as c:
        demoted = DOG.demoted
        assert c.mutate_group("add", ["Foo"], ids) == [Result.EXECUTED] * 3
        assert DOG.demoted == demoted + 1  # the I/O thread went on with m1 and m2 while m0's handler ran
        assert c.mutate_group("add", ["Bar"], ids) == [Result.EXECUTED] * 3
        assert not ep._loop.dispatcher.fleet.running and not ep._loop.dispatcher.fleet.adopted
    assert [m.time()[:2] for m in ms] == [[1, 1]] * 3


def test_connect_lists_the_machines_with_the_hello_sync_and_async(daemon):
    import asyncio

    from transport import connect_async

    d = daemon("--hub")
    with connect(d.addrs[0], listing=True) as c:
        assert c.listing is not None and c.listing == c.machines()
        assert [i["id"] for i in c.listing] == IDS
    with connect(d.addrs[0]) as c:
        assert c.listing is None

    async def main() -> list:
        async with connect_async(d.addrs[0], listing=True) as ac:
            assert ac.listing == await ac.machines()
            return [i["id"] for i in ac.listing or []]

    assert asyncio.run(main()) == IDS


def test_the_compact_listing_is_the_listing_and_an_older_daemon_s_list_still_reads(daemon, tmp_path):
    from machine import Arg

    typed = {"S": State(args={"job": Arg(int, "job number")}), "T": State()}
    plain = {"S": State(), "T": State()}
    ms = [Machine(typed if i % 2 else plain, id=f"m{i}", parent="p" if i < 2 else None, tags=["a"] if i else [])
          for i in range(4)]
    ms[3].add("S", args={"job": 1})
    with expose(ms) as ep, connect(ep.address) as c:
        peer = RawPeer(ep.address)
        try:
            full = peer.request("machs", 1, None, {})[3]  # what an older client asks
        finally:
            peer.close()
        assert c.machines() == full  # from the columns
        assert [i["id"] for i in full] == ["m0", "m1", "m2", "m3"]
        assert full[3]["time"][0] == 1 and full[1]["args"] == {"job": {"type": "int", "help": "job number"}}
        assert "args" not in full[0] and full[0]["tags"] == [] and full[2]["parent_id"] is None
    d = daemon("--hub", "--no-fleet")  # its listing is the list whatever the client asks
    with connect(d.addrs[0], listing=True) as c:
        assert [i["id"] for i in c.listing or []] == IDS == [i["id"] for i in c.machines()]


def test_a_machine_removed_from_the_endpoint_is_no_longer_watched():
    ms = [Machine({"A": State(multi=True)}, id=f"m{i}") for i in range(2)]
    with expose(ms) as ep, connect(ep.address) as c:
        got: queue.SimpleQueue = queue.SimpleQueue()
        c.watch_machines(lambda recs, dropped: [got.put(r.machine) for r in recs])
        ep.remove(ms[1])
        ms[1].add("A")  # ended before m0's: it would come first if it were still watched
        ms[0].add("A")
        assert got.get(timeout=5) == "m0"
        fl = ep._loop.dispatcher.fleet
        assert until(lambda: "m1" not in fl.feeds, timeout=5)


@pytest.mark.parametrize("body", [{"ids": "m0"}, {"ids": [1]}, {"ids": ["m0", None]}])
def test_a_malformed_watch_gets_an_error_and_watches_nothing(body):
    m = Machine({"A": State(multi=True)}, id="m0")
    with expose(m) as ep:
        peer = RawPeer(ep.address)
        try:
            r = peer.request("watch", 2, None, body)
            assert r is not None and r[0] == "err" and r[3]["code"] == "invalid_params"
            assert not ep._loop.dispatcher.fleet.watches and not ep._loop.dispatcher.fleet.feeds
            ok = peer.request("watch", 3, None, {"ids": ["m0", "nope"]})
            assert ok[0] == "ok" and ok[3] == {"unknown": ["nope"], "unknown_count": 1}
        finally:
            peer.close()
