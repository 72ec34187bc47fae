"""Session: addresses, listing (sorted, first wins), `.`, status, notices, retries, addr-file watching."""

from __future__ import annotations

import time

import pytest

from arpc.errors import Failed, NotConnected, UnknownMachine, UnknownState, UsageError
from arpc.filters import Filters
from arpc.local import LocalNet
from arpc.session import Session, parse_address, read_addr_file
from machine import Machine, State


def until(cond, timeout=5.0):
    """Poll ``cond`` until true or the deadline (then fail)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def mach(mid, **kw):
    return Machine({"A": State(), "B": State(multi=True)}, id=mid, **kw)


@pytest.fixture
def net():
    return LocalNet()


def test_parse_address():
    assert parse_address(" 127.0.0.1:7101\n") == "tcp://127.0.0.1:7101"
    assert parse_address("tcp://h:1") == "tcp://h:1"
    assert parse_address("ipc:///tmp/x") == "ipc:///tmp/x"
    assert parse_address("local://a") == "local://a"
    with pytest.raises(UsageError, match="empty"):  # a usage error (exit 2), not "not connected"
        parse_address("  ")


def test_read_addr_file(tmp_path):
    f = tmp_path / "a.addr"
    f.write_text(" 127.0.0.1:1 \n\n")
    assert read_addr_file(str(f)) == "tcp://127.0.0.1:1"
    f.write_text("\n")
    with pytest.raises(Failed, match="empty address file"):
        read_addr_file(str(f))
    with pytest.raises(Failed, match="cannot read"):
        read_addr_file(str(tmp_path / "nope.addr"))


def test_listing_sorted_first_address_wins(net):
    a1, b, a2 = mach("a"), mach("b"), mach("a")
    a2.add("A")
    net.serve("local://2", [b, a2])
    net.serve("local://1", [a1])
    s = Session(connector=net.connect)
    s.load(["local://2", "local://1"])
    s.open()
    entries = s.entries()
    assert [e.id for e in entries] == ["a", "b"]
    assert entries[0].link.address == "local://2"  # first address listed it
    assert s.resolve("a").mirror is a2
    assert s.resolve(".").id == "a"
    with pytest.raises(UnknownMachine):
        s.resolve("zzz")
    s.close()


def test_same_address_connected_once(net):
    net.serve("tcp://127.0.0.1:9", [mach("a")])
    s = Session(connector=net.connect)
    s.load(["127.0.0.1:9", "tcp://127.0.0.1:9"])
    assert s.addresses == ["tcp://127.0.0.1:9"]
    s.open()
    assert len(net.conns) == 1


def test_dot_without_machines(net):
    s = Session(connector=net.connect)
    s.load(["local://none"])
    s.open()
    with pytest.raises(NotConnected):
        s.resolve(".")
    st = s.status()
    assert (st.connected, st.connecting, st.disconnected, st.total) == (0, 0, 1, 1)


def test_entry_helpers(net):
    m = mach("a", parent="p", tags=("t1",))
    m.add("A")
    s = Session()
    s.add_local([m])
    e = s.resolve("a")
    assert e.names == ["A", "B", "Exception"]
    assert e.time() == [1, 0, 0] and e.active() == ["A"]
    assert e.parent_id == "p" and e.tags == ["t1"]
    assert e.flags() == "C"
    assert e.unknown(["A", "Z"]) == ["Z"]
    with pytest.raises(UnknownState, match=r"unknown state: Z \(machine a\)"):
        e.check_states(["Z"])
    m.dispose()
    assert not e.connected
    with pytest.raises(NotConnected, match="machine a not connected"):
        s.live(e)


def test_filters():
    s = Session()
    ms = [mach(f"w{i}", parent="d" if i else None) for i in range(4)]
    ms[1].add("A")
    ms[2].add("B")
    ms[2].add("B")
    s.add_local(ms)
    ids = lambda f: [e.id for e in f.apply(s.entries())]  # noqa: E731
    assert ids(Filters()) == ["w0", "w1", "w2", "w3"]
    assert ids(Filters(active=("A",))) == ["w1"]
    assert ids(Filters(inactive=("A",))) == ["w0", "w2", "w3"]
    assert ids(Filters(inactive=("Nope",))) == []
    assert ids(Filters(mtime_min=2)) == ["w2"]
    assert ids(Filters(mtime_max=0)) == ["w0", "w3"]
    assert ids(Filters(mtime_states=("A",), mtime_min=1)) == ["w1"]
    assert ids(Filters(parent="d")) == ["w1", "w2", "w3"]
    assert ids(Filters(id_regexp="[13]")) == ["w1", "w3"]
    assert ids(Filters(id_partial="2")) == ["w2"]
    assert ids(Filters(id_prefix="w", id_suffix="0")) == ["w0"]
    assert ids(Filters(skip=1, limit=2)) == ["w1", "w2"]
    assert ids(Filters(limit=0)) == ["w0", "w1", "w2", "w3"]  # 0: no limit


def test_notices_and_status(net):
    m = mach("a")
    net.serve("local://a", [m])
    notes = []
    s = Session(connector=net.connect, notify=lambda msg, err: notes.append((msg, err)))
    s.load(["local://a", "local://dead"])
    st = s.open()
    assert (st.connected, st.disconnected, st.total) == (1, 1, 2)
    assert notes == []  # the first open is quiet
    conn = net.conns[0]
    conn.set_connected(False)
    assert notes == [("disconnected from a, reconnecting", True)]
    assert s.status().connected == 0
    assert s.resolve("a").flags() == "D"
    conn.set_connected(True)
    until(lambda: ("connected to a", False) in notes)
    assert s.status().connected == 1
    conn.set_connected(False)
    conn.set_connected(False)
    assert notes.count(("disconnected from a, reconnecting", True)) == 2  # one per drop


def test_notices_are_summarised_per_address(net):
    many, few = [mach(f"m{i:02d}") for i in range(21)], [mach("x"), mach("y")]
    net.serve("local://many", many)
    net.serve("local://few", few)
    notes = []
    s = Session(connector=net.connect, notify=lambda msg, err: notes.append((msg, err)))
    s.load(["local://many", "local://few"])
    s.open()
    for conn in net.conns:
        conn.set_connected(False)
    assert notes == [("disconnected from 21 machines at local://many (m00, m01, m02, ...), reconnecting", True),
                     ("disconnected from x, y, reconnecting", True)]  # one line an address, not 23
    for conn in net.conns:
        conn.set_connected(True)
    until(lambda: len(notes) == 4)
    assert sorted(notes[2:]) == [("connected to 21 machines at local://many (m00, m01, m02, ...)", False),
                                 ("connected to x, y", False)]
    s.close()


def test_retry_failed_endpoint(net):
    s = Session(connector=net.connect)
    s.load(["local://late"])
    assert s.open().connected == 0
    ep = s.links()[0]
    assert ep.state == "failed" and "cannot connect" in ep.error
    net.serve("local://late", [mach("late")])
    ep.next_try = 0
    s.tick()
    until(lambda: s.status().connected == 1)
    assert [e.id for e in s.entries()] == ["late"]
    s.close()


def test_watch_dir_new_and_changed_files(net, tmp_path):
    m1, m2, m1b = mach("w1"), mach("w2"), mach("w1")
    m1b.add("A")
    net.serve("local://p1", [m1])
    net.serve("local://p2", [m2])
    net.serve("local://p3", [m1b])
    (tmp_path / "w1.addr").write_text("local://p1")
    notes = []
    s = Session(connector=net.connect, eager=True, notify=lambda msg, err: notes.append(msg))
    s.load(directory=str(tmp_path))
    s.open()
    s.start_background(watch=True, interval=3600)  # rounds are run by hand below
    assert [e.id for e in s.entries()] == ["w1"]
    (tmp_path / "w2.addr").write_text("local://p2\n")
    (tmp_path / "ignored.txt").write_text("local://nope")
    assert [ep.address for ep in s.poll_files()] == ["local://p2"]
    until(lambda: [e.id for e in s.entries()] == ["w1", "w2"] and s.status().connected == 2)
    assert "connected to w2" in notes
    assert s.poll_files() == []  # nothing changed
    # the daemon restarted elsewhere: the file now points to a new address; the old one is closed
    (tmp_path / "w1.addr").write_text("local://p3")
    new = s.poll_files()
    assert [ep.address for ep in new] == ["local://p3"]
    until(lambda: s.resolve("w1").link.address == "local://p3" and s.resolve("w1").connected)
    assert s.resolve("w1").active() == ["A"]
    assert net.conns[0].closed
    assert s.addresses == ["local://p3", "local://p2"]
    # a removed file is ignored (the machine stays listed)
    (tmp_path / "w2.addr").unlink()
    assert s.poll_files() == []
    assert [e.id for e in s.entries()] == ["w1", "w2"]
    s.close()


def test_add_address_and_reconnect(net):
    s = Session(connector=net.connect)
    s.load(["local://a"])
    s.open()
    net.serve("local://a", [mach("a")])
    assert s.reconnect().connected == 1
    net.serve("local://b", [mach("b")])
    ep = s.add_address("local://b")
    s.reconnect()
    assert ep.connected
    assert [e.id for e in s.entries()] == ["a", "b"]


def test_dot_is_fixed_for_the_session_and_stale_while_disconnected():
    s = Session()
    link_b = s.add_local([mach("b")], "local://b")
    assert s.resolve(".").id == "b"
    s.add_local([mach("a")], "local://a")          # a new machine that sorts first does not move `.`
    assert s.first().id == "a" and s.resolve(".").id == "b"
    link_b.conn.set_connected(False)
    with pytest.raises(NotConnected, match="`.` is b, which is disconnected"):
        s.resolve(".")
    link_b.conn.set_connected(True)
    assert s.resolve(".").id == "b"
    s.close()
