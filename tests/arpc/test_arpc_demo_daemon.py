"""`python -m arpc.demo` as a daemon (issue 12 item 17, issue 15 "The demo daemon"): it runs with stdin from
/dev/null and as a background job of an interactive shell, takes --seconds, and removes its addr files on SIGTERM
as on Ctrl+C. Real processes."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pexpect
import pytest
from arpc_e2e import PY, ROOT, env, readline, transport_works, until

pytestmark = pytest.mark.skipif(not transport_works(), reason="transport (pyzmq) not available")

MACHINES = 7


# Every wait below is for a real condition and its bound is only reached on failure: generous, since on a box
# starved by other work (load 10+ on 2 cores) a cold start alone has taken over 15 s.
SLOW = 60


def start(addr_dir: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """The demo daemon, detached from this terminal, stdin from /dev/null; and the address it printed. Its stderr
    goes to a file beside the addr dir: a pipe nobody reads would block the daemon once full."""
    addr_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(addr_dir.parent / "demo.err", "w") as err:
        p = subprocess.Popen([PY, "-m", "arpc.demo", "--addr-dir", str(addr_dir), "--speed", "0.2", *args],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True,
                             env=env(), cwd=str(ROOT), start_new_session=True)
    assert p.stdout is not None
    return p, readline(p.stdout, SLOW)


def stderr_of(addr_dir: Path) -> str:
    return (addr_dir.parent / "demo.err").read_text()


def arpc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "arpc", "--connect-timeout", str(SLOW / 2), *args], capture_output=True,
                          text=True, env=env(), cwd=str(ROOT), timeout=SLOW * 2)


def addr_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*.addr"))


def test_serves_with_stdin_from_devnull_and_cleans_up_on_sigterm(tmp_path: Path) -> None:
    d = tmp_path / "addrs"
    p, addr = start(d)
    try:
        assert addr.startswith("tcp://127.0.0.1:")
        assert len(addr_files(d)) == MACHINES
        time.sleep(0.5)  # stdin at EOF from the start: it must still be serving after a while
        assert p.poll() is None, stderr_of(d)
        r = arpc("-d", str(d), "--", "status")
        assert r.returncode == 0 and f"Connected:      {MACHINES}" in r.stdout, r.stderr
        p.send_signal(signal.SIGTERM)
        assert p.wait(SLOW) == 0, stderr_of(d)
        assert addr_files(d) == [] and not list(d.glob(".*"))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def test_seconds_ends_it_and_removes_the_files(tmp_path: Path) -> None:
    d = tmp_path / "addrs"
    t0 = time.monotonic()
    p, _ = start(d, "--seconds", "1")
    try:
        assert len(addr_files(d)) == MACHINES
        assert p.wait(SLOW) == 0, stderr_of(d)
        assert time.monotonic() - t0 >= 1.0
        assert addr_files(d) == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def test_a_background_job_of_an_interactive_shell_keeps_serving(tmp_path: Path) -> None:
    # `cmd &` in an interactive shell: a job that reads its terminal is stopped (SIGTTIN), and stops serving
    d = tmp_path / "addrs"
    sh = pexpect.spawn("bash", ["--norc", "--noprofile", "-i"], env=env(PS1="$ "), cwd=str(ROOT), encoding="utf-8",
                       timeout=15)
    try:
        sh.expect_exact("$ ")
        sh.sendline(f"{PY} -m arpc.demo --addr-dir {d} --speed 0.2 > {tmp_path / 'out'} 2>&1 & echo PID=$!")
        sh.expect(r"PID=(\d+)")
        pid = int(sh.match.group(1))
        until(lambda: len(addr_files(d)) == MACHINES, timeout=15, what="the demo wrote its addr files")
        time.sleep(0.5)  # the scenario, not a wait: a background job that read the tty would be stopped by now
        r = arpc("-d", str(d), "--", "status")
        assert r.returncode == 0 and f"Connected:      {MACHINES}" in r.stdout, r.stderr
        sh.sendline(f"kill -INT {pid}; wait {pid}; echo EXIT=$?")  # as Ctrl+C would
        sh.expect(r"EXIT=(\d+)")
        assert sh.match.group(1) == "0"
        assert addr_files(d) == []
    finally:
        sh.sendline("kill -KILL %1 2>/dev/null; exit")
        sh.close(force=True)


def test_a_stopped_chain_is_restarted() -> None:
    # a chain ends for good when a step's handler fails or times out (a starved box) or its running step is
    # removed by hand; the demo's supervisor starts it again, so the demo keeps moving
    from arpc.demo import demo_machines

    machs = demo_machines(speed=0.01)
    try:
        ticker = next(m for m in machs if m.id == "ticker")
        files = next(m for m in machs if m.id == "files-1")
        assert ticker.when_ticks("Tick", 4).wait(10)
        ticker.remove("Tick")  # its timer sees the state's context done: the chain is over
        files.add_err(RuntimeError("disk full"))
        ticks = ticker.tick("Tick")
        assert ticker.when_ticks("Tick", ticks + 4).wait(10), "the ticker was not restarted"
        assert files.when_not("Exception").wait(10)
        done = files.tick("FileUploaded")
        assert files.when_ticks("FileUploaded", done + 2).wait(10), "files-1 was not restarted"
    finally:
        for m in machs:
            m.dispose()
