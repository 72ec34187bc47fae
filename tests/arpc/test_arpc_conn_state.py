"""``connect`` (and ``info``) list each address with its client's connection states and last error: the fixture
daemon and arpc as subprocesses, commands piped."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from arpc_e2e import PY, ROOT, Daemon, env, readline, transport_works

pytestmark = pytest.mark.skipif(not transport_works(), reason="transport not available")


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return int(port)


def test_connect_lists_each_address_with_its_connection_states_and_last_error(tmp_path) -> None:
    d = Daemon(tmp_path / "addrs")
    try:
        dead = f"tcp://127.0.0.1:{_dead_port()}"
        p = subprocess.run([PY, "-m", "arpc", "--connect-timeout", "5", "-d", str(d.dir), dead],
                           input="connect\ninfo\n", capture_output=True, text=True, timeout=60, env=env(),
                           cwd=str(ROOT))
        lines = p.stdout.splitlines()
        live = {d.addr(f"worker{i}").rsplit(":", 1)[1] for i in range(3)}
        listed = lines[4:8]
        assert sorted(ln.split(": ")[0].rsplit(":", 1)[1] for ln in listed) == sorted([dead.rsplit(":", 1)[1], *live])
        for ln in listed:
            if ln.startswith(dead + ": "):
                assert ln == f"{dead}: failed: connection refused (nothing listens on port {dead.rsplit(':', 1)[1]})"
            else:
                assert ln.endswith(": connected, 1 machine [Start Connected Ready]"), ln
        assert f"{dead}: failed: connection refused" in "\n".join(lines[8:])  # info says why too
    finally:
        d.stop()


def test_status_lists_the_addresses_not_connected_with_their_connection_states(tmp_path) -> None:
    """``status``: the four counts (as the spec gives them), then each address that is not connected, with its
    client's connection states, as ``connect`` lists it; ``status -a`` lists every address. A piped session, whose
    daemon is killed after it connected."""
    d = Daemon(tmp_path / "addrs")
    p = subprocess.Popen([PY, "-m", "arpc", "--connect-timeout", "5", "-d", str(d.dir)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=str(ROOT))
    assert p.stdin is not None and p.stdout is not None
    out = p.stdout

    def status(*args: str) -> list[str]:
        assert p.stdin is not None
        p.stdin.write(" ".join(("status", *args)) + "\n")
        p.stdin.flush()
        counts = [readline(out, 30) for _ in range(4)]
        total, up = int(counts[3].split()[1]), int(counts[0].split()[1])
        listed = total if args else total - up  # one machine per address
        return counts + [readline(out, 30) for _ in range(listed)]

    try:
        assert status() == ["Connected:      3", "Connecting:     0", "Disconnected:   0", "Total:          3"]
        lines = status("-a")
        assert len(lines) == 7 and all(ln.endswith(": connected, 1 machine [Start Connected Ready]")
                                       for ln in lines[4:]), lines
        d.kill()
        deadline = time.monotonic() + 30  # the client counts the link gone after 3.5 s of silence
        while (lines := status())[0] != "Connected:      0":
            assert time.monotonic() < deadline, lines
            time.sleep(0.2)
        assert lines[2] == "Disconnected:   3" and len(lines) == 7, lines
        for ln in lines[4:]:
            assert ln.startswith("tcp://127.0.0.1:") and " disconnected [" in ln and "RetryingConn" in ln, ln
    finally:
        p.kill()
        p.wait(10)
        d.stop()
