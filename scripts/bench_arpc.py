"""The `arpc` section of scripts/bench: cold start of a one-shot command, and 1000 machines behind one daemon.

Runs `arpc` as a subprocess, as a script would. Bytecode caching is left on for these runs (a
PYTHONDONTWRITEBYTECODE in the environment is removed), as on a normal install.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARPC = str(Path(sys.executable).with_name("arpc"))


def fleet(n: int, addr_dir: str, prefix: str = "") -> tuple[list[Any], Any]:
    """n small machines (PREFIXm0000...) in Start and Ready on one endpoint, one addr file each; prints the
    address."""
    from machine import Machine, State
    from transport import expose

    schema = {"Start": State(), "Ready": State(require=("Start",)), "Foo": State(remove=("Bar",)),
              "Bar": State(remove=("Foo",))}
    machs = [Machine(schema, id=f"{prefix}m{i:04d}", parent="bench") for i in range(n)]
    for m in machs:
        m.add("Start", "Ready")
    ep = expose(machs, addr_dir=addr_dir)
    print(ep.address, flush=True)
    return machs, ep


def serve_many(n: int, addr_dir: str, prefix: str = "", tick: bool = False) -> None:
    """A daemon with n small machines on one endpoint, one addr file each; serves until stdin closes. ``tick``:
    toggles Foo on its last machine every 20 ms (what a fleet's ``watch`` waits for)."""
    import threading

    machs, ep = fleet(n, addr_dir, prefix)
    stop = threading.Event()

    def toggle() -> None:
        while not stop.wait(0.02):
            machs[-1].toggle("Foo")

    if tick:
        threading.Thread(target=toggle, daemon=True).start()
    sys.stdin.read()
    stop.set()
    ep.stop()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "AM_LOG")}


def _timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    return time.perf_counter() - t, r


def _serve(n: int, tmp: str, prefix: str = "", tick: bool = False) -> tuple[subprocess.Popen[str], str]:
    p = _spawn(n, tmp, prefix, tick)
    assert p.stdout is not None
    return p, p.stdout.readline().strip()


def _spawn(n: int, tmp: str, prefix: str = "", tick: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(HERE), "serve", str(n), tmp, prefix, "tick" if tick else ""],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _stop(p: subprocess.Popen[str]) -> None:
    if p.stdin is not None:
        p.stdin.close()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


def measure(quick: bool) -> dict[str, Any]:
    runs = 7 if quick else 21
    n = 1000
    res: dict[str, Any] = {"runs": runs, "n": n}
    # cold start against a daemon with one machine
    with tempfile.TemporaryDirectory(prefix="bench-arpc-") as tmp:
        p, addr = _serve(1, tmp)
        try:
            _timed([sys.executable, "-c", "pass"])  # warm the caches
            _timed([ARPC, addr, "--", "toggle", ".", "Foo"])
            base, cold = [], []
            for _ in range(runs):
                base.append(_timed([sys.executable, "-c", "pass"])[0])
                dt, r = _timed([ARPC, addr, "--", "toggle", ".", "Foo"])
                if r.returncode != 0:
                    raise RuntimeError(f"arpc failed: {r.stderr}")
                cold.append(dt)
            res["python"] = statistics.median(base)
            res["cold"] = statistics.median(cold)
        finally:
            _stop(p)
    # 1000 machines behind one daemon
    tmp = tempfile.mkdtemp(prefix="bench-arpc-")
    p, addr = _serve(n, tmp)
    try:
        for name, cmd in (("list", ["list"]), ("group_add", ["group-add", "Bar"])):
            times = []
            for _ in range(3 if quick else 5):
                dt, r = _timed([ARPC, "-d", tmp, "--", *cmd])
                if r.returncode != 0:
                    raise RuntimeError(f"arpc {cmd} failed ({r.returncode}): {r.stderr}")
                times.append(dt)
                if name == "group_add":
                    res["group_out"] = r.stdout.strip().replace("\n", ", ")
                    _timed([ARPC, "-d", tmp, "--", "group-remove", "Bar"])
                else:
                    res["listed"] = sum(1 for line in r.stdout.splitlines() if line[:1].isdigit())
            res[name] = statistics.median(times)
    finally:
        _stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def _cpu(pid: int) -> float:
    """A process's CPU seconds so far (user + system, its threads gone included), from /proc; 0.0 elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_fleet(daemons: int = 50, per: int = 1000, runs: int = 3) -> dict[str, Any]:
    """P9: ``daemons`` processes with ``per`` machines each, their addr files in one dir: wall time of ``list``,
    ``group-add Bar`` (then ``group-remove Bar``, untimed) and ``watch -n 1`` (the last daemon's last machine
    toggles every 20 ms: its first line comes once that daemon's machines are all subscribed), each as a
    subprocess (median of ``runs``; ``watch`` once). Also the daemons' CPU during ``group-add`` per 1000 machines
    (``group_cpu_ms``: robust to other load, unlike the wall times)."""
    tmp = tempfile.mkdtemp(prefix="bench-fleet-")
    procs = [_spawn(per, tmp, f"d{i:02d}-", tick=i == daemons - 1) for i in range(daemons)]
    res: dict[str, Any] = {"daemons": daemons, "per": per, "runs": runs}
    try:
        for p in procs:  # started at once; each prints its address when it serves
            assert p.stdout is not None
            p.stdout.readline()
        times: dict[str, list[float]] = {"list": [], "group_add": [], "watch": []}
        cpu_ms: list[float] = []
        for run in range(runs):
            for name, cmd in (("list", ["list"]), ("group_add", ["group-add", "Bar"]),
                              ("watch", ["watch", "-n", "1", "--duration", "120s"])):
                if name == "watch" and run:
                    continue  # once: it subscribes every machine (tens of seconds at 50,000)
                cpu0 = sum(_cpu(p.pid) for p in procs) if name == "group_add" else 0.0
                dt, r = _timed([ARPC, "-d", tmp, "--", *cmd])
                if name == "group_add":
                    cpu_ms.append((sum(_cpu(p.pid) for p in procs) - cpu0) * 1e6 / (daemons * per))
                if r.returncode != 0 or (name == "watch" and not r.stdout.strip()):
                    raise RuntimeError(f"arpc {cmd} failed ({r.returncode}): {r.stderr[-2000:]}")
                times[name].append(dt)
                if name == "list":
                    res["listed"] = sum(1 for line in r.stdout.splitlines() if line[:1].isdigit())
                elif name == "group_add":
                    res["group_out"] = r.stdout.strip().replace("\n", ", ")
                    _timed([ARPC, "-d", tmp, "--", "group-remove", "Bar"])
        for k, v in times.items():
            res[k] = statistics.median(v)
            res[k + "_all"] = v
        res["group_cpu_ms"] = statistics.median(cpu_ms)
    finally:
        for p in procs:
            _stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve_many(int(sys.argv[2]), sys.argv[3], *(sys.argv[4:5] or [""]), tick=sys.argv[5:6] == ["tick"])
    elif sys.argv[1] == "fleet":
        print(measure_fleet(*(int(x) for x in sys.argv[2:5])))
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]}")
