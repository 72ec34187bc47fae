"""`arpc keygen` and CURVE from the shell: keys by flag or env, refused without them (real subprocesses)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from machine import Machine, State
from transport import expose

ARPC = [sys.executable, "-m", "arpc"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ARPC_")}
    e.update(env or {})
    return subprocess.run([*ARPC, *args], capture_output=True, text=True, timeout=timeout, env=e)


def test_keygen_writes_a_key_pair(tmp_path: Path) -> None:
    r = run("keygen", str(tmp_path / "keys"), "--name", "ops")
    assert r.returncode == 0, r.stderr
    pub, sec = tmp_path / "keys" / "ops.key", tmp_path / "keys" / "ops.key_secret"
    assert pub.is_file() and sec.is_file()
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    assert str(pub) in r.stdout and str(sec) in r.stdout
    assert run("keygen").returncode == 2
    assert run("keygen", str(tmp_path), "--name").returncode == 2


def test_curve_from_the_cli(tmp_path: Path) -> None:
    assert run("keygen", str(tmp_path / "srv"), "--name", "server").returncode == 0
    assert run("keygen", str(tmp_path / "clients"), "--name", "ops").returncode == 0
    (tmp_path / "clients" / "ops.key_secret").rename(tmp_path / "ops.key_secret")  # allow= holds public keys
    m = Machine({"Foo": State(), "Bar": State()}, id="sec0")
    ep = expose(m, curve=tmp_path / "srv" / "server.key_secret", allow=tmp_path / "clients")
    try:
        keys = ["--server-key", str(tmp_path / "srv" / "server.key"), "--client-key", str(tmp_path / "ops.key_secret")]
        r = run(ep.address, *keys, "--", "add", "sec0", "Foo")
        assert (r.returncode, r.stdout.strip()) == (0, "executed"), r.stderr
        assert m.is_active("Foo")
        env = {"ARPC_SERVER_KEY": keys[1], "ARPC_CLIENT_KEY": keys[3]}
        r = run(ep.address, "--", "mach", "sec0", env=env)
        assert (r.returncode, r.stdout.strip()) == (0, "(Foo:1)"), r.stderr
        # no keys: the handshake never completes, so nothing is changed and the exit code says connection
        r = run(ep.address, "--connect-timeout", "0.5", "--", "add", "sec0", "Bar")
        assert r.returncode == 3, (r.stdout, r.stderr)
        assert not m.is_active("Bar")
    finally:
        ep.stop()
