"""End to end: the fixture daemon (fixture X, transport + addr_dir) and the CLI, both as subprocesses.

Spec section 7, scenarios 19-40; every command and every exit code (0 1 2 3 4 124 130).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from arpc_e2e import Daemon, arpc, arpc_bg, transport_works, until

pytestmark = pytest.mark.skipif(not transport_works(), reason="transport not available")


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path / "addrs")
    yield d
    d.stop()


def cli(d: Daemon, *argv: str, **kw):
    """``arpc -d DIR -- ARGV``; a generous connect timeout, so a busy machine does not fail a live daemon."""
    return arpc("--connect-timeout", "5", "-d", str(d.dir), "--", *argv, **kw)



@contextmanager
def waiting(daemon: Daemon, mach: str, *argv: str) -> Iterator[subprocess.Popen[str]]:
    """``arpc ARGV`` in the background, handed over once its client is connected to MACH; killed at the end."""
    w = arpc_bg(*argv)
    try:
        until(lambda: int(daemon.cmd(f"sessions {mach}")) >= 1, what=f"the arpc client connected to {mach}")
        yield w
    finally:
        w.kill()
        w.wait(10)

def test_mutations_and_reads(daemon):  # 19-25
    r = cli(daemon, "mach", ".")
    assert (r.code, r.out, r.err) == (0, "()\n", "")
    r = cli(daemon, "add", "worker0", "Foo")
    assert (r.code, r.out) == (0, "executed\n")
    assert cli(daemon, "mach", "worker0").out == "(Foo:1)\n"
    assert cli(daemon, "mach", "worker0", "--all").out == \
        "(Foo:1) [Exception:0 ErrOnClient:0 Bar:0 Baz:0 Start:0 Ready:0]\n"
    assert cli(daemon, "time", "worker0").out == "[0 0 1 0 0 0 0]\n"
    assert cli(daemon, "time", "worker0", "--sum").out == "1\n"
    # 21
    r = cli(daemon, "add", "worker0", "Bar", "--arg", "k1", "--val", "v1", "--arg", "k2", "--val", "v2")
    assert (r.code, r.out) == (0, "executed\n")
    assert json.loads(daemon.cmd("args worker0 Bar")) == {"k1": "v1", "k2": "v2"}
    assert cli(daemon, "mach", "worker0", "--all").out.startswith("(Bar:1) [")
    assert "Foo:2" in cli(daemon, "mach", "worker0", "--all").out
    # 22
    r = cli(daemon, "add", "worker0", "Foo", "--arg", "k1")
    assert r.code == 2 and r.out == "" and "--arg and --val" in r.err
    # 23, 24
    r = cli(daemon, "add", "worker0", "Nope")
    assert (r.code, r.err) == (1, "err> unknown state: Nope (machine worker0)\n")
    r = cli(daemon, "mach", "nope")
    assert (r.code, r.err) == (1, "err> unknown machine: nope\n")
    # 25
    r = cli(daemon, "add", "worker0", "Baz", "--arg", "deny", "--val", "1")
    assert (r.code, r.out) == (4, "canceled: BazEnter returned False\n")  # issue 13: a canceled mutation says why
    # remove / set / toggle
    assert cli(daemon, "remove", "worker0", "Bar").out == "executed\n"
    assert cli(daemon, "set", "worker0", "Start", "Ready").out == "executed\n"
    assert cli(daemon, "toggle", "worker0", "Ready").out == "executed\n"
    assert cli(daemon, "mach", "worker0").out == "(Start:1)\n"


def test_waits(daemon):  # 26-30
    with waiting(daemon, "worker1", "-f", str(daemon.dir / "worker1.addr"), "--",
                 "when", "worker1", "Bar", "--timeout", "10s") as w:
        t0 = time.monotonic()
        assert cli(daemon, "add", "worker1", "Bar").code == 0
        out, err = w.communicate(timeout=10)
        assert (w.returncode, out, err) == (0, "1\n", "")
        assert time.monotonic() - t0 < 5
    # 27
    assert cli(daemon, "when", "worker1", "Bar").out == "1\n"
    # 28
    t0 = time.monotonic()
    r = cli(daemon, "when", "worker2", "Foo", "--timeout", "1s")
    assert (r.code, r.out, r.err) == (124, "", "err> timeout\n")
    assert time.monotonic() - t0 >= 1.0
    # 29
    daemon.cmd("add worker0 Foo")
    with waiting(daemon, "worker0", "-d", str(daemon.dir), "--", "when-not", "worker0", "Foo", "--timeout", "10s") as w:
        daemon.cmd("add worker0 Bar")
        out, err = w.communicate(timeout=10)
        assert (w.returncode, out) == (0, "2\n")
    # 30
    with waiting(daemon, "worker2", "-d", str(daemon.dir), "--",
                 "when-time", "worker2", "-s", "Foo", "-t", "3", "--timeout", "10s") as w:
        daemon.cmd("add worker2 Foo")
        daemon.cmd("remove worker2 Foo")
        daemon.cmd("add worker2 Foo")
        out, err = w.communicate(timeout=10)
        assert (w.returncode, out) == (0, "[3]\n")
    r = cli(daemon, "when-time", "worker2", "-s", "Foo", "-s", "Bar", "-t", "3")
    assert r.code == 2
    # when-args, evaluated on the server
    with waiting(daemon, "worker2", "-d", str(daemon.dir), "--",
                 "when-args", "worker2", "Bar", "--arg", "k", "--val", "v", "--timeout", "10s") as w:
        deadline = time.monotonic() + 8
        while w.poll() is None and time.monotonic() < deadline:  # the server-side waiter needs a new activation
            cli(daemon, "add", "worker2", "Bar", "--arg", "k", "--val", "v")
            cli(daemon, "remove", "worker2", "Bar")
        out, err = w.communicate(timeout=10)
        assert w.returncode == 0, err
        assert int(out) % 2 == 1


def test_sigint_during_wait(daemon):  # 130
    with waiting(daemon, "worker2", "-f", str(daemon.dir / "worker2.addr"), "--", "when", "worker2", "Foo") as w:
        w.send_signal(signal.SIGINT)
        out, err = w.communicate(timeout=10)
        assert (w.returncode, out, err) == (130, "", "err> interrupted\n")


def test_groups_list_status_inspect(daemon):  # 31-36
    r = cli(daemon, "group-add", "-r", "worker[01]", "Baz")
    assert (r.code, r.lines) == (0, ["Executed: 2", "Queued: 0", "Canceled: 0"])
    assert cli(daemon, "mach", "worker2").out == "()\n"
    r = cli(daemon, "group-remove", "-p", "worker", "Baz")
    assert r.code == 0 and r.lines[0] == "Executed: 3"
    assert cli(daemon, "mach", "worker0").out == "()\n"
    r = cli(daemon, "group-add", "-s", "zzz", "Foo")
    assert (r.code, r.err) == (1, "err> no matching machines\n")
    r = cli(daemon, "group-add", "Baz", "--arg", "deny", "--val", "1")
    assert (r.code, r.lines) == (4, ["Executed: 0", "Queued: 0", "Canceled: 3"])
    # 33
    daemon.cmd("set worker0 Foo")
    r = cli(daemon, "list")
    assert r.lines == ["1. worker0 t3", "   C: (Foo:1)", "2. worker1 t2", "   C: ()", "3. worker2 t0", "   C: ()"]
    daemon.cmd("add worker1 Start Ready")
    daemon.cmd("add worker2 Start")
    r = cli(daemon, "list")
    assert (r.lines[3], r.lines[5]) == ("   CR: (Start:1 Ready:1)", "   CS: (Start:1)")
    # 34
    ids = lambda r: [ln.split()[1] for ln in r.lines[::2]]  # noqa: E731
    assert ids(cli(daemon, "list", "-a", "Foo")) == ["worker0"]
    assert ids(cli(daemon, "list", "-i", "Foo")) == ["worker1", "worker2"]
    assert ids(cli(daemon, "list", "-l", "1", "-f", "1")) == ["worker1"]
    assert cli(daemon, "list", "-l", "1", "-f", "1").lines[0].startswith("1. worker1")
    assert [ln.split()[1] for ln in cli(daemon, "list", "--states=false").lines] == ["worker0", "worker1", "worker2"]
    assert cli(daemon, "list", "-Z").lines[1].startswith("   C: (Foo:1) [Exception:0")
    # 35
    assert cli(daemon, "status").lines == ["Connected:      3", "Connecting:     0", "Disconnected:   0",
                                           "Total:          3"]
    # 36
    r = cli(daemon, "inspect", "worker0")
    assert r.lines[:2] == ["mach://worker0", ""]
    i = r.lines.index("1 Foo")
    assert r.lines[i + 1] == "    |Tick     1"
    assert r.lines[i + 2].startswith("    |Remove   ")
    j = r.lines.index("1 Ready") if "1 Ready" in r.lines else r.lines.index("0 Ready")
    assert "    |Require  Start" in r.lines[j + 1:j + 3]


def test_connection_errors(daemon, tmp_path):  # 37, 38
    t0 = time.monotonic()
    r = arpc("127.0.0.1:1", "--", "mach", ".")
    assert (r.code, r.out, r.err) == (3, "", "err> cannot connect to tcp://127.0.0.1:1: connection refused (nothing "
                                             "listens on port 1)\n")
    # the default hello timeout (2 s) and a cold start, which takes seconds on a loaded box: the bound catches a
    # hang or a retry loop, not a slow start
    assert time.monotonic() - t0 < 15
    (daemon.dir / "zzdead.addr").write_text("127.0.0.1:1\n")
    # the live daemons must answer within the timeout even on a starved box (0.3 s did not); the dead one waits
    # for all of it, as any hello that is never answered does
    r = arpc("--connect-timeout", "3", "-d", str(daemon.dir), "--", "mach", ".")
    assert (r.code, r.out) == (0, "()\n")
    assert r.err == "err> partial connection (3/4), executing\n"
    r = arpc("--connect-timeout", "3", "--req-all", "-d", str(daemon.dir), "--", "mach", ".")  # (0.3: none up)
    assert r.code == 3 and "--req-all" in r.err
    empty = tmp_path / "empty"
    empty.mkdir()
    r = arpc("-d", str(empty), "--", "list")
    assert (r.code, r.err) == (1, f"err> no .addr files found in {empty}\n")
    assert arpc("-d", str(empty), "-f", "x", "--", "list").code == 2
    r = arpc("--connect-timeout", "5", "-f", str(daemon.dir / "worker1.addr"), "--", "mach", ".")
    assert (r.code, r.out) == (0, "()\n")


def test_script(daemon, tmp_path):  # 40
    f = tmp_path / "s.arpc"
    f.write_text("add worker2 Foo\n# a comment\nwhen worker2 Foo\nadd worker2 Nope\nadd worker2 Bar\n")
    r = cli(daemon, "script", str(f))
    assert (r.code, r.out, r.err) == (1, "executed\n1\n", f"err> {f}:4: unknown state: Nope (machine worker2)\n")
    assert cli(daemon, "mach", "worker2").out == "(Foo:1)\n"


def test_json_and_misc(daemon):
    r = arpc("--json", "-d", str(daemon.dir), "--", "add", "worker0", "Foo")
    assert json.loads(r.out) == {"machine": "worker0", "result": "executed"}
    r = arpc("--json", "-d", str(daemon.dir), "--", "list")
    assert [m["machine"] for m in json.loads(r.out)] == ["worker0", "worker1", "worker2"]
    r = arpc("--json", "-d", str(daemon.dir), "--", "mach", "nope")
    assert r.code == 1 and json.loads(r.err)["type"] == "UnknownMachine"
    r = cli(daemon, "help")
    assert r.code == 0 and "Mutations:" in r.lines
    assert cli(daemon, "cheatsheet").code == 0
    assert cli(daemon, "nope").code == 2
    assert arpc("--version").out.startswith("arpc ")


def test_watch(daemon):
    with waiting(daemon, "worker1", "-f", str(daemon.dir / "worker1.addr"), "--",
                 "watch", "worker1", "-n", "2", "--duration", "10s") as w:
        deadline = time.monotonic() + 8
        while w.poll() is None and time.monotonic() < deadline:
            daemon.cmd("add worker1 Foo")
            daemon.cmd("remove worker1 Foo")
        out, err = w.communicate(timeout=10)
        assert w.returncode == 0, err
        lines = out.splitlines()
        assert len(lines) == 2
        assert all(ln.split()[1] == "worker1" for ln in lines)
        assert any("+Foo" in ln or "-Foo" in ln for ln in lines)


def test_hub(tmp_path):  # 45 (CLI part): three machines behind one address
    d = Daemon(tmp_path / "hub", "--hub")
    try:
        addrs = {p.read_text().strip() for p in d.dir.glob("*.addr")}
        assert len(addrs) == 1
        r = arpc(addrs.pop(), "--", "list")
        assert [ln.split()[1] for ln in r.lines[::2]] == ["worker0", "worker1", "worker2"]
        r = arpc("-d", str(d.dir), "--", "add", ".", "Foo")
        assert r.out == "executed\n"
        assert arpc("-d", str(d.dir), "--", "mach", "worker0").out == "(Foo:1)\n"
    finally:
        d.stop()


def test_demo_one_shot():
    r = arpc("demo", "--", "list", "-p", "expense")
    assert r.code == 0, r.err
    assert [ln.split()[1] for ln in r.lines[::2]] == ["expense-1", "expense-2", "expense-3"]
    assert all(ln.startswith("   CR: (Start:1 Ready:1") for ln in r.lines[1::2])


def test_dead_machine_in_process(capsys):
    """A machine disposed on the server: a one-line error naming it, exit 1, the other machines untouched."""
    from arpc.commands import Cx, dispatch
    from arpc.format import Printer
    from arpc.session import Session
    from machine import Machine, State
    from transport import expose

    schema = {"Foo": State(), "Start": State()}
    m0, m1 = Machine(schema, id="w0"), Machine(schema, id="w1")
    ep = expose([m0, m1])
    s = Session(eager=True)
    try:
        s.load([ep.address])
        s.open()
        cx = Cx(s, Printer())
        m1.dispose()
        capsys.readouterr()
        assert dispatch(cx, ["add", "w1", "Foo"]) == 1
        assert capsys.readouterr().err == "err> unknown machine: w1\n"
        assert dispatch(cx, ["add", "w0", "Foo"]) == 0
        assert m0.is_active("Foo")
    finally:
        s.close()
        ep.stop()
        m0.dispose()
