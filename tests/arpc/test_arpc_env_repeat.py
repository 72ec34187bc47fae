"""Addresses from the environment (ARPC_ADDR, AM_REPL_ADDR, AM_REPL_DIR) and -r COUNT -i SEC (issue 15). Real
daemon and CLI processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from arpc_e2e import Daemon, arpc, transport_works

pytestmark = pytest.mark.skipif(not transport_works(), reason="transport (pyzmq) not available")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "addrs")
    yield d
    d.stop()


def test_addresses_from_the_environment(daemon: Daemon) -> None:
    a0, a1 = daemon.addr("worker0"), daemon.addr("worker1")
    r = arpc("--", "list", "-z", "false", ARPC_ADDR=f"{a0}, {a1}")
    assert (r.code, [ln.split()[1] for ln in r.lines]) == (0, ["worker0", "worker1"]), r.err
    r = arpc("--", "list", "-z", "false", AM_REPL_DIR=str(daemon.dir))
    assert (r.code, len(r.lines)) == (0, 3), r.err
    r = arpc("--", "mach", "worker2", AM_REPL_ADDR=daemon.addr("worker2"))
    assert (r.code, r.out) == (0, "()\n"), r.err
    r = arpc(daemon.addr("worker2"), "--", "list", "-z", "false", ARPC_ADDR=a0)  # the command line wins
    assert [ln.split()[1] for ln in r.lines] == ["worker2"]
    r = arpc("--", "list", AM_REPL_ADDR="1")  # asyncmachine-go's "1" is no address
    assert r.code == 2 and "no address given" in r.err and "ARPC_ADDR" in r.err
    r = arpc("--", "list", ARPC_ADDR="nope")
    assert r.code == 2 and "invalid address: 'nope'" in r.err


def test_repeat_with_interval(daemon: Daemon) -> None:
    t0 = time.monotonic()
    r = arpc("-d", str(daemon.dir), "-r", "3", "-i", "0.2", "--", "toggle", "worker0", "Foo")
    assert (r.code, r.lines) == (0, ["executed"] * 3), r.err
    assert time.monotonic() - t0 >= 0.4
    assert arpc("-d", str(daemon.dir), "--", "mach", "worker0").out == "(Foo:3)\n"  # toggled 3 times
    r = arpc("-d", str(daemon.dir), "-r", "2", "-i", "0.05", "--", "mach", "nope")
    assert (r.code, r.err.count("unknown machine")) == (1, 2)
    assert arpc("-r", "-1", "127.0.0.1:1", "--", "list").code == 2
    assert arpc("-i", "0", "127.0.0.1:1", "--", "list").code == 2
