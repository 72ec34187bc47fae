"""arpc against a daemon process: log (with reasons, --since, --follow), errors, info, the reason of a canceled
mutation, and the last error in mach/inspect."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from arpc_e2e import Daemon, arpc, arpc_bg, readline


@pytest.fixture
def d(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path / "addrs", "--hub")
    yield daemon
    daemon.stop()


def _a(d: Daemon, *cmd: str) -> tuple[int, str, str]:
    r = arpc("-d", str(d.dir), "--", *cmd)
    return r.code, r.out, r.err


def test_a_canceled_mutation_says_why(d: Daemon) -> None:
    code, out, _ = _a(d, "add", "worker0", "Baz", "--arg", "deny", "--val", "1")
    assert code == 4 and out.strip() == "canceled: BazEnter returned False"
    r = arpc("-d", str(d.dir), "--json", "--", "add", "worker0", "Baz", "--arg", "deny", "--val", "1")
    doc = json.loads(r.out)
    assert r.code == 4 and doc["result"] == "canceled" and doc["reason"] == "BazEnter returned False"


def test_log_shows_transitions_with_reasons_and_sources(d: Daemon) -> None:
    d.cmd("add worker1 Start")
    _a(d, "add", "worker1", "Baz", "--arg", "deny", "--val", "1")
    _a(d, "add", "worker1", "Foo")
    code, out, err = _a(d, "log", "worker1")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    assert " worker1 add Start executed +Start " in lines[0] and "[session" not in lines[0]
    assert "add Baz canceled: BazEnter returned False" in lines[1] and "(deny=1)" in lines[1]
    assert "add Foo executed +Foo" in lines[2] and "[session rc-" in lines[2]
    assert _a(d, "log", "worker1", "-n", "1")[1].count("\n") == 1
    assert _a(d, "log", "worker1", "--since", "1h")[1] == out
    assert _a(d, "log", "worker1", "--since-tick", "1")[1].splitlines() == lines[2:]
    r = arpc("-d", str(d.dir), "--json", "--", "log", "worker1")
    recs = json.loads(r.out)["records"]
    assert [x["reason"] for x in recs] == [None, "BazEnter returned False", None]


def test_log_follow_goes_on_live_without_a_gap(d: Daemon) -> None:
    d.cmd("add worker2 Start")
    p = arpc_bg("-d", str(d.dir), "--", "log", "worker2", "--follow")
    try:
        assert p.stdout is not None
        first = readline(p.stdout, 15)
        assert "add Start executed" in first
        d.cmd("add worker2 Foo")
        d.cmd("add worker2 Bar")
        assert "add Foo executed" in readline(p.stdout, 10)
        assert "add Bar executed +Bar -Foo" in readline(p.stdout, 10)
    finally:
        p.terminate()
        p.wait(10)


def test_errors_and_the_last_error_in_mach_and_inspect(d: Daemon) -> None:
    d.cmd("err worker0 disk full")
    code, out, _ = _a(d, "errors", "worker0")
    assert code == 0 and "RuntimeError: disk full" in out.splitlines()[0]
    code, out, _ = _a(d, "mach", "worker0")
    assert code == 0 and out.splitlines()[1] == "Exception: RuntimeError: disk full"
    assert "Exception: RuntimeError: disk full" in _a(d, "inspect", "worker0")[1]
    d.cmd("remove worker0 Exception")
    assert "disk full" in _a(d, "errors", "worker0")[1]          # kept after Exception went
    assert _a(d, "mach", "worker0")[1].count("\n") == 1            # no error line without Exception
    assert _a(d, "errors", "worker1")[1].strip() == "no errors"


def test_info_of_the_daemon_and_of_a_machine(d: Daemon) -> None:
    d.cmd("err worker2 boom")
    code, out, _ = _a(d, "info")
    assert code == 0 and "3 machines" in out and "1 in Exception" in out and "worker2" in out
    code, out, _ = _a(d, "info", "worker2")
    assert code == 0 and "last error: RuntimeError: boom" in out and "keeps 1000" in out


def test_bad_input(d: Daemon) -> None:
    code, _, err = _a(d, "log", "worker0", "--since", "ten minutes")
    assert code == 2 and "invalid --since" in err
    code, _, err = _a(d, "log", "nope")
    assert code != 0 and "nope" in err


def test_a_machine_without_history_says_so(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "d.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from machine import Machine, State
        from transport import expose
        ep = expose(Machine({{"A": State()}}, id="plain"), history=0, addr_dir={str(tmp_path / 'a')!r})
        print("ready", flush=True)
        sys.stdin.readline()
        ep.stop()
    """))
    p = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and readline(p.stdout, 15) == "ready"
        r = arpc("-d", str(tmp_path / "a"), "--", "log", "plain")
        assert r.code == 1 and "keeps no history" in r.err
    finally:
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(10)


def test_when_args_matches_typed_args_by_their_text(d: Daemon) -> None:
    import threading

    p = arpc_bg("-d", str(d.dir), "--", "when-args", "worker1", "Foo", "--arg", "job", "--val", "2",
                "--arg", "ok", "--val", "true", "--timeout", "20s")
    stop = threading.Event()

    def source() -> None:  # repeats until the command is done (bounded): it may start following at any time
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            if stop.wait(0.01) or p.poll() is not None:
                return
            d.cmd('addjson worker1 Foo {"job": 3, "ok": true}')    # not this one
            d.cmd('addjson worker1 Foo {"job": 2, "ok": true}')
            d.cmd("remove worker1 Foo")

    t = threading.Thread(target=source)
    t.start()
    try:
        out, err = p.communicate(timeout=30)
    finally:
        stop.set()
        t.join(30)
    assert p.returncode == 0, err
    assert out.strip().isdigit()
