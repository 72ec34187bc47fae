"""CURVE on the transport: key files, admitted and refused clients, read-only clients."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq.auth
from tr_util import RawPeer, until

from machine import Machine, Result, State
from transport import Endpoint, TransportError, connect, expose
from transport.security import keygen

SCHEMA = {
    "Exception": State(multi=True),
    "Foo": State(remove=("Bar",)),
    "Bar": State(remove=("Foo",)),
    "Multi": State(multi=True),
}


@pytest.fixture
def keys(tmp_path: Path) -> SimpleNamespace:
    """server/ (the endpoint's pair), allow/ (alice), readonly/ (bob), unknown/ (mallory), fake/ (a fake server)."""
    k = SimpleNamespace(dir=tmp_path)
    for attr, sub, name in [("server", "server", "server"), ("alice", "allow", "alice"),
                            ("bob", "readonly", "bob"), ("mallory", "unknown", "mallory"), ("fake", "fake", "fake")]:
        setattr(k, attr, keygen(tmp_path / sub, name))
    return k


@pytest.fixture
def secured(keys: SimpleNamespace) -> Iterator[tuple[Machine, Endpoint]]:
    m = Machine(SCHEMA, id="m")
    ep = expose(m, curve=keys.server[1], allow=keys.dir / "allow", readonly=keys.dir / "readonly")
    yield m, ep
    ep.stop()


def z85(path: Path) -> tuple[bytes, bytes | None]:
    return zmq.auth.load_certificate(str(path))


def test_keygen_writes_a_key_pair(tmp_path: Path) -> None:
    public, secret = keygen(tmp_path / "keys", "node")
    assert (public.name, secret.name) == ("node.key", "node.key_secret")
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["node.key", "node.key_secret"]
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert not stat.S_IMODE(public.stat().st_mode) & 0o022  # nobody else may rewrite it
    pub, none = z85(public)
    pub2, sec = z85(secret)
    assert none is None and pub == pub2 and len(pub) == 40 and sec is not None and len(sec) == 40
    assert keygen(tmp_path / "keys")[0].name == "arpc.key"  # the default name
    assert keygen(tmp_path / "other", "node")[0].read_text() != public.read_text()  # fresh keys each time


def test_known_client_works_over_tcp(keys, secured) -> None:
    m, ep = secured
    assert ep.address.startswith("tcp://127.0.0.1:")
    with connect(ep.address, server_key=keys.server[0], client_keys=keys.alice[1], timeout=2) as c:
        assert [x["id"] for x in c.machines()] == ["m"]
        rm = c.machine("m")
        assert rm.add("Foo", args={"k": "v"}) == Result.EXECUTED and m.is_active("Foo")
        w = rm.when("Multi")
        m.add("Multi")
        assert w.wait(timeout=2) and rm.time() == m.time()
        assert rm.remove("Foo") == Result.EXECUTED and not m.is_active("Foo")


def test_curve_may_bind_a_non_loopback_address(keys) -> None:
    m = Machine(SCHEMA, id="m")
    ep = expose(m, addr="tcp://0.0.0.0:*", curve=keys.server[1], allow=keys.dir / "allow")
    try:
        port = ep.address.rsplit(":", 1)[1]
        with connect(f"127.0.0.1:{port}", server_key=keys.server[0], client_keys=keys.alice[1]) as c:
            assert c.machine("m").add("Bar") == Result.EXECUTED and m.is_active("Bar")
        with pytest.raises(TransportError):
            connect(f"127.0.0.1:{port}", timeout=0.5)
    finally:
        ep.stop()


@pytest.mark.parametrize("who", ["no keys", "wrong server key", "unknown client key"])
def test_refused_clients_never_see_a_clock(keys, secured, who) -> None:
    m, ep = secured
    kw = {"no keys": {},
          "wrong server key": {"server_key": keys.fake[0], "client_keys": keys.alice[1]},
          "unknown client key": {"server_key": keys.server[0], "client_keys": keys.mallory[1]}}[who]
    handled = ep.handled
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="cannot connect") as info:
        connect(ep.address, timeout=0.5, **kw)
    assert info.value.code == "connect"
    assert time.monotonic() - t0 < 1.5
    assert ep.handled == handled and ep.sessions == 0  # not one frame reached the endpoint
    assert m.time() == [0, 0, 0, 0]


def test_refused_raw_peer_gets_nothing(keys, secured) -> None:
    m, ep = secured
    mal_pub, mal_sec = z85(keys.mallory[1])
    assert mal_sec is not None
    peer = RawPeer(ep.address, curve=(z85(keys.server[0])[0], mal_pub, mal_sec))
    try:
        peer.send("machs", 1, None, {})
        peer.send("add", 2, "m", {"s": ["Foo"]})
        assert peer.recv(0.5) is None
        assert ep.handled == 0 and not m.is_active("Foo")
    finally:
        peer.close()


def test_readonly_client_may_read_and_wait_but_not_mutate(keys, secured) -> None:
    m, ep = secured
    full = connect(ep.address, server_key=keys.server[0], client_keys=keys.alice[1])
    ro = connect(ep.address, server_key=keys.server[0], client_keys=keys.bob[1])
    try:
        assert [x["id"] for x in ro.machines()] == ["m"]
        rm = ro.machine("m")
        w = rm.when("Foo")
        wa = rm.when_args("Bar", {"k": 1})
        assert full.machine("m").add("Foo") == Result.EXECUTED
        assert w.wait(timeout=2)
        m.add("Multi")
        rm.sync()
        assert rm.time() == m.time()
        assert rm.can_add("Bar") == Result.EXECUTED  # a dry run changes nothing: allowed
        assert full.machine("m").add("Bar", args={"k": 1}) == Result.EXECUTED
        assert wa.wait(timeout=2) and not wa.cancelled
        before = m.time()
        for call in (lambda: rm.add("Foo"), lambda: rm.remove("Bar"), lambda: rm.set("Foo"),
                     lambda: rm.toggle("Bar"), lambda: rm.add_err_state("Foo", ValueError("x"))):
            with pytest.raises(TransportError, match="read-only") as info:
                call()
            assert info.value.code == "no_access"
        rm.add_ns("Multi")  # a notification: refused without a reply
        rm.sync()
        assert m.time() == before and rm.time() == before
        assert until(lambda: ro.connected and full.connected, timeout=1)
    finally:
        ro.close()
        full.close()


def test_readonly_key_cannot_borrow_a_full_clients_identity(keys, secured) -> None:
    m, ep = secured
    with connect(ep.address, server_key=keys.server[0], client_keys=keys.alice[1]) as full:
        full.machine("m")
        bob_pub, bob_sec = z85(keys.bob[1])
        assert bob_sec is not None
        peer = RawPeer(ep.address, identity=full.id.encode(), curve=(z85(keys.server[0])[0], bob_pub, bob_sec))
        try:
            reply = peer.request("add", 1, "m", {"s": ["Foo"]})
            assert reply is not None and reply[0] == "err" and reply[3]["code"] == "no_access"
            assert not m.is_active("Foo")
        finally:
            peer.close()


def test_key_configuration_errors(keys, tmp_path: Path) -> None:
    m = Machine(SCHEMA, id="m")
    bad = [
        {"curve": keys.server[1]},  # no client keys at all
        {"curve": keys.server[0], "allow": keys.dir / "allow"},  # a public file where the secret one is needed
        {"curve": tmp_path / "missing.key_secret", "allow": keys.dir / "allow"},
        {"curve": keys.server[1], "allow": tmp_path / "no-such-dir"},
    ]
    for kw in bad:
        with pytest.raises(TransportError) as info:
            expose(m, **kw)
        assert info.value.code == "keys", kw
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.key").write_text("not a certificate\n")
    with pytest.raises(TransportError) as info:
        expose(m, curve=keys.server[1], allow=tmp_path / "junk")
    assert info.value.code == "keys"
    ep = expose(m)
    try:
        for kw in ({"server_key": keys.server[0]}, {"client_keys": keys.alice[1]},
                   {"server_key": keys.server[0], "client_keys": keys.alice[0]}):
            with pytest.raises(TransportError) as info:
                connect(ep.address, timeout=0.5, **kw)
            assert info.value.code == "keys", kw
    finally:
        ep.stop()


def test_failed_curve_bind_leaks_nothing(keys, secured) -> None:
    m, ep = secured
    threads = threading.active_count()
    for _ in range(3):
        with pytest.raises(TransportError) as info:
            expose(m, addr=ep.address, curve=keys.server[1], allow=keys.dir / "allow")  # the port is taken
        assert info.value.code == "bind"
    assert threading.active_count() == threads
