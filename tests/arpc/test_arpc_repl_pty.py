"""The REPL in a real pseudo-terminal (pexpect): spec section 7, scenarios 41-45.

Local runs use ``arpc_fixture.py`` (fixture X with in-process machines); the e2e ones use the fixture daemon.
"""

from __future__ import annotations

import json
import os
import re
import sys

import pexpect
import pytest
from arpc_e2e import HERE, ROOT, Daemon, env, transport_works

PROMPT = "arpc> "
GREEN, YELLOW, RED = (re.escape(f"\x1b[0;{c};1m{PROMPT}") for c in (32, 33, 31))
ERR = r"err>(?:\x1b\[[0-9;]*m)* "  # coloured or not
RESULT = r"=>(?:\x1b\[[0-9;]*m)* "  # coloured or not


def spawn(args, tmp_path, **extra):
    e = env(PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", ARPC_HISTORY=str(tmp_path / "history"),
            ARPC_EDITING_MODE="emacs", INPUTRC=os.devnull)
    e.update(extra)
    p = pexpect.spawn(sys.executable, args, env=e, encoding="utf-8", timeout=10, dimensions=(40, 160),
                      cwd=str(ROOT))
    return p


def local(tmp_path, *args, **extra):
    extra.setdefault("NO_COLOR", "1")
    return spawn([str(HERE / "arpc_fixture.py"), *args], tmp_path, **extra)


def enter(p, line, *expect):
    p.sendline(line)
    for e in expect:
        p.expect(e)
    p.expect(PROMPT)


def finish(p, code=0):
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == code


def test_banner_help_exit_history(tmp_path):  # 41
    p = local(tmp_path)
    p.expect_exact("Welcome to aRPC! Tab to start, help, or Ctrl+D to exit.")
    p.expect(PROMPT)
    enter(p, "help", "Mutations:", "Waiting:", "Checking:", "REPL:")
    enter(p, "mach .", r"=> \(\)")
    enter(p, "mach .")
    enter(p, "add worker0 Nope", re.escape("err> unknown state: Nope (machine worker0)"))
    enter(p, "nonsense 'x", "err> ")  # a bad line never kills the REPL
    enter(p, "mach worker0 --all", re.escape("() [Exception:0 ErrOnClient:0"))
    p.sendline("exit")
    finish(p, 0)
    rows = [json.loads(ln) for ln in (tmp_path / "history").read_text().splitlines()]
    assert [r["block"] for r in rows] == ["help", "mach .", "add worker0 Nope", "nonsense 'x", "mach worker0 --all",
                                          "exit"]
    assert all("datetime" in r for r in rows)


def test_ctrl_d_exits_zero(tmp_path):  # 41
    p = local(tmp_path)
    p.expect(PROMPT)
    p.sendeof()
    finish(p, 0)


def test_completion(tmp_path):  # 42
    p = local(tmp_path, "--active", "worker0=Foo")
    p.expect(PROMPT)
    p.send("add worker0 \t")
    p.expect("Ready")
    menu = p.before + p.after
    for s in ("Exception", "ErrOnClient", "Bar", "Baz", "Start"):
        assert s in menu
    assert "Foo" not in menu
    p.send("\x15")  # Ctrl+U: clear the line
    p.send("remove worker0 \t")  # one candidate: inserted
    p.expect("Foo")
    enter(p, "", "executed")
    p.send("add worker0 Bar --arg x \t")
    p.expect("--val")
    p.send(" y\r")
    p.expect("executed")
    p.expect(PROMPT)
    p.send("when-n\t")
    p.expect("when-not")
    p.send("\x15")
    p.sendeof()
    finish(p, 0)


def test_arg_names_complete_from_history_and_this_session(tmp_path):
    (tmp_path / "history").write_text(json.dumps({"datetime": "x", "block": "add . Bar --arg path --val /x"}) + "\n")
    p = local(tmp_path)
    p.expect(PROMPT)
    p.send("add worker0 Bar --arg \t")  # one candidate: inserted
    p.expect("path")
    p.send(" --val /tmp/a\r")
    p.expect("executed")
    p.expect(PROMPT)
    enter(p, "add worker0 Baz --arg zeta --val 1", "executed")
    p.send("when-args worker0 Bar --arg \t")  # a menu, the latest first
    p.expect("zeta")
    p.expect("path")
    p.send("\x15")
    p.sendeof()
    finish(p, 0)


def test_ctrl_d_typed_while_a_command_runs_exits_at_the_next_prompt(tmp_path):
    p = local(tmp_path, "--announce")
    p.expect(PROMPT)
    p.sendline("when worker2 Foo --timeout 1s")
    p.expect_exact("[waiting]")
    p.send("\x04")  # typed ahead: the terminal is in cooked mode while the command runs
    p.expect(ERR + "timeout")
    finish(p, 0)


def test_ctrl_c_cancels_wait(tmp_path):  # 44
    p = local(tmp_path, "--announce")
    p.expect(PROMPT)
    p.sendline("when worker2 Foo")
    p.expect_exact("[waiting]")  # the waiter exists: the command runs, the prompt is gone
    p.sendintr()
    p.expect(re.escape("err> interrupted"))
    p.expect(PROMPT)
    enter(p, "add worker2 Foo", "executed")
    enter(p, "when worker2 Foo", "=> 1")
    p.send("some text")
    p.sendintr()  # Ctrl+C at the prompt clears the line, never leaves
    enter(p, "status", "Connected:      3")
    p.sendeof()
    finish(p, 0)


def test_vi_mode_and_no_color(tmp_path):
    p = local(tmp_path, ARPC_EDITING_MODE="vi", NO_COLOR="1")
    p.expect(PROMPT)
    p.send("mach worker1")
    p.expect("worker1")
    p.send("\x1b")  # normal mode: the cursor moves back one character
    p.expect("\x08")
    p.send("0cetime")  # change the first word
    p.send("\r")
    p.expect(re.escape("[0 0 0 0 0 0 0]"))
    p.expect(PROMPT)
    assert "\x1b[90m" not in p.before  # no grey arrow
    p.sendeof()
    finish(p, 0)


def test_piped_stdin_runs_commands(tmp_path):
    r = arpc_local_piped(tmp_path, "add worker1 Foo\nmach worker1\nadd worker1 Nope\n")
    assert r.returncode == 1
    assert r.stdout.splitlines() == ["executed", "(Foo:1)"]  # plain output, as a pipe wants it (no "=> ")
    assert "err> unknown state: Nope" in r.stderr


def test_piped_stdin_stops_at_the_first_failure(tmp_path):
    text = "add worker1 Foo\nwhen worker1 Bar --timeout 10ms\nadd worker1 Nope\nmach worker1\n"
    r = arpc_local_piped(tmp_path, text)
    assert (r.returncode, r.stdout, r.stderr) == (124, "executed\n", "err> timeout\n")
    r = arpc_local_piped(tmp_path, text, "--keep-going")  # every line; the exit code is the first failure's
    assert (r.returncode, r.stdout.splitlines()) == (124, ["executed", "(Foo:1)"])
    assert r.stderr.splitlines() == ["err> timeout", "err> unknown state: Nope (machine worker1)"]


def arpc_local_piped(tmp_path, text, *args):
    import subprocess

    return subprocess.run([sys.executable, str(HERE / "arpc_fixture.py"), *args], input=text, capture_output=True,
                          text=True, env=env(ARPC_HISTORY=str(tmp_path / "h")), timeout=20)


# ------------------------------------------------------------------------------------------------ e2e


needs_transport = pytest.mark.skipif(not transport_works(), reason="transport not available")


@needs_transport
def test_repl_on_daemon(tmp_path):  # 41, 42, 44 against real connections
    d = Daemon(tmp_path / "addrs", "--active", "worker0=Foo")
    try:
        p = spawn(["-m", "arpc", "--connect-timeout", "5", "-d", str(d.dir)], tmp_path)
        p.expect("connected 3/3")
        p.expect(GREEN)
        enter(p, "list", re.escape("1. worker0 t1"), re.escape("C: (Foo:1)"))
        p.send("remove worker0 \t")
        p.expect("Foo")
        enter(p, "", "executed")
        enter(p, "when worker2 Foo --timeout 100ms", ERR + "timeout")
        enter(p, "add worker2 Foo", "executed")
        # the result line itself: a bare "1" matches the "\x1b[?12l" of a redraw, and then a Ctrl+D sent while the
        # command still runs (terminal in cooked mode) reaches the next prompt as NUL = Ctrl+Space
        enter(p, "when worker2 Foo", RESULT + "1\r\n")
        p.sendeof()
        finish(p, 0)
    finally:
        d.stop()


@needs_transport
def test_daemon_dies_and_comes_back(tmp_path):  # 43
    d = Daemon(tmp_path / "addrs")
    try:
        p = spawn(["-m", "arpc", "--connect-timeout", "5", "-d", str(d.dir)], tmp_path)
        p.expect(GREEN)
        d.kill()
        seen = set()
        for _ in range(3):
            p.expect(r"disconnected from (worker\d), reconnecting", timeout=15)
            seen.add(p.match.group(1))
        assert seen == {"worker0", "worker1", "worker2"}
        p.expect(RED, timeout=5)
        enter(p, "add worker0 Foo", ERR + "machine worker0 not connected")
        enter(p, "list", re.escape("1. worker0 t0"), re.escape("D: ()"))
        # it comes back on new ports, with new addr files: the watch reconnects
        d = Daemon(tmp_path / "addrs")
        p.expect(r"connected to worker\d", timeout=5)
        p.expect(GREEN, timeout=5)
        enter(p, "status", "Connected:      3")
        enter(p, "add worker0 Foo", "executed")
        p.sendeof()
        finish(p, 0)
    finally:
        d.stop()


@needs_transport
def test_hub_repl(tmp_path):  # 45
    d = Daemon(tmp_path / "hub", "--hub")
    try:
        addr = (d.dir / "worker1.addr").read_text().strip()
        p = spawn(["-m", "arpc", "--connect-timeout", "5", addr], tmp_path)
        p.expect(PROMPT)
        enter(p, "list", re.escape("1. worker0"), re.escape("2. worker1"), re.escape("3. worker2"))
        enter(p, "add . Bar", "executed")
        enter(p, "mach worker0", re.escape("(Bar:1)"))
        p.sendeof()
        finish(p, 0)
    finally:
        d.stop()



@needs_transport
def test_demo(tmp_path):
    p = spawn(["-m", "arpc", "demo"], tmp_path, NO_COLOR="1", ARPC_DEMO_SPEED="0.2")
    p.expect("Demo: 7 live machines")
    p.expect(re.escape("Try: list"))  # the hint of what to type
    p.expect("connected 7/7")
    p.expect(PROMPT)
    enter(p, "list -p files", re.escape("1. files-1"), re.escape("3. files-3"))
    enter(p, "when ticker Tick --timeout 5s", r"=> \d+\r")
    p.sendeof()
    finish(p, 0)


@needs_transport
def test_watch_empty_dir_picks_up_new_files(tmp_path):
    addrs = tmp_path / "addrs"
    addrs.mkdir()
    p = spawn(["-m", "arpc", "-d", str(addrs)], tmp_path)
    p.expect(re.escape(f"no .addr files found in {addrs} (watching)"))
    p.expect(RED)
    d = Daemon(addrs)
    try:
        for _ in range(3):
            p.expect(r"connected to worker\d", timeout=5)
        enter(p, "status", "Connected:      3")
        enter(p, "mach .", re.escape("()"))
        p.sendeof()
        finish(p, 0)
    finally:
        d.stop()
