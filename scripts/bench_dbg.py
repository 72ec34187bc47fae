"""P11: ``arpc dbg`` following many busy machines. ``python scripts/bench_dbg.py [--machines 1000] [--rate 2000]
[--seconds 10]``.

A daemon process serves ``--machines`` machines on one endpoint (history on, as ``expose`` does by default) and
changes them ``--rate`` times a second in total (round robin, Foo and Bar in turn). This process runs the real
``arpc dbg`` screen (the same Application, model and live source) drawing into an 80x24 terminal that goes to
/dev/null, and measures for every redraw how far the screen is behind the source: for each transition of the followed
histories (every machine's: the daemon follows up to MAX_FOLLOWS a session), the wall time of the first redraw after
it reached the model minus its wall time on the source (both processes on this host read the same clock). Also: the
transitions/s the daemon reached, the transitions that reached the screen, RSS (peak). ``--trace``: where the worst
redraws' lag went (on the wire, queued, the pump, the render), the CPU time of each, the time both processes' threads
waited for a CPU (Linux schedstat) and the GC passes meanwhile.

Targets (issue 13): the screen never more than 100 ms behind, RSS under 300 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def daemon(n: int, rate: float, addr_dir: str, prefill: int = 0) -> None:
    """The load: ``n`` machines, ``rate`` transitions/s in total, in batches every 10 ms; prints the address, then
    at stdin EOF the transitions made and the seconds it took."""
    import gc

    from bench_arpc import fleet

    machs, ep = fleet(n, addr_dir)
    for i in range(prefill * n):  # histories full before the screen connects: its backlog is that much
        machs[i % n].add("Foo" if (i // n) % 2 == 0 else "Bar")
    print("ready", flush=True)
    stop = threading.Event()
    made = [0]
    t0 = [0.0]
    late = [0.0]  # the drive loop's longest oversleep: the daemon's own stalls (GIL, scheduling, GC)
    gc_max = [0.0, 0.0, 0.0, 0.0]  # (start, CPU at start, the longest collection, the most CPU one took)

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_max[:2] = time.perf_counter(), time.thread_time()
        else:
            gc_max[2] = max(gc_max[2], time.perf_counter() - gc_max[0])
            gc_max[3] = max(gc_max[3], time.thread_time() - gc_max[1])
    cpu0 = time.process_time()

    gc.callbacks.append(on_gc)
    cpu0 = time.process_time()

    def drive() -> None:
        go = sys.stdin.readline()  # "go": the screen follows every machine by now
        if not go:
            return
        i = 0
        t0[0] = start = time.perf_counter()
        while not stop.is_set():
            due = int((time.perf_counter() - start) * rate)
            while made[0] < due and not stop.is_set():
                m = machs[i % n]
                m.add("Foo" if (i // n) % 2 == 0 else "Bar")
                i += 1
                made[0] += 1
            t = time.perf_counter()
            time.sleep(0.01)
            late[0] = max(late[0], time.perf_counter() - t - 0.01)

    th = threading.Thread(target=drive, daemon=True)
    th.start()
    sys.stdin.readline()  # the second line (or EOF) stops the load
    stop.set()
    took = time.perf_counter() - t0[0]
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - t0[0])
    print(f"{made[0]} {took:.3f} {late[0]:.3f} {gc_max[2]:.3f} {cpu:.3f} {gc_max[3]:.3f}", flush=True)
    ep.stop()


def run_delays(pid: int | str = "self") -> dict[str, int]:
    """Per thread of a process, the nanoseconds it waited runnable for a CPU so far (Linux schedstat)."""
    out: dict[str, int] = {}
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"{base}/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return out


def waited(a: dict[str, int], b: dict[str, int]) -> float:
    """The longest run-queue wait of any one thread between two ``run_delays`` samples, seconds."""
    return max((b[t] - a.get(t, 0) for t in b), default=0) / 1e9


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size of this process, MiB (Linux /proc)."""
    cur = peak = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--machines", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=2000.0, help="transitions per second, all machines together")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=float, help="redraws per second at most (default: arpc dbg's)")
    ap.add_argument("--gc-stats", action="store_true", help="print the most numerous objects the GC tracks")
    ap.add_argument("--trace", action="store_true",
                    help="where the worst lags come from: per redraw, the pump, the render, GC pauses, loop delay")
    ap.add_argument("--daemon", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prefill", type=int, default=0, help="transitions per machine before the screen connects")
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.daemon:
        daemon(a.machines, a.rate, a.dir, a.prefill)
        return

    from prompt_toolkit.data_structures import Size
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output.vt100 import Vt100_Output

    from arpc.dbg.app import FREEZE_AFTER, DbgApp
    from arpc.dbg.model import Model
    from arpc.dbg.sources import Feed, LiveSource
    from arpc.session import Session
    from transport import protocol as P

    tmp = tempfile.mkdtemp(prefix="bench-dbg-")
    proc = subprocess.Popen([sys.executable, __file__, "--daemon", "--machines", str(a.machines), "--rate",
                             str(a.rate), "--dir", tmp, "--prefill", str(a.prefill)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdin is not None
    address = proc.stdout.readline().strip()
    proc.stdout.readline()  # ready (after the prefill)
    print(f"daemon: {a.machines} machines on {address}", file=sys.stderr)

    session = Session(connect_timeout=10.0)
    session.load([address])
    feed = Feed()
    model = Model()
    source = LiveSource(session, feed)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed at the end
    output = Vt100_Output(devnull, lambda: Size(rows=24, columns=80), term="xterm")
    lags: list[float] = []
    wire: list[float] = []  # source -> this process's feed, per record
    records = [0]

    with create_pipe_input() as inp:
        dbg = DbgApp(model, feed, source=source, output=output, input=inp,
                     **({"fps": a.fps} if a.fps else {}))
        waiting: list[float] = []  # source times of the transitions drained and not drawn yet
        pump = dbg.pump

        gc_pauses: list[tuple[float, float, int, float]] = []  # (end, seconds, generation, CPU seconds)
        gc_t0 = [0.0, 0.0]

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                gc_t0[:] = time.perf_counter(), time.thread_time()
            elif measuring[0]:
                gc_pauses.append((time.time(), time.perf_counter() - gc_t0[0], int(info["generation"]),
                                  time.thread_time() - gc_t0[1]))

        if a.trace:
            import gc
            gc.callbacks.append(on_gc)
        frames: list[dict[str, Any]] = []  # per redraw (--trace): what its worst transition waited for
        samples: list[tuple[float, dict[str, int], dict[str, int]]] = []  # (time, this process's, the daemon's)

        def sample() -> None:
            if a.trace and measuring[0]:
                samples.append((time.time(), run_delays(), run_delays(proc.pid)))
        cur: dict[str, Any] = {}

        def pump_and_note() -> bool:
            # the source times of the followed transitions about to be drawn
            sample()
            p0 = time.time()
            c0 = time.thread_time()
            events = feed.drain()
            for ev in events:
                if ev.get("k") == "history":
                    records[0] += 1
                    src_t = float(ev["rec"].get("time") or 0.0)
                    if measuring[0]:
                        wire.append(ev["t"] - src_t)
                        waiting.append(src_t)
            for ev in events:
                model.feed(ev)
            r = pump() or bool(events)
            if a.trace and events:
                hist = [ev for ev in events if ev.get("k") == "history"]
                if hist and not cur:
                    oldest = min(hist, key=lambda ev: float(ev["rec"].get("time") or 0.0))
                    cur.update(src=float(oldest["rec"].get("time") or 0.0), recv=oldest["t"], drain=p0,
                               pumped=time.time(), n=len(events), cpu=time.thread_time() - c0)
                elif cur:
                    cur["n"] = cur.get("n", 0) + len(events)
            return r

        dbg.pump = pump_and_note  # type: ignore[method-assign]
        after = dbg._after_render

        def before_render(app: Any) -> None:
            if cur:
                cur["render0"] = time.time()
                cur["rcpu"] = time.thread_time()

        def after_render(app: Any) -> None:
            after(app)
            now = time.time()
            if a.trace and cur and measuring[0]:
                frames.append({**cur, "render1": now, "rcpu": time.thread_time() - cur.get("rcpu", 0.0)})
                sample()
            cur.clear()
            lags.extend(now - t for t in waiting)
            waiting.clear()
            redraws[0] += 1

        dbg.app.after_render._handlers = [after_render]  # type: ignore[attr-defined]
        dbg.app.before_render += before_render
        measuring = [False]
        redraws = [0]

        async def scenario() -> None:
            t0 = time.monotonic()
            source.start()
            while len(source._subs) < a.machines and time.monotonic() - t0 < 120:
                await asyncio.sleep(0.2)
            print(f"following {len(source._subs)} machines after {time.monotonic() - t0:.1f}s", file=sys.stderr)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            await asyncio.sleep(1.0 + FREEZE_AFTER)  # warm-up (the screen freezes what lasts meanwhile)
            measuring[0] = True
            r0, d0 = records[0], redraws[0]
            t1 = time.monotonic()
            cpu0 = time.process_time()
            await asyncio.sleep(a.seconds)
            measuring[0] = False
            got = records[0] - r0
            took = time.monotonic() - t1
            cpu = (time.process_time() - cpu0) / took
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            made, dt, d_late, d_gc, d_cpu, d_gc_cpu = proc.stdout.readline().split()
            cur, peak = rss_mib()
            lag_ms = sorted(x * 1000 for x in lags)
            print(f"source: {int(made) / float(dt):.0f} transitions/s (target {a.rate:.0f}); the daemon's longest "
                  f"stall {float(d_late) * 1000:.0f} ms, longest GC pass {float(d_gc) * 1000:.0f} ms "
                  f"({float(d_gc_cpu) * 1000:.0f} ms CPU at most), "
                  f"{float(d_cpu) * 100:.0f}% of one core")
            print(f"screen: {got / took:.0f} transitions/s of the {min(a.machines, P.MAX_FOLLOWS)} machines whose "
                  f"history is followed received, {(redraws[0] - d0) / took:.1f} redraws/s")
            if lag_ms:
                p99 = lag_ms[min(len(lag_ms) - 1, int(len(lag_ms) * 0.99))]
                print(f"source -> on screen, per transition: median {statistics.median(lag_ms):.1f} ms, "
                      f"p99 {p99:.1f} ms,"
                      f" max {lag_ms[-1]:.1f} ms (target < 100 ms)")
            if wire:
                w = sorted(x * 1000 for x in wire)
                print(f"of which source -> received: median {statistics.median(w):.1f} ms, "
                      f"p99 {w[min(len(w) - 1, int(len(w) * 0.99))]:.1f} ms")
            print(f"this process (screen, model, client I/O): {cpu * 100:.0f}% of one core; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            print(f"RSS {cur:.0f} MiB, peak {peak:.0f} MiB (target < 300 MiB); dropped events {model.dropped}")
            if a.trace and frames:
                def ms(x: float) -> str:
                    return f"{x * 1000:.0f}"

                import bisect

                times = [x[0] for x in samples]

                def queue_waits(f: dict[str, Any]) -> tuple[float, float]:
                    # run-queue waits between the last sample before the transition and the one after the redraw
                    i = max(0, bisect.bisect_right(times, f["src"]) - 1)
                    j = min(len(samples) - 1, bisect.bisect_left(times, f["render1"]))
                    return waited(samples[i][1], samples[j][1]), waited(samples[i][2], samples[j][2])

                own = []
                for f in frames:
                    w_dbg, w_dmn = queue_waits(f)
                    f["wq"] = (w_dbg, w_dmn)
                    own.append(f["render1"] - f["src"] - max(w_dbg, w_dmn))
                print(f"lag less the longest run-queue wait (of a thread of either process) in its span: max "
                      f"{max(own) * 1000:.0f} ms")
                frames.sort(key=lambda f: f["render1"] - f["src"], reverse=True)
                print("worst redraws (ms): lag = wire (source -> feed) + queued (feed -> drain) + pump + wait "
                      "(-> render) + render; events drained; GC pauses in that span")
                for f in frames[:8]:
                    gcs = [(round(d * 1000), g) for (end, d, g, _) in gc_pauses
                           if f["src"] <= end <= f["render1"] and (d > 0.002 or g == 2)]
                    print(f"  {ms(f['render1'] - f['src'])} = {ms(f['recv'] - f['src'])} + "
                          f"{ms(f['drain'] - f['recv'])} + {ms(f['pumped'] - f['drain'])} + "
                          f"{ms(f.get('render0', f['pumped']) - f['pumped'])} + "
                          f"{ms(f['render1'] - f.get('render0', f['pumped']))}; {f['n']} events; "
                          f"CPU pump {ms(f['cpu'])} render {ms(f['rcpu'])}; waited for a CPU: dbg "
                          f"{ms(f['wq'][0])} daemon {ms(f['wq'][1])}; GC {gcs}")
                if gc_pauses:
                    by_gen: dict[int, float] = {}
                    cpu_gen: dict[int, float] = {}
                    for _, d, g, c in gc_pauses:
                        by_gen[g] = max(by_gen.get(g, 0.0), d)
                        cpu_gen[g] = max(cpu_gen.get(g, 0.0), c)
                    print(f"GC: {len(gc_pauses)} collections, the longest per generation (ms): "
                          f"{ {g: round(d * 1000, 1) for g, d in sorted(by_gen.items())} }, in CPU time "
                          f"{ {g: round(d * 1000, 1) for g, d in sorted(cpu_gen.items())} }")
            if a.gc_stats:
                import collections
                import gc

                counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
                print(f"GC-tracked objects: {sum(counts.values())}; most numerous: {counts.most_common(8)}")
            dbg.app.exit(result=0)

        def pre_run() -> None:
            dbg.app.create_background_task(dbg._pump_loop())
            dbg.app.create_background_task(scenario())

        dbg.app.run(pre_run=pre_run)
    source.close()
    proc.stdin.close()
    proc.wait(10)
    devnull.close()


if __name__ == "__main__":
    main()
