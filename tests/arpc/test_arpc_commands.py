"""The command table through the one-shot CLI, in-process, on fixture X with local machines (spec 7, 19-40)."""

from __future__ import annotations

import _thread
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from arpc.errors import CANCELED, CONNECTION, FAILED, INTERRUPTED, OK, TIMEOUT, USAGE

# ------------------------------------------------------------------------------------------------ mutations


def test_mach_dot_on_fresh_fixture(cli):  # 19
    r = cli("mach", ".")
    assert (r.code, r.out, r.err) == (OK, "()\n", "")


def test_add_then_mach_time(cli, x):  # 20
    r = cli("add", "worker0", "Foo")
    assert (r.code, r.out) == (OK, "executed\n")
    assert x.machs["worker0"].is_active("Foo")
    assert cli("mach", "worker0").out == "(Foo:1)\n"
    assert cli("mach", "worker0", "--all").out == \
        "(Foo:1) [Exception:0 ErrOnClient:0 Bar:0 Baz:0 Start:0 Ready:0]\n"
    assert cli("time", "worker0").out == "[0 0 1 0 0 0 0]\n"
    assert cli("time", "worker0", "--sum").out == "1\n"
    assert cli("time", "worker0", "Foo", "Bar").out == "[1 0]\n"


def test_add_with_args(cli, x):  # 21
    cli("add", "worker0", "Foo")
    r = cli("add", "worker0", "Bar", "--arg", "k1", "--val", "v1", "--arg", "k2", "--val", "v2")
    assert (r.code, r.out) == (OK, "executed\n")
    assert x.seen("worker0", "Bar") == {"k1": "v1", "k2": "v2"}
    assert x.machs["worker0"].tick("Foo") == 2


def test_arg_val_mismatch_is_usage(cli, x):  # 22
    r = cli("add", "worker0", "Foo", "--arg", "k1")
    assert r.code == USAGE
    assert r.out == ""
    assert "--arg and --val" in r.err
    assert x.seen("worker0", "Foo") is None
    assert str(x.machs["worker0"]) == "()"


def test_unknown_state(cli, x):  # 23
    r = cli("add", "worker0", "Nope")
    assert (r.code, r.out, r.err) == (FAILED, "", "err> unknown state: Nope (machine worker0)\n")
    r = cli("add", "worker0", "Foo", "Nope", "Zed")
    assert r.err == "err> unknown states: Nope Zed (machine worker0)\n"
    assert str(x.machs["worker0"]) == "()"


def test_unknown_machine(cli):  # 24
    r = cli("mach", "nope")
    assert (r.code, r.out, r.err) == (FAILED, "", "err> unknown machine: nope\n")
    assert cli("add", "nope", "Foo").err == "err> unknown machine: nope\n"


def test_canceled_is_exit_4(cli, x):  # 25
    r = cli("add", "worker0", "Baz", "--arg", "deny", "--val", "1")
    assert (r.code, r.out) == (CANCELED, "canceled\n")
    assert not x.machs["worker0"].is_active("Baz")


def test_remove_set_toggle(cli, x):
    m = x.machs["worker1"]
    assert cli("add", "worker1", "Start", "Ready").code == OK
    assert cli("remove", "worker1", "Ready").out == "executed\n"
    assert str(m) == "(Start:1)"
    assert cli("set", "worker1", "Foo").out == "executed\n"
    assert str(m) == "(Foo:1)"
    assert cli("toggle", "worker1", "Foo").out == "executed\n"
    assert str(m) == "()"
    assert cli("toggle", "worker1", "Start").out == "executed\n"
    assert str(m) == "(Start:3)"
    assert cli("set", "worker1").code == OK
    assert str(m) == "()"


def test_remove_canceled(cli, x):
    class Deny:
        def StartExit(self, e):
            return False

    m = x.machs["worker2"]
    m.add("Start")
    m.bind_handlers(Deny())
    r = cli("remove", "worker2", "Start")
    assert (r.code, r.out) == (CANCELED, "canceled\n")


def test_queued_result(cli, x):
    m = x.machs["worker0"]
    out = {}

    class H:
        def FooState(self, e):
            out["q"] = m.add("Bar")  # queued: the mutation is applied after this transition

    m.bind_handlers(H())
    assert cli("add", "worker0", "Foo").out == "executed\n"
    assert out["q"] >= 2
    assert str(m) == "(Bar:1)"


def test_missing_arguments_are_usage(cli):
    for argv in (["add"], ["add", "worker0"], ["when", "worker0"], ["mach"], ["group-add"], ["script"]):
        r = cli(*argv)
        assert r.code == USAGE, argv
        assert r.err.startswith("err> ") and "Missing argument" in r.err, argv


def test_unknown_option_and_command(cli):
    r = cli("add", "worker0", "Foo", "--nope")
    assert r.code == USAGE and "No such option" in r.err
    r = cli("ad", "worker0", "Foo")
    assert r.code == USAGE and r.err == "err> unknown command: ad (did you mean add?)\n"
    r = cli("list", "-l", "x")
    assert r.code == USAGE


def test_dot_is_first_connected_by_id(cli, x):
    r = cli.raw(x.addrs[2], x.addrs[1], x.addrs[0], "--", "add", ".", "Foo")
    assert r.out == "executed\n"
    assert x.machs["worker0"].is_active("Foo")

    connector = _drop_after_listing(x, "worker0")
    r = cli.raw(*x.addrs, "--", "add", ".", "Bar", connector=connector)
    assert r.out == "executed\n"
    assert x.machs["worker1"].is_active("Bar")


# ------------------------------------------------------------------------------------------------ waiting


@contextmanager
def repeating(step: Callable[[], None], times: int = 200) -> Iterator[None]:
    """Run ``step()`` on a thread every 10 ms (at most ``times`` times) while the block runs: a command under
    test subscribes before it waits, so a single change could come before it looks; repeating needs no sleep."""
    done = threading.Event()

    def loop() -> None:
        for _ in range(times):
            if done.is_set():
                return
            step()
            done.wait(0.01)

    t = threading.Thread(target=loop)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(10)


def test_when_resolves_when_added_later(cli, x):  # 26
    m = x.machs["worker1"]
    t = threading.Thread(target=lambda: m.add("Bar"))
    t.start()
    r = cli("when", "worker1", "Bar", "--timeout", "5s")
    t.join(10)
    assert (r.code, r.out) == (OK, "1\n")


def test_when_already_active(cli, x):  # 27
    x.machs["worker1"].add("Bar")
    assert cli("when", "worker1", "Bar").out == "1\n"
    x.machs["worker1"].add("Start")
    assert cli("when", "worker1", "Bar", "Start").out == "[1 1]\n"


def test_when_timeout(cli):  # 28
    r = cli("when", "worker2", "Foo", "--timeout", "200ms")
    assert (r.code, r.out, r.err) == (TIMEOUT, "", "err> timeout\n")


def test_when_bad_timeout(cli):
    r = cli("when", "worker2", "Foo", "--timeout", "soon")
    assert r.code == USAGE and "invalid duration" in r.err


def test_when_not(cli, x):  # 29
    m = x.machs["worker0"]
    m.add("Foo")
    t = threading.Thread(target=lambda: m.add("Bar"))
    t.start()
    r = cli("when-not", "worker0", "Foo", "--timeout", "5s")
    t.join(10)
    assert (r.code, r.out) == (OK, "2\n")


def test_when_time(cli, x):  # 30
    m = x.machs["worker2"]

    def flip():
        m.add("Foo")
        m.remove("Foo")
        m.add("Foo")

    t = threading.Thread(target=flip)
    t.start()
    r = cli("when-time", "worker2", "-s", "Foo", "-t", "3", "--timeout", "5s")
    t.join(10)
    assert (r.code, r.out) == (OK, "[3]\n")
    r = cli("when-time", "worker2", "-s", "Foo", "-s", "Bar", "-t", "3")
    assert r.code == USAGE and "must be the same" in r.err
    assert cli("when-time", "worker2").err == "err> no states (-s) specified\n"
    assert cli("when-time", "worker2", "-s", "Foo", "-t", "x").code == USAGE
    assert cli("when-time", "worker2", "-s", "Nope", "-t", "1").code == FAILED


def test_when_args(cli, x):
    m = x.machs["worker2"]
    seen_no = []

    def step() -> None:
        m.add("Bar", args={"k": "no"})
        seen_no.append(m.tick("Bar"))
        m.remove("Bar")
        m.add("Bar", args={"k": "yes"})
        m.remove("Bar")

    with repeating(step, times=500):
        r = cli("when-args", "worker2", "Bar", "--arg", "k", "--val", "yes", "--timeout", "5s")
    assert r.code == OK
    tick = int(r.out)
    assert tick >= 2 and tick not in seen_no
    r = cli("when-args", "worker2", "Foo", "--arg", "k", "--val", "x", "--timeout", "100ms")
    assert r.code == TIMEOUT


def test_when_unknown_state(cli):
    r = cli("when", "worker0", "Nope")
    assert (r.code, r.err) == (FAILED, "err> unknown state: Nope (machine worker0)\n")


def test_when_interrupted(cli):
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    try:
        r = cli("when", "worker2", "Foo")
    finally:
        timer.cancel()
    assert (r.code, r.err) == (INTERRUPTED, "err> interrupted\n")


# ------------------------------------------------------------------------------------------------ groups


def test_group_add_and_remove(cli, x):  # 31
    r = cli("group-add", "-r", "worker[01]", "Baz")
    assert (r.code, r.lines) == (OK, ["Executed: 2", "Queued: 0", "Canceled: 0"])
    assert x.machs["worker0"].is_active("Baz") and x.machs["worker1"].is_active("Baz")
    assert str(x.machs["worker2"]) == "()"
    r = cli("group-remove", "-p", "worker", "Baz")
    assert (r.code, r.lines) == (OK, ["Executed: 3", "Queued: 0", "Canceled: 0"])
    assert not any(m.is_active("Baz") for m in x.machs.values())


def test_group_no_match(cli):  # 32
    r = cli("group-add", "-s", "zzz", "Foo")
    assert (r.code, r.err) == (FAILED, "err> no matching machines\n")
    assert cli("group-add", "Nope").code == FAILED


def test_group_canceled_counts(cli):
    r = cli("group-add", "Baz", "--arg", "deny", "--val", "1")
    assert (r.code, r.lines) == (CANCELED, ["Executed: 0", "Queued: 0", "Canceled: 3"])


def test_group_filters(cli, x):
    x.machs["worker1"].add("Start", "Ready")
    r = cli("group-add", "-a", "Ready", "Foo")
    assert r.lines[0] == "Executed: 1"
    assert x.machs["worker1"].is_active("Foo") and not x.machs["worker0"].is_active("Foo")
    r = cli("group-add", "-i", "Foo", "-l", "1", "Bar")
    assert r.lines[0] == "Executed: 1"
    assert x.machs["worker0"].is_active("Bar") and not x.machs["worker2"].is_active("Bar")
    assert cli("group-add", "-P", "daemon", "-I", "er2", "Baz").lines[0] == "Executed: 1"
    assert cli("group-add", "-P", "other", "Baz").code == FAILED
    assert cli("group-add", "-r", "(", "Baz").code == USAGE


# ------------------------------------------------------------------------------------------------ checking


def test_list(cli, x):  # 33
    x.machs["worker0"].add("Foo")
    r = cli("list")
    assert (r.code, r.lines) == (OK, ["1. worker0 t1", "   C: (Foo:1)", "2. worker1 t0", "   C: ()",
                                      "3. worker2 t0", "   C: ()"])
    x.machs["worker1"].add("Start", "Ready")
    x.machs["worker2"].add("Start")
    r = cli("list")
    assert r.lines[3] == "   CR: (Start:1 Ready:1)"
    assert r.lines[5] == "   CS: (Start:1)"


def test_list_filters(cli, x):  # 34
    x.machs["worker0"].add("Foo")
    ids = lambda r: [ln.split()[1] for ln in r.lines[::2]]  # noqa: E731
    assert ids(cli("list", "-a", "Foo")) == ["worker0"]
    assert ids(cli("list", "-i", "Foo")) == ["worker1", "worker2"]
    assert ids(cli("list", "-t", "1")) == ["worker0"]
    assert ids(cli("list", "-T", "0")) == ["worker1", "worker2"]
    assert ids(cli("list", "-m", "Bar", "-t", "1")) == []
    r = cli("list", "-l", "1", "-f", "1")
    assert r.lines == ["1. worker1 t0", "   C: ()"]
    # no empty rows
    assert cli("list", "--states=false").lines == ["1. worker0 t1 C", "2. worker1 t0 C", "3. worker2 t0 C"]
    assert cli("list", "-Z").lines[1] == "   C: (Foo:1) [Exception:0 ErrOnClient:0 Bar:0 Baz:0 Start:0 Ready:0]"
    assert ids(cli("list", "-s", "2")) == ["worker2"]
    assert ids(cli("list", "-r", "^worker[12]$")) == ["worker1", "worker2"]
    assert ids(cli("list", "-P", "daemon", "-p", "worker")) == ["worker0", "worker1", "worker2"]
    assert cli("list", "-a", "Nope").lines == []


def _drop_after_listing(x, suffix):
    """A connector whose connection to ``...suffix`` drops right after the session listed its machines."""

    def connector(addr, timeout):
        c = x.net.connect(addr, timeout)
        if addr.endswith(suffix):
            listing = c.machines

            def machines():
                out = listing()
                c.set_connected(False)
                return out

            c.machines = machines
        return c

    return connector


def test_list_disconnected(cli, x):
    connector = _drop_after_listing(x, "worker1")

    r = cli.raw(*x.addrs, "--", "list", connector=connector)
    assert r.lines[3] == "   D: ()"
    r = cli.raw(*x.addrs, "--", "list", "--disconn=false", connector=connector)
    assert [ln.split()[1] for ln in r.lines[::2]] == ["worker0", "worker2"]
    r = cli.raw(*x.addrs, "--", "add", "worker1", "Foo", connector=connector)
    assert r.code == CONNECTION
    assert r.err == "err> partial connection (2/3), executing\nerr> machine worker1 not connected\n"
    assert not x.machs["worker1"].is_active("Foo")
    r = cli.raw(*x.addrs, "--", "mach", "worker1", connector=connector)
    assert (r.code, r.out) == (OK, "()\n")  # last known state


def test_status(cli):  # 35
    r = cli("status")
    assert r.lines == ["Connected:      3", "Connecting:     0", "Disconnected:   0", "Total:          3"]


def test_inspect(cli, x):  # 36
    x.machs["worker0"].add("Foo")
    r = cli("inspect", "worker0")
    assert r.code == OK
    assert r.lines[:2] == ["mach://worker0", ""]
    i = r.lines.index("1 Foo")
    assert r.lines[i + 1] == "    |Tick     1"
    # DESIGN: a relation naming the state itself is dropped (spec scenario 36 shows `Foo Bar Baz`)
    assert r.lines[i + 2] in ("    |Remove   Bar Baz", "    |Remove   Foo Bar Baz")
    j = r.lines.index("0 Ready")
    assert r.lines[j + 1:j + 3] == ["    |Tick     0", "    |Require  Start"]
    assert "\n".join(r.lines[2:]) == x.machs["worker0"].inspect().rstrip("\n")
    r = cli("inspect", "worker0", "Ready")
    assert r.lines == ["mach://worker0", "", "0 Ready", "    |Tick     0", "    |Require  Start"]
    assert cli("inspect", "worker0", "Nope").code == FAILED


# ------------------------------------------------------------------------------------------------ connections


def test_not_connected(cli):  # 37
    r = cli.raw("local://dead", "--", "mach", ".")
    assert (r.code, r.out, r.err) == (CONNECTION, "", "err> cannot connect to local://dead\n")


def test_partial_connection(cli, x):  # 37
    r = cli.raw(*x.addrs, "local://dead", "--", "mach", ".")
    assert (r.code, r.out) == (OK, "()\n")
    assert r.err == "err> partial connection (3/4), executing\n"
    r = cli.raw("--req-all", *x.addrs, "local://dead", "--", "mach", ".")
    assert (r.code, r.out) == (CONNECTION, "")
    assert r.err == "err> partial connection (3/4) and --req-all\n"


def test_addr_dir(cli, x, tmp_path):  # 38 + dir loading
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli.raw("-d", str(empty), "--", "list")
    assert (r.code, r.err) == (FAILED, f"err> no .addr files found in {empty}\n")
    r = cli.raw("-d", str(empty), "-f", "x", "--", "list")
    assert r.code == USAGE
    d = tmp_path / "addrs"
    d.mkdir()
    for a in x.addrs:
        (d / f"{a.split('//')[1]}.addr").write_text(f"  {a}\n")
    (d / "dup.addr").write_text(x.addrs[0])
    (d / "other.txt").write_text("local://dead")
    seen = []

    def connector(addr, timeout):
        seen.append(addr)
        return x.net.connect(addr, timeout)

    r = cli.raw("-d", str(d), "--", "list", connector=connector)
    assert r.code == OK and len(r.lines) == 6
    assert sorted(seen) == sorted(x.addrs)  # the repeated address is connected once
    r = cli.raw("-f", str(d / "worker1.addr"), "--", "list")
    assert r.lines == ["1. worker1 t0", "   C: ()"]
    r = cli.raw("-d", str(tmp_path / "missing"), "--", "list")
    assert (r.code, r.err) == (FAILED, f"err> no such directory: {tmp_path / 'missing'}\n")
    (empty / "bad.addr").write_text("  \n")
    assert cli.raw("-d", str(empty), "--", "list").code == FAILED


def test_no_address(cli):
    r = cli.raw("--", "mach", ".")
    assert r.code == USAGE and "no address given" in r.err
    assert cli.raw("--", "help").code == OK  # help needs no connection


def test_help_does_not_connect(cli, x):
    calls = []

    def connector(addr, timeout):
        calls.append(addr)
        raise ConnectionError("no")

    assert cli.raw("local://x", "--", "help", connector=connector).code == OK
    assert cli.raw("local://x", "--", "add", "--help", connector=connector).code == OK
    assert cli.raw("local://x", "--", "add", "w", "Foo", "--arg", "a", connector=connector).code == USAGE
    assert calls == []


# ------------------------------------------------------------------------------------------------ script


def test_script(cli, x, tmp_path):  # 40
    f = tmp_path / "s.arpc"
    f.write_text("add worker2 Foo\n# a comment\n\nwhen worker2 Foo\nadd worker2 Nope\nadd worker2 Bar\n")
    r = cli("script", str(f))
    assert (r.code, r.out) == (FAILED, "executed\n1\n")
    assert r.err == f"err> {f}:5: unknown state: Nope (machine worker2)\n"  # FILE:LINE of the failing line
    assert not x.machs["worker2"].is_active("Bar")
    r = cli("script", "--keep-going", str(f))
    assert r.code == FAILED
    assert x.machs["worker2"].is_active("Bar")


def test_script_exit_codes(cli, x, tmp_path):
    f = tmp_path / "s.arpc"
    f.write_text("when worker1 Foo --timeout 50ms\nadd worker1 Bar\n")
    assert cli("script", str(f)).code == TIMEOUT
    assert not x.machs["worker1"].is_active("Bar")
    f.write_text("add worker1 Baz --arg deny --val 1\n")
    assert cli("script", str(f)).code == CANCELED
    f.write_text("add worker1 'Bar\n")
    assert cli("script", str(f)).code == USAGE
    f.write_text(f"add worker1 Bar\nexit\nadd worker1 Foo\nscript {f}\n")
    assert cli("script", str(f)).code == OK
    assert x.machs["worker1"].is_active("Bar")
    r = cli("script", str(tmp_path / "missing"))
    assert r.code == FAILED and "cannot read script" in r.err


def test_script_recursion_is_bounded(cli, tmp_path):
    f = tmp_path / "loop.arpc"
    f.write_text(f"script {f}\n")
    r = cli("script", str(f))
    assert r.code == FAILED and "nested too deep" in r.err


# ------------------------------------------------------------------------------------------------ json


def test_json_output(cli, x):
    j = lambda r: [json.loads(ln) for ln in r.lines]  # noqa: E731
    r = cli("--json", "--", "add", "worker0", "Foo")
    assert j(r) == [{"machine": "worker0", "result": "executed"}]
    r = cli("--json", "--", "mach", "worker0")
    d = j(r)[0]
    assert d["machine"] == "worker0" and d["active"] == ["Foo"] and d["clock"]["Foo"] == 1
    r = cli("--json", "--", "time", "worker0", "--sum")
    assert j(r)[0]["sum"] == 1 and j(r)[0]["clock"]["Foo"] == 1
    r = cli("--json", "--", "when", "worker0", "Foo")
    assert j(r) == [{"machine": "worker0", "clock": {"Foo": 1}}]
    r = cli("--json", "--", "list")
    lst = j(r)[0]
    assert [m["machine"] for m in lst] == ["worker0", "worker1", "worker2"]
    assert lst[0]["parent_id"] == "daemon" and lst[0]["connected"] is True and lst[0]["time_sum"] == 1
    r = cli("--json", "--", "status")
    assert j(r) == [{"connected": 3, "connecting": 0, "disconnected": 0, "total": 3}]
    r = cli("--json", "--", "group-add", "Bar")
    assert j(r)[0]["executed"] == 3 and j(r)[0]["machines"]["worker1"] == "executed"
    r = cli("--json", "--", "inspect", "worker0", "Ready")
    assert j(r)[0]["states"] == [{"name": "Ready", "active": False, "tick": 0, "auto": False, "multi": False,
                                  "add": [], "require": ["Start"], "remove": [], "after": []}]
    r = cli("--json", "--", "add", "worker0", "Nope")
    assert r.code == FAILED and r.out == ""
    assert json.loads(r.err) == {"error": "unknown state: Nope (machine worker0)", "type": "UnknownState",
                                 "code": 1}
    r = cli("--json", "--", "add", "worker0", "Baz", "--arg", "deny", "--val", "1")
    assert r.code == CANCELED and j(r) == [{"machine": "worker0", "result": "canceled"}]


# ------------------------------------------------------------------------------------------------ watch


def test_watch_count(cli, x):
    m = x.machs["worker1"]
    with repeating(lambda: m.toggle("Foo", args={"k": "v"})):
        r = cli("watch", "worker1", "-n", "2", "--duration", "10s")
    assert r.code == OK
    assert len(r.lines) == 2
    first = r.lines[0].split()
    assert first[1] == "worker1"
    assert first[2] in ("+Foo", "-Foo")
    assert "(k=v)" in r.lines[0]


def test_watch_duration_and_filters(cli, x):
    r = cli("watch", "--duration", "50ms")
    assert (r.code, r.out) == (OK, "")
    assert cli("watch", "-s", "zzz", "--duration", "10ms").code == FAILED


def test_watch_json(cli, x):
    m = x.machs["worker2"]

    def step() -> None:
        m.add("Bar")
        m.remove("Bar")

    with repeating(step):
        r = cli("--json", "--", "watch", "-P", "daemon", "-n", "1", "--duration", "10s")
    d = json.loads(r.lines[0])
    assert d["machine"] == "worker2"
    assert d["added"] == ["Bar"] or d["removed"] == ["Bar"]
    assert len(d["time"]) == 7


# ------------------------------------------------------------------------------------------------ misc


def test_help_and_cheatsheet(cli):
    r = cli("help")
    assert r.code == OK
    for group in ("Mutations:", "Waiting:", "Checking:", "REPL:"):
        assert group in r.lines
    for name in ("add", "group-remove", "when-args", "watch", "script", "connect"):
        assert any(ln.split()[:1] == [name] for ln in r.lines), name
    r = cli("help", "when")
    assert r.code == OK and "--timeout" in r.out
    assert cli("help", "nope").code == USAGE
    r = cli("cheatsheet")
    assert r.code == OK and any(ln.startswith("add MACH") for ln in r.lines)
    assert cli("exit").code == OK


def test_root_options(cli):
    assert cli.raw("--version").code == OK
    r = cli.raw("--help")
    assert r.code == OK and "Usage: arpc" in r.out
    r = cli.raw("--bogus")
    assert r.code == USAGE and "No such option" in r.err
    r = cli.raw("local://x", "--")
    assert r.code == USAGE and "missing command" in r.err


@pytest.mark.parametrize("argv", [["add", "worker0", "'unclosed"], ["mach", "--all", "--all", "worker0"]])
def test_odd_input_never_crashes(cli, argv):
    r = cli(*argv)
    assert r.code in (OK, FAILED, USAGE)
    assert "Traceback" not in r.err


def test_repl_without_address_is_usage(cli):
    r = cli.raw()
    assert r.code == USAGE and "no address given" in r.err


def test_diagram(cli, x):
    x.machs["worker0"].add("Start", "Ready")
    r = cli("diagram", "worker0")
    assert r.code == OK
    assert r.lines[0] == "flowchart LR"
    assert any("-->|require|" in line for line in r.lines)  # Ready requires Start
    assert r.lines[-1].startswith("    class ") and r.lines[-1].endswith(" active")
    assert cli("diagram", "nope").code == 1


# ------------------------------------------------------------------------------------------------ issue 15


def test_connect_does_not_keep_an_address_that_fails(cli, x, tmp_path):
    f = tmp_path / "s.arpc"
    f.write_text("connect local://nobody\nconnect\n")
    r = cli("script", "--keep-going", str(f))
    assert r.code == CONNECTION
    assert r.err == f"err> {f}:1: cannot connect to local://nobody\n"
    assert "local://nobody" not in r.out  # `connect` alone lists the three X addresses only
    assert [ln for ln in r.lines if ln.startswith("local://")] == [
        f"local://worker{i}: connected, 1 machine" for i in range(3)]
    f.write_text("connect nobody\n")
    r = cli("script", str(f))
    assert r.code == USAGE and r.err.startswith(f"err> {f}:1: invalid address: 'nobody': no port")


def test_script_errors_name_file_and_line(cli, tmp_path):
    inner, outer = tmp_path / "inner.arpc", tmp_path / "outer.arpc"
    inner.write_text("# setup\nmach worker0\nfrobnicate\n")
    outer.write_text(f"script {inner}\n")
    r = cli("script", str(outer))
    assert r.code == USAGE
    assert r.err == f"err> {inner}:3: unknown command: frobnicate\n"


def test_list_with_a_state_no_machine_has_is_an_error(cli):
    for flag in ("-a", "-i", "-m"):
        r = cli("list", flag, "Nope")
        assert (r.code, r.out, r.err) == (FAILED, "", "err> unknown state in a filter: Nope (no machine has it)\n")
    assert cli("group-add", "Foo", "-a", "Nope").code == FAILED
    assert cli("list", "-a", "Foo").code == OK  # a known state that no machine has active: an empty listing


def test_diagram_is_pasteable_and_written_with_o(cli, x, tmp_path, capsys):
    r = cli("diagram", "worker0")
    out = tmp_path / "d.mmd"
    w = cli("diagram", "worker0", "-o", str(out))
    assert (w.code, w.out) == (OK, f"wrote {out}\n")
    assert out.read_text() == r.out
    from arpc.commands import Cx, dispatch
    from arpc.format import Printer
    from arpc.session import Session

    with Session(connector=x.net.connect) as s:
        s.load(x.addrs)
        capsys.readouterr()
        assert dispatch(Cx(s, Printer(repl=True), repl=True), ["diagram", "worker0"]) == OK
        assert capsys.readouterr().out == r.out  # the REPL prints it as is: no "=> " to strip before pasting


def test_commands_are_case_insensitive_and_quit_exits(cli, x, tmp_path):
    assert cli("MACH", "worker0").out == "()\n"
    assert cli("Add", "worker0", "Foo").out == "executed\n"
    assert cli("HELP", "When").code == OK
    f = tmp_path / "s.arpc"
    for word in ("quit", "QUIT", "\\q", "exit"):
        f.write_text(f"add worker1 Foo\n{word}\nadd worker1 Bar\n")
        assert cli("script", str(f)).code == OK
        assert x.machs["worker1"].is_active("Foo") and not x.machs["worker1"].is_active("Bar"), word
    r = cli("lst")
    assert (r.code, r.err) == (USAGE, "err> unknown command: lst (did you mean list?)\n")


def test_semicolon_runs_several_commands(cli, x, tmp_path):
    f = tmp_path / "s.arpc"
    f.write_text("add worker2 Foo; mach worker2 ;when worker2 Foo # a comment; add worker2 Bar\n"
                 "add worker2 Bar --arg note --val 'a;b' --arg n --val \"x;\\\"y\"\n")
    r = cli("script", str(f))
    assert (r.code, r.lines) == (OK, ["executed", "(Foo:1)", "1", "executed"])
    assert x.seen("worker2", "Bar") == {"note": "a;b", "n": 'x;"y'}  # a ';' in quotes is text
    f.write_text("mach nope; mach worker2\n")  # both run, as in a shell; the code is the first failure's
    r = cli("script", str(f))
    assert (r.code, r.out) == (FAILED, "(Bar:1)\n")  # Bar removed Foo


def test_completion_is_a_command_too(cli):
    r = cli.raw("--", "completion", "bash")  # needs no address
    assert r.code == OK and r.out.startswith("# arpc completion for bash") and "complete -o filenames" in r.out
    r = cli.raw("--", "completion", "tcsh")
    assert r.code == USAGE and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in r.err
