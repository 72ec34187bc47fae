"""``connect @NAME`` in the REPL: a named connection of the config file, against a daemon process (one endpoint
per machine), piped and in a pseudo-terminal."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from arpc_e2e import PY, ROOT, Daemon, env
from test_arpc_repl_pty import PROMPT, spawn


@pytest.fixture
def d(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path / "addrs")
    yield daemon
    daemon.stop()


def _tcp(d: Daemon, mach: str) -> str:
    a = d.addr(mach)  # an addr file may hold host:port
    return a if "://" in a else f"tcp://{a}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, d: Daemon) -> str:
    dead = f"tcp://127.0.0.1:{_free_port()}"
    path = tmp_path / "config.toml"
    path.write_text(f'[connections.prod]\naddresses = ["{d.addr("worker1")}", "{d.addr("worker2")}"]\n\n'
                    f'[connections.half]\naddresses = ["{d.addr("worker2")}", "{dead}"]\n\n'
                    f'[connections.gone]\naddresses = ["{dead}"]\n\n'
                    f'[connections.keyed]\naddresses = ["{d.addr("worker1")}"]\n'
                    f'server_key = "{tmp_path}/missing.key"\nclient_key = "{tmp_path}/missing.key_secret"\n')
    return str(path)


def _piped(d: Daemon, cfg: str, lines: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "arpc", "--connect-timeout", "2", d.addr("worker0")], input=lines,
                          capture_output=True, text=True, timeout=30, cwd=str(ROOT), env=env(ARPC_CONFIG=cfg))


def test_connect_a_named_connection_piped(d: Daemon, tmp_path: Path) -> None:
    cfg = _config(tmp_path, d)
    r = _piped(d, cfg, "connect @prod\nlist\n")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[:2] == [f"connected to {_tcp(d, 'worker1')}: worker1", f"connected to {_tcp(d, 'worker2')}: worker2"]
    listing = "\n".join(out[2:])
    assert all(m in listing for m in ("worker0", "worker1", "worker2")), listing

    # a dead address of the connection is reported and not kept; the others stay
    r = _piped(d, cfg, "connect @half\nconnect\n")
    assert r.returncode == 3
    assert f"connected to {_tcp(d, 'worker2')}: worker2" in r.stdout
    assert "cannot connect to tcp://127.0.0.1:" in r.stdout and "refused" in r.stdout

    r = _piped(d, cfg, "connect @half -k\n")  # not a flag of connect: a usage error, nothing connected
    assert r.returncode == 2

    r = _piped(d, cfg, "connect @gone\nconnect\n")
    assert r.returncode == 3 and "cannot connect to tcp://127.0.0.1:" in r.stderr

    # the connection's own key files are used for its addresses (here: missing, and said so)
    r = _piped(d, cfg, "connect @keyed\n")
    assert r.returncode == 3 and "missing.key" in r.stderr, r.stderr

    r = _piped(d, cfg, "connect @nope\n")
    assert r.returncode == 2 and "unknown connection @nope" in r.stderr and "@prod" in r.stderr


def test_connect_named_in_the_repl_with_completion(d: Daemon, tmp_path: Path) -> None:
    cfg = _config(tmp_path, d)
    p = spawn(["-m", "arpc", "--connect-timeout", "2", d.addr("worker0")], tmp_path, ARPC_CONFIG=cfg, NO_COLOR="1")
    try:
        p.expect(PROMPT)
        p.send("connect @p\t")  # completes to @prod (else `connect @p` fails: unknown connection)
        p.send("\r")
        p.expect_exact(f"connected to {_tcp(d, 'worker2')}: worker2")
        p.expect(PROMPT)
        p.sendline("list")
        p.expect("worker1")
        p.expect("worker2")
        p.expect(PROMPT)
        p.sendline("connect")
        p.expect(r"Connected: +3")
        p.expect(r"Total: +3")
        p.expect(PROMPT)
        p.sendline("exit")
        p.expect(pexpect.EOF)
    finally:
        p.close(force=True)
