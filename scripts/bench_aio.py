"""The asyncio client (issue 14): the event loop's lag (worst and p99) while 1000 remote mutations run (sequential
awaits, then 1000 at once), the loop's CPU time per call in the turn that starts 1000 at once (against 1000 bare
tasks: asyncio's share), the async round trip against the sync one, asyncio's own floor (1000 tasks woken at
once, no network) and the box's (the ticker alone for 0.5 s), against a daemon process (bench_transport's
``daemon`` mode: machine b0 on tcp 127.0.0.1). Called from scripts/bench.py (section ``aio``).

Before/after in one session: ``python scripts/bench_aio.py --compare DIR --rounds 3`` runs this measurement in
fresh processes, alternating the client code in DIR (e.g. ``git archive main machine transport`` unpacked) with
this tree's (the daemon is this tree's in both), and prints one JSON line per run. Without ``--compare``: one
run of this tree's code, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_transport as bt

if os.environ.get("AM_BENCH_ROOT"):  # --compare: the client code measured is that tree's (the daemon is ours)
    sys.path.insert(0, os.environ["AM_BENCH_ROOT"])

HERE = Path(__file__).resolve()
TICK = 0.001  # the ticker's sleep: how late it wakes is the loop's lag
BURSTS = 3  # bursts of n calls at once: their lags pooled (one burst gives the ticker few wakes), time: median


class GcClock:
    """The wall time the interpreter spent in garbage collections (on any thread: a collection holds the GIL, so
    every thread waits for it), and the highest generation collected, since the last ``take``."""

    def __init__(self) -> None:
        self.spent = 0.0
        self.gen = -1
        self._t0 = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.spent += time.perf_counter() - self._t0
            self.gen = max(self.gen, int(info["generation"]))

    def take(self) -> tuple[float, int]:
        out = self.spent, self.gen
        self.spent, self.gen = 0.0, -1
        return out

    def close(self) -> None:
        gc.callbacks.remove(self._cb)


class Ticker:
    """A task that sleeps ``TICK`` in a loop and records how late it wakes, and the loop thread's CPU time meanwhile
    (what the loop itself did, apart from waiting for a core or the GIL: on a loaded box, the part that is ours)."""

    def __init__(self) -> None:
        self.lags: list[tuple[float, float, float, float, int]] = []
        self._gc = GcClock()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        pc, cpu, pcpu = time.perf_counter, time.thread_time, time.process_time
        while not self._stop.is_set():
            t0, c0, p0 = pc(), cpu(), pcpu()
            self._gc.take()
            await asyncio.sleep(TICK)
            c, p = cpu() - c0, pcpu() - p0
            self.lags.append((pc() - t0 - TICK, c, p - c, *self._gc.take()))

    def take(self) -> tuple[float, float, float, float, float, int]:
        """(worst, p99, the loop's CPU time during the worst, the other threads' CPU time then: the client I/O
        thread's, which the loop waits for while that one holds the GIL, the time in garbage collections then,
        and their highest generation) since the last take."""
        lags, self.lags = self.lags, []
        if not lags:
            return 0.0, 0.0, 0.0, 0.0, 0.0, -1
        worst = max(lags)
        return worst[0], bt._pct([x[0] for x in lags], 0.99), worst[1], worst[2], worst[3], worst[4]

    async def stop(self) -> None:
        self._stop.set()
        await self._task
        self._gc.close()


async def _floor(n: int) -> tuple[float, float, float, float, float, int]:
    """The loop's lag while ``n`` tasks are started and woken at once by another thread: asyncio's own cost."""
    import threading

    loop = asyncio.get_running_loop()
    futs = [loop.create_future() for _ in range(n)]

    async def one(f: asyncio.Future[None]) -> None:
        await f

    tick = Ticker()
    await asyncio.sleep(0.01)
    tick.take()
    tasks = asyncio.gather(*(one(f) for f in futs))
    await asyncio.sleep(0.005)

    def done() -> None:
        for f in futs:
            f.set_result(None)

    threading.Thread(target=lambda: loop.call_soon_threadsafe(done)).start()
    await tasks
    await asyncio.sleep(0.005)
    lag = tick.take()
    await tick.stop()
    return lag


async def _start_turn(am: Any, n: int, rounds: int = 9) -> tuple[float, float]:
    """The loop thread's CPU time per call for the one turn that starts ``n`` calls at once (every task's first
    step, up to its await), and the same for ``n`` tasks that await a bare future: asyncio's own share. Medians
    over ``rounds``; the calls are answered between rounds."""
    loop = asyncio.get_running_loop()
    cpu = time.thread_time

    async def one(f: asyncio.Future[None]) -> None:
        await f

    ours, base = [], []
    for _ in range(rounds):
        c0 = cpu()
        tasks = [asyncio.ensure_future(am.add("M")) for _ in range(n)]
        await asyncio.sleep(0)  # one turn: each task runs to its await
        ours.append((cpu() - c0) / n)
        await asyncio.gather(*tasks)
        futs = [loop.create_future() for _ in range(n)]
        c0 = cpu()
        waits = [asyncio.ensure_future(one(f)) for f in futs]
        await asyncio.sleep(0)
        base.append((cpu() - c0) / n)
        for f in futs:
            f.set_result(None)
        await asyncio.gather(*waits)
    return statistics.median(ours), statistics.median(base)


def measure(quick: bool) -> dict[str, Any]:
    from transport import connect
    from transport.aio import connect_async

    n = 200 if quick else 1000
    p, addr = bt._spawn("daemon")
    try:
        with connect(addr) as c:
            rm = c.machine("b0")
            sync_lat = bt._lat(lambda: rm.add("M"), n)

        async def run() -> dict[str, Any]:
            async with connect_async(addr) as ac:
                am = await ac.machine("b0")
                for _ in range(min(200, n)):  # warm up
                    await am.add("M")
                tick = Ticker()
                await asyncio.sleep(0.01)
                tick.take()
                await asyncio.sleep(0.5)  # nothing but the ticker: the box's own noise
                idle_lag = tick.take()
                lat = []
                pc = time.perf_counter
                for _ in range(n):
                    t0 = pc()
                    await am.add("M")
                    lat.append(pc() - t0)
                seq_lag = tick.take()
                bursts = []
                cpu = time.thread_time()
                for _ in range(BURSTS):
                    t0 = pc()
                    await asyncio.gather(*(am.add("M") for _ in range(n)))
                    bursts.append(pc() - t0)
                    await asyncio.sleep(0.005)  # the ticker's last wake counts
                per_call = (time.thread_time() - cpu) / (BURSTS * n)
                burst = statistics.median(bursts)
                burst_lag = tick.take()
                await tick.stop()
                start_ours, start_asyncio = await _start_turn(am, n)
                out = {"start_ours": start_ours, "start_asyncio": start_asyncio,
                       "lat": lat, "per_call": per_call, "idle_lag": idle_lag, "seq_lag": seq_lag, "burst": burst,
                       "burst_lag": burst_lag}
            gc.collect()  # a full collection the client's calls made due would land in the floor's first tick
            out["floor"] = await _floor(n)  # the client closed
            return out

        r = asyncio.run(run())
    finally:
        bt._stop(p)
    return {"n": n, "sync_p50": statistics.median(sync_lat), "async_p50": statistics.median(r["lat"]),
            "async_p99": bt._pct(r["lat"], 0.99), "seq_lag": r["seq_lag"][0], "seq_lag_p99": r["seq_lag"][1],
            "seq_lag_cpu": r["seq_lag"][2], "burst": r["burst"], "loop_cpu_per_call": r["per_call"],
            "burst_lag": r["burst_lag"][0], "burst_lag_p99": r["burst_lag"][1], "burst_lag_cpu": r["burst_lag"][2],
            "burst_lag_io_cpu": r["burst_lag"][3], "burst_lag_gc": r["burst_lag"][4],
            "burst_lag_gc_gen": r["burst_lag"][5],
            "start_turn_per_call": r["start_ours"], "start_turn_asyncio_per_call": r["start_asyncio"],
            "floor_lag": r["floor"][0], "floor_lag_cpu": r["floor"][2], "idle_lag": r["idle_lag"][0],
            "idle_lag_p99": r["idle_lag"][1]}


def _compare(other: str, rounds: int, quick: bool) -> None:
    """Alternate fresh runs of the code in ``other`` and of this tree's, printing one JSON line each."""
    trees = {"before": str(Path(other).resolve()), "after": str(HERE.parent.parent)}
    for i in range(rounds):
        for label, root in trees.items():
            env = dict(os.environ, AM_BENCH_ROOT=root)
            out = subprocess.run([sys.executable, str(HERE), *(["--quick"] if quick else [])], env=env,
                                 capture_output=True, text=True, timeout=600)
            if out.returncode:
                print(json.dumps({"run": i, "code": label, "error": out.stderr[-2000:]}), flush=True)
                continue
            print(json.dumps({"run": i, "code": label, **json.loads(out.stdout)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--compare", metavar="DIR", help="a tree of the code to compare with (e.g. main exported)")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if a.compare:
        _compare(a.compare, a.rounds, a.quick)
        return
    import transport

    r = measure(a.quick)
    r["transport"] = str(Path(transport.__file__).parent)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
