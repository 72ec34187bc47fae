"""Every program in examples/ runs as a subprocess, exits 0 and prints what it is meant to show.

Each run is bounded by a timeout; everything is on loopback. The daemon is driven through its interface: its
first stdout line is the address, a transport client lists its machines and gives one a job, `arpc -d DIR`
lists them, and closing its stdin stops it.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from machine import Result
from transport import connect

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RUN_TIMEOUT = 60  # seconds per example; each takes a few at most
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
       "PYTHONUNBUFFERED": "1"}
ENV.pop("AM_LOG", None)  # the expected output assumes no machine logging


def run(name: str, *args: str) -> str:
    """Run examples/<name> to completion; fail on a non-zero exit. Returns stdout."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (f"{name} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n"
                                  f"--- stderr\n{proc.stderr}")
    return proc.stdout


CASES = {
    "turnstile.py": [
        "add InputCoin     -> (InputCoin:1 Locked:1)",
        "remove Unlocked   -> (InputCoin:1 Locked:3)",
        "Locked   -> Locked   (canceled)",
        "transitions: push->Locked coin->Unlocked push->Locked push->Locked coin->Unlocked coin->Unlocked "
        "push->Locked",
    ],
    "nfa.py": [
        "'ab'       ACCEPT  {Q0} -a-> {Q0,Q1} -b-> {Q0,Q2}",
        "'abba'     reject",
        "(symbol 'c' refused)",
        "10/10 agree with re.fullmatch",
    ],
    "expense.py": [
        "[exp-1] 120 <= 200: approved by policy",
        "[exp-2] can approve without an approver? CANCELED",
        "[exp-2] paid 950 to bob",
        "[exp-3] error (step failed): BudgetExceeded",
        "[exp-3] stopped in Exception (payment)",
        "[exp-4] error (handler raised): ValueError",
        '{"expense": "exp-2", "amount": 950, "to": "bob"}',
        "statuses: exp-1=paid, exp-2=paid, exp-3=failed, exp-4=rejected",
    ],
    "path_watcher.py": [
        "machine saw: created  file a.txt",
        "machine saw: created  dir  logs",
        "machine saw: modified file a.txt",
        "machine saw: deleted  file b.txt",
        "machine saw: created  file c.txt",
        "disposed; poller thread stopped: True",
    ],
    "asyncio_example.py": [
        "[job-1] 200 lines, sha256",
        "(matches the expected)",
        "[job-2] download task cancelled after 10 lines (Downloading active: False)",
        "[job-2] server saw the client hang up",
        "[job-3] Exception: ConnectionRefusedError",
        "done",
    ],
    "tree_replicas.py": [
        "6 leaves with HTTP: r1.1=http://127.0.0.1:",
        "[a root clock]",
        "all 6 leaves serve the same clock",
        "add Flight1Delayed on leaf r1.2: executed; root has it: True",
        "the leaves follow the root",
        "shut down",
    ],
    "file_processing.py": ["total in"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_example(name: str) -> None:
    out = run(name)
    for line in CASES[name]:
        assert line in out, f"{name}: missing {line!r} in\n{out}"
    if name == "tree_replicas.py":
        assert "NOT a root clock" not in out


def test_every_example_is_tested() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(CASES) | {"daemon.py"}


def test_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    for p in EXAMPLES.glob("*.py"):
        assert f".venv/bin/python examples/{p.name}" in readme, p.name


# ------------------------------------------------------------------------------------------- the daemon

def read_line(stream: IO[str], timeout: float) -> str:
    """The next line of ``stream``, or fail after ``timeout`` seconds (a thread does the blocking read)."""
    q: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: q.put(stream.readline()), daemon=True).start()
    try:
        return q.get(timeout=timeout).strip()
    except queue.Empty:
        raise AssertionError(f"no line within {timeout}s") from None


def test_daemon_serves_until_stdin_closes(tmp_path: Path) -> None:
    addr_dir = tmp_path / "addrs"
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "daemon.py"), "--addr-dir", str(addr_dir)],
                            cwd=ROOT, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        addr = read_line(proc.stdout, 30)
        assert addr.startswith("tcp://127.0.0.1:"), addr
        assert read_line(proc.stdout, 30).startswith("serving 21 machines (pool + 20 workers); inspect: arpc -d ")
        ids = ["pool"] + [f"worker-{i:02d}" for i in range(1, 21)]
        with connect(addr, timeout=10) as client:
            listed = client.machines()
            assert sorted(m["id"] for m in listed) == ids
            assert all(m["parent_id"] == "pool" for m in listed if m["id"] != "pool")
            # a manual worker waits for a job: give it one, wait (bounded) for the result
            w = client.machine("worker-01")
            assert w.is_active("Idle") and w.tick("JobDone") == 0
            assert w.add("Working") == Result.EXECUTED
            assert w.when("JobDone", "Idle").wait(10), w.string_all()
        assert sorted(p.stem for p in addr_dir.glob("*.addr")) == ids
        # the shell finds the daemon through the addr files (the daemon's docstring says so)
        arpc = subprocess.run([sys.executable, "-m", "arpc", "-d", str(addr_dir), "--", "list"], cwd=ROOT, env=ENV,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
        assert arpc.returncode == 0, arpc.stderr
        assert "worker-01" in arpc.stdout and "worker-20" in arpc.stdout and "pool" in arpc.stdout
        # closes stdin first: EOF stops the daemon. (communicate reads the pipe itself: the lines read above
        # went through proc.stdout's buffer, so every line must be read one way or the other, not both)
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert "stopped after" in out
    assert not list(addr_dir.glob("*.addr"))  # removed on stop


def test_daemon_stops_after_seconds() -> None:
    out = run("daemon.py", "--seconds", "1", "--workers", "4", "--speed", "0.3")
    lines = out.splitlines()
    assert lines[0].startswith("tcp://127.0.0.1:")
    assert "serving 5 machines (pool + 4 workers)" in out
    assert "stopped after 1.0s" in out
