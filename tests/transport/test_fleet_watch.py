"""A fleet watch (server/fleet.py) over time: machines exposed after it began, machines exposed again under their id,
state names sent with the records, what was dropped told across a replaced watch; and group replies kept per
session for retries. Real endpoints and sockets."""

from __future__ import annotations

import queue

from tr_util import RawPeer, until

from machine import Machine, State
from transport import connect, expose
from transport.fleet_calls import watched_names

SCHEMA = {"A": State(multi=True), "B": State()}


def _next_machine(got: queue.SimpleQueue, want: str) -> list[int]:
    """The next record's clock after; its machine must be ``want`` (no record is skipped)."""
    mid, after = got.get(timeout=5)
    assert mid == want
    return list(after)


def test_a_watch_takes_in_machines_exposed_after_it_began_and_one_exposed_again_under_its_id():
    m0 = Machine(SCHEMA, id="m0")
    with expose(m0) as ep, connect(ep.address) as c:
        every: queue.SimpleQueue = queue.SimpleQueue()
        some: queue.SimpleQueue = queue.SimpleQueue()
        c.watch_machines(lambda recs, dropped: [every.put((r.machine, r.after)) for r in recs])
        c.watch_machines(lambda recs, dropped: [some.put((r.machine, r.after)) for r in recs], ids=["m2"])
        m0.add("A")
        _next_machine(every, "m0")
        m1 = Machine(SCHEMA, id="m1")
        ep.add(m1)  # exposed after the watch began
        assert until(lambda: "m1" in ep._loop.dispatcher.fleet.feeds, timeout=5)
        m1.add("A")
        _next_machine(every, "m1")
        ep.remove(m1)
        again = Machine(SCHEMA, id="m1")  # another machine under the same id
        ep.add(again)
        assert until(lambda: ep._loop.dispatcher.fleet.feeds.get("m1", (None,))[0] is again, timeout=5)
        m1.add("A")  # the removed one: not watched any more
        again.add("B")
        assert _next_machine(every, "m1") == again.time()
        m2 = Machine(SCHEMA, id="m2")  # named by a watch before it was served
        ep.add(m2)
        assert until(lambda: "m2" in ep._loop.dispatcher.fleet.feeds, timeout=5)
        m2.add("A")
        _next_machine(every, "m2")
        _next_machine(some, "m2")
        assert watched_names(c, "m1") == again.state_names


def test_records_come_with_their_machine_s_state_names_once_per_session():
    m = Machine({"Foo": State(), "Bar": State()}, id="m")
    other = Machine({"Baz": State()}, id="o")
    with expose([m, other]) as ep:
        peer = RawPeer(ep.address)
        try:
            assert peer.request("hello", 1, None, {"id": "t", "proto": 1})[0] == "ok"
            assert peer.request("watch", 2, None, {})[0] == "ok"
            m.add("Foo")
            push = peer.recv(5.0)
            assert push is not None and push[0] == "wrec"
            body = push[3]
            assert body["m"] == {"m": 0} and body["names"] == [m.state_names]
            m.add("Bar")
            other.add("Baz")
            seen: dict[str, int] = {}
            names: dict[str, list[str]] = {}
            while sum(seen.values()) < 2:
                push = peer.recv(5.0)
                assert push is not None and push[0] == "wrec"
                for r in push[3]["r"]:
                    seen[r[0]] = seen.get(r[0], 0) + 1
                for mid, k in push[3].get("m", {}).items():
                    names[mid] = push[3]["names"][k]
            assert names == {"o": other.state_names}  # m's were sent already
        finally:
            peer.close()
        got: queue.SimpleQueue = queue.SimpleQueue()
        with connect(ep.address) as c:
            c.watch_machines(lambda recs, dropped: [got.put(watched_names(c, r.machine)) for r in recs])
            assert watched_names(c, "m") is None  # nothing sent before its first record
            m.remove("Foo")
            assert got.get(timeout=5) == m.state_names


def test_a_replaced_watch_still_tells_the_records_its_session_missed(monkeypatch):
    import transport.server.fleet as fleet

    monkeypatch.setattr(fleet, "MAX_BACKLOG", 64 * 1024)
    m = Machine(SCHEMA, id="m")
    with expose(m) as ep:
        # a small kernel buffer: the 10 MB of records below must not all fit in the sockets' buffers (the
        # receiver's autotuning goes up to tcp_rmem's max, 32 MB here), or nothing is dropped
        peer = RawPeer(ep.address, rcvhwm=1, rcvbuf=16 * 1024)
        try:
            assert peer.request("hello", 1, None, {"id": "t", "proto": 1})[0] == "ok"
            assert peer.request("watch", 2, None, {})[0] == "ok"
            fl = ep._loop.dispatcher.fleet
            n = 1000
            for i in range(n):  # the peer does not read: most of these are dropped for it
                m.add("A", args={"pad": "x" * 10_000, "i": i})
            assert until(lambda: not fl.queue and not fl.draining, timeout=10)
            old = next(iter(fl.watches.values()))
            assert old.dropped > 0
            peer.send("watch", 3, None, {})  # the same watch again: it replaces the first
            assert until(lambda: next(iter(fl.watches.values())) is not old, timeout=5)
            seen = dropped = 0
            while (msg := peer.recv(3.0)) is not None:
                if msg[0] == "wrec":
                    seen += len(msg[3]["r"])
                    dropped += msg[3]["d"]
            assert seen + dropped == n, (seen, dropped)
        finally:
            peer.close()


def test_a_group_reply_is_kept_for_its_session_whatever_other_sessions_ask():
    ms = [Machine(SCHEMA, id=f"m{i}") for i in range(3)]
    ids = [m.id for m in ms]
    with expose(ms) as ep:
        a, b = RawPeer(ep.address, identity=b"peer-a"), RawPeer(ep.address, identity=b"peer-b")
        try:
            for p in (a, b):
                assert p.request("hello", 1, None, {"id": "t", "proto": 1})[0] == "ok"
            body = {"k": "add", "s": ["A"], "ids": ids}
            first = a.request("group", 5, None, body)
            assert first is not None and first[0] == "ok"
            for seq in range(2, 40):  # another session's groups, more than a session keeps
                assert b.request("group", seq, None, body)[0] == "ok"
            again = a.request("group", 5, None, body)  # a's resend of a call it saw no reply to
            assert again == first
            # 39 adds of the multi state A (a's once, b's 38): 1 tick for the first, 2 for each re-entry
            assert [m.time()[0] for m in ms] == [1 + 2 * 38] * 3
            for seq in range(6, 6 + fleet_replies() + 1):  # a's own later groups push its first reply out
                assert a.request("group", seq, None, body)[0] == "ok"
            late = a.request("group", 5, None, body)
            assert late is not None and late[0] == "err" and late[3]["code"] == "duplicate"
        finally:
            a.close()
            b.close()


def fleet_replies() -> int:
    import transport.server.fleet as fleet

    return fleet.GROUP_REPLIES
