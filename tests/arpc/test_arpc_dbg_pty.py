"""``arpc dbg`` driven for real: the screen in a tmux pseudo-terminal (80x24), a daemon in another process.

Run as a script (``python test_arpc_dbg_pty.py daemon --dir DIR --port PORT``) this file is that daemon: machines
``svc`` and its children ``svc-a``, ``svc-b``, exposed on one endpoint; ``Boom``'s enter handler raises. It reads
``add|remove ID STATE`` lines on stdin and answers ``ok RESULT``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from arpc_e2e import PY, ROOT, Daemon, env, transport_works  # noqa: E402

needs = pytest.mark.skipif(shutil.which("tmux") is None or not transport_works(), reason="needs tmux and transport")


class Screen:
    """A command in a detached tmux session of its own server (``-L``): send keys, read the screen."""

    def __init__(self, cmd: list[str], width: int = 80, height: int = 24, **extra: str) -> None:
        self.sock = f"arpc-dbg-{uuid.uuid4().hex[:8]}"
        e = env(TERM="xterm-256color", **extra)
        shell = " ".join(_quote(c) for c in cmd) + '; echo "EXIT=$?"; sleep 30'
        subprocess.run(["tmux", "-L", self.sock, "-f", os.devnull, "new-session", "-d", "-x", str(width), "-y",
                        str(height), "sh", "-c", shell], check=True, env=e, cwd=str(ROOT), timeout=10)

    def text(self) -> str:
        r = subprocess.run(["tmux", "-L", self.sock, "capture-pane", "-p"], capture_output=True, text=True,
                           timeout=10)
        return r.stdout

    def keys(self, *keys: str) -> None:
        """tmux key names (``Left``, ``Enter``) or, after ``-l``, literal text."""
        subprocess.run(["tmux", "-L", self.sock, "send-keys", *keys], check=True, timeout=10)

    def type(self, text: str) -> None:
        subprocess.run(["tmux", "-L", self.sock, "send-keys", "-l", "--", text], check=True, timeout=10)

    def wait(self, pattern: str, timeout: float = 15.0) -> str:
        """The screen once ``pattern`` (a regexp) shows on it; fails with the screen after ``timeout``."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while True:
            screen = self.text()
            if rx.search(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on screen within {timeout}s:\n{screen}")
            time.sleep(0.05)  # polling the screen, bounded by the deadline above

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True, timeout=10)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


class SvcDaemon(Daemon):
    """This file run as the daemon, in a subprocess (its stderr, where raising handlers are logged, is ours)."""

    def __init__(self, directory: str, port: int, *args: str) -> None:
        super().__init__(Path(directory), *args, stderr=None, start_timeout=15.0,
                         argv=[PY, __file__, "daemon", "--dir", directory, "--port", str(port), *args])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dbg(*args: str, **extra: str) -> Screen:
    return Screen([PY, "-m", "arpc", "dbg", *args], **extra)


@needs
def test_live_select_transition_time_travel_error_quit_then_replay(tmp_path):
    d = SvcDaemon(str(tmp_path / "addrs"), free_port())
    rec = str(tmp_path / "rec.jsonl")
    s = dbg("-d", str(tmp_path / "addrs"), "--record", rec, NO_COLOR="1")
    try:
        s.wait(r"Machines 3/3")
        screen = s.wait(r"3/3 connected")
        assert re.search(r"^>C  svc\b", screen, re.M) and re.search(r"^ C    svc-a", screen, re.M)  # a tree
        assert "q quit" in screen and "/ filter" in screen  # the help bar fits 80 columns
        s.keys("j")  # select svc-a
        s.wait(r"│ svc-a t\d+ \[LIVE\]")
        d.cmd("add svc-a Foo")
        s.wait(r"add Foo \+Foo")  # a live transition in the log
        s.wait(r"│ \* Foo +1\b")  # and on the board
        d.cmd("add svc-a Bar")
        s.wait(r"add Bar \+Bar -Foo")
        s.keys("Left", "Left")  # time travel: the board as after "add Foo"
        screen = s.wait(r"\[AT #\d+")
        assert re.search(r"^>\S+ add Foo", screen, re.M)
        assert re.search(r"│ \* Foo +1\b", screen) and re.search(r"│   Bar +0\b", screen), screen
        s.keys("l")
        screen = s.wait(r"\[LIVE\]")
        assert re.search(r"│   Foo +2\b", screen) and re.search(r"│ \* Bar +1\b", screen), screen
        d.cmd("add svc-a Boom")  # the handler raises
        s.wait(r"!RuntimeError: disk full")
        s.keys("e")  # jump to the last error: its traceback in the detail
        screen = s.wait(r"error: RuntimeError: disk full in BoomEnter")  # the canceled transition
        assert "reason: BoomEnter raised RuntimeError: disk full" in screen
        # the traceback's end: the raising frame, its File line and its code
        assert re.search(r'^ +File ".*\n +raise RuntimeError\("disk full"\)', screen, re.M), screen
        assert re.search(r"^C! +svc-a|^>C! +svc-a", screen, re.M)  # the Exception mark
        s.keys("q")
        s.wait(r"EXIT=0")
    finally:
        s.close()
        d.kill()
    with open(rec) as f:
        assert json.loads(f.readline())["arpc_dbg"] == 1
    r = Screen([PY, "-m", "arpc", "dbg", "--replay", rec], NO_COLOR="1")
    try:
        screen = r.wait(r"replay rec\.jsonl")
        assert "Machines 3/3" in screen
        r.keys("j", "e")
        r.wait(r"error: RuntimeError: disk full")
        r.keys("q")
        r.wait(r"EXIT=0")
    finally:
        r.close()


@needs
def test_filter_mutation_with_confirmation_and_mouse(tmp_path):
    d = SvcDaemon(str(tmp_path / "addrs"), free_port())
    s = dbg("-d", str(tmp_path / "addrs"))  # colours on
    try:
        s.wait(r"3/3 connected")
        s.keys("/")
        s.wait("filter>")
        s.type("-p svc-")
        s.keys("Enter")
        screen = s.wait(r"Machines 2/3")
        assert "filter -p svc-" in screen
        assert re.search(r"^>C +svc-a", screen, re.M) and "svc-b" in screen
        s.keys("Tab", "j", "j")  # the board: Start, Ready, Foo
        s.wait(r"│>  Foo ")
        s.keys("a")
        s.wait(r"add Foo to svc-a\? \[y/N\]")
        s.keys("n")
        s.wait(r"canceled")
        s.keys("a")
        s.wait(r"\[y/N\]")
        s.keys("y")
        s.wait(r"add Foo on svc-a: executed")
        s.wait(r"add Foo \+Foo")
        # a click on the second machine of the list (tmux passes the mouse to the application)
        s.type("\x1b[<0;5;3M\x1b[<0;5;3m")
        s.wait(r"│ svc-b t\d+ \[LIVE\]")
        s.keys("Escape")
        s.wait(r"Machines 3/3")
        s.type("\x1b[<64;5;3M")  # the wheel up over the list: one machine up
        s.wait(r"│ svc-a t\d+ \[LIVE\]")
        s.keys("q")
        s.wait(r"EXIT=0")
    finally:
        s.close()
        d.kill()


@needs
def test_survives_a_daemon_that_dies_and_comes_back(tmp_path):
    port = free_port()
    addrs = str(tmp_path / "addrs")
    d = SvcDaemon(addrs, port)
    s = dbg("-d", addrs, NO_COLOR="1")
    try:
        s.wait(r"3/3 connected")
        d.kill()
        screen = s.wait(r"0/3 connected", timeout=20)
        assert re.search(r"^>D  svc", screen, re.M)
        d = SvcDaemon(addrs, port)
        s.wait(r"3/3 connected", timeout=30)
        s.keys("j", "j")
        s.wait(r"│ svc-b t\d+ \[LIVE\]")
        d.cmd("add svc-b Foo")
        s.wait(r"add Foo \+Foo", timeout=20)
        s.keys("q")
        s.wait(r"EXIT=0")
    finally:
        s.close()
        d.kill()


def follow_all(addr_dir: str, want: int, then=None, **opts) -> list[dict]:
    """The events a LiveSource (no screen, ``opts`` given to it) gets from the machines in ``addr_dir`` until
    ``want`` are followed; ``then(source, events)`` may go on (it returns when done)."""
    from arpc.dbg.sources import Feed, LiveSource
    from arpc.session import Session

    session = Session(connect_timeout=10.0)  # as arpc dbg opens it: the source makes the mirrors
    session.load(directory=addr_dir)
    feed = Feed()
    src = LiveSource(session, feed, **opts)
    events: list[dict] = []
    src.start()
    try:
        poll(lambda: sum(1 for e in events if e["k"] == "machine") >= want and len(src._subs) >= want,
             feed, events, f"{want} machines followed")
        if then is not None:
            then(src, feed, events)
        events += feed.drain()
    finally:
        src.close()
    return events


def poll(cond, feed, events: list[dict], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        events += feed.drain()
        time.sleep(0.02)  # polling the feed, bounded by the deadline


@pytest.mark.skipif(not transport_works(), reason="transport not available")
def test_no_history_and_the_follow_limit_are_log_lines_not_errors(tmp_path):
    d = SvcDaemon(str(tmp_path / "a"), free_port(), "--history", "0")
    try:
        events = follow_all(str(tmp_path / "a"), 3)
    finally:
        d.kill()
    notes = {e["m"]: e["text"] for e in events if e["k"] == "note"}
    assert notes == dict.fromkeys(["svc", "svc-a", "svc-b"], "no history kept on the source: live transitions only")
    d = SvcDaemon(str(tmp_path / "b"), free_port(), "--extra", "70", "--follows", "64")
    given_up: list[str] = []

    def show_one_past_the_limit(src, feed, events):
        # a machine past the limit is noted when the daemon's refusal comes back, which may be after it is followed
        poll(lambda: sum(1 for e in events if e["k"] == "note") >= 73 - 64, feed, events, "the notes past the limit")
        unfollowed = [e["m"] for e in events if e["k"] == "note"]
        assert len(unfollowed) == 73 - 64 and all(e["text"].startswith("its history is not followed (the daemon's "
                                                  "limit") for e in events if e["k"] == "note")
        d.cmd(f"add {unfollowed[0]} Foo")  # a transition before: its record comes with the backlog
        src.want_history(unfollowed[0])  # on screen: its history is followed, the least recently shown gives way
        poll(lambda: any(e["k"] == "history" and e["m"] == unfollowed[0] for e in events), feed, events,
             "the backlog of the machine on screen")
        given_up.extend(e["m"] for e in events if e["k"] == "note" and e["m"] not in unfollowed)

    try:
        events = follow_all(str(tmp_path / "b"), 73, show_one_past_the_limit)
    finally:
        d.kill()
    assert len(given_up) == 1 and given_up[0] == "svc"  # the first to be followed


@pytest.mark.skipif(not transport_works(), reason="transport not available")
def test_every_machine_history_followed_and_none_subscribed_past_the_cap(tmp_path):
    # the daemon's default limit of followed histories per session covers dbg's cap of machines (it was 64)
    d = SvcDaemon(str(tmp_path / "a"), free_port(), "--extra", "200")
    try:
        events = follow_all(str(tmp_path / "a"), 203, lambda src, feed, events: poll(
            lambda: all(sub.hist for sub in src._subs.values()), feed, events, "every history followed"))
    finally:
        d.kill()
    assert [e for e in events if e["k"] == "note"] == []
    d = SvcDaemon(str(tmp_path / "b"), free_port(), "--extra", "20")
    seen: list[int] = []

    def past_the_cap(src, feed, events):
        poll(lambda: len({e["m"] for e in events if e["k"] == "machine"}) >= 23, feed, events, "all listed")
        entries = src.session.entries()
        seen.extend([sum(1 for e in entries if e.mirror is not None), len(src._subs)])

    try:
        events = follow_all(str(tmp_path / "b"), 5, past_the_cap, max_machines=5)
    finally:
        d.kill()
    assert seen == [5, 5]  # no mirror (no subscription) past the cap
    from arpc.dbg.model import Model

    model = Model(max_machines=5)
    for e in events:
        model.apply(e)
    assert len(model.machines) == 5 and model.refused == 5  # (it counts up to its cap)


# ------------------------------------------------------------------------------------------------ the daemon


def daemon_main(argv: list[str]) -> None:
    import argparse

    from machine import Machine, State
    from transport import expose

    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--history", type=int, default=1000, help="expose(..., history=N); 0: none kept")
    ap.add_argument("--extra", type=int, default=0, help="more machines, x000 ...")
    ap.add_argument("--follows", type=int, help="the daemon's limit of followed histories per session")
    a = ap.parse_args(argv)
    if a.follows is not None:
        from transport import protocol

        protocol.MAX_FOLLOWS = a.follows
    schema = {"Start": State(), "Ready": State(require=("Start",)), "Foo": State(remove=("Bar",)),
              "Bar": State(remove=("Foo",)), "Boom": State()}

    class Handlers:
        def BoomEnter(self, e: object) -> None:
            raise RuntimeError("disk full")

    machs = [Machine(schema, id="svc", handlers=Handlers()),
             Machine(schema, id="svc-a", parent="svc", handlers=Handlers()),
             Machine(schema, id="svc-b", parent="svc", handlers=Handlers())]
    machs += [Machine(schema, id=f"x{i:03d}", parent="svc") for i in range(a.extra)]
    by_id = {m.id: m for m in machs}
    ep = expose(machs, addr=f"tcp://127.0.0.1:{a.port}", addr_dir=a.dir, history=a.history)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if len(words) == 3 and words[0] in ("add", "remove"):
            r = getattr(by_id[words[1]], words[0])(words[2])
            print(f"ok {int(r)}", flush=True)
        elif words:
            print("err", flush=True)
    ep.stop()


if __name__ == "__main__" and sys.argv[1:2] == ["daemon"]:
    daemon_main(sys.argv[2:])
