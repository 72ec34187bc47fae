"""Connection problems say which address and why (issue 15): refused, unresolvable, not our protocol, a CURVE
handshake that does not complete, a key file missing; exit 3. Real subprocesses and sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from arpc_e2e import arpc, transport_works

pytestmark = pytest.mark.skipif(not transport_works(), reason="transport (pyzmq) not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (not a ZeroMQ peer)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def test_refused_names_the_address(tmp_path: Path) -> None:
    port = free_port()
    r = arpc(f"127.0.0.1:{port}", "--", "list")
    assert (r.code, r.out) == (3, "")
    assert r.err == f"err> cannot connect to tcp://127.0.0.1:{port}: connection refused (nothing listens on port " \
                    f"{port})\n"


def test_unresolvable_host() -> None:
    r = arpc("no-such-host.invalid:7101", "--", "list")
    assert r.code == 3
    assert r.err.startswith("err> cannot connect to tcp://no-such-host.invalid:7101: cannot resolve host "
                            "no-such-host.invalid"), r.err


def test_not_our_protocol(silent_listener: int) -> None:
    r = arpc("--connect-timeout", "0.5", f"127.0.0.1:{silent_listener}", "--", "list")
    assert r.code == 3
    assert f"cannot connect to tcp://127.0.0.1:{silent_listener}: it accepts connections but did not answer the " \
           "hello in 0.5s (not an asyncmachine endpoint" in r.err, r.err


def test_curve_handshake_that_does_not_complete(tmp_path: Path, silent_listener: int) -> None:
    assert arpc("keygen", str(tmp_path), "--name", "me").code == 0
    keys = ["--server-key", str(tmp_path / "me.key"), "--client-key", str(tmp_path / "me.key_secret")]
    r = arpc("--connect-timeout", "0.5", *keys, f"127.0.0.1:{silent_listener}", "--", "list")
    assert r.code == 3
    assert "the CURVE handshake or the hello did not complete in 0.5s (wrong --server-key" in r.err, r.err


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    assert arpc("keygen", str(tmp_path), "--name", "me").code == 0
    r = arpc("--server-key", str(missing), "--client-key", str(tmp_path / "me.key_secret"), f"127.0.0.1:{free_port()}",
             "--", "list")
    assert r.code == 3
    assert f"key file not found: {missing}" in r.err, r.err


def test_missing_ipc_socket(tmp_path: Path) -> None:
    path = tmp_path / "none.sock"
    r = arpc("--connect-timeout", "0.3", f"ipc://{path}", "--", "list")
    assert (r.code, r.err) == (3, f"err> cannot connect to ipc://{path}: no such socket file: {path}\n")


def test_each_failed_address_has_its_line_and_log_level_adds_detail() -> None:
    a, b = free_port(), free_port()
    r = arpc("--connect-timeout", "0.3", f"127.0.0.1:{a}", f"127.0.0.1:{b}", "--", "list")
    assert r.code == 3
    assert r.err.splitlines() == [f"err> cannot connect to tcp://127.0.0.1:{p}: connection refused (nothing listens "
                                  f"on port {p})" for p in (a, b)]
    r = arpc("--log-level", "1", "--connect-timeout", "0.3", f"127.0.0.1:{a}", "--", "list")
    assert "connection refused" in r.err and "did not answer hello" in r.err, r.err  # the transport's own words
