"""``connect`` (and ``info``) list each address with its client's connection states and last error: the fixture
daemon and arpc as subprocesses, commands piped."""

from __future__ import annotations

import socket
import subprocess

import pytest
from arpc_e2e import PY, ROOT, Daemon, env, transport_works

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
