"""The ``long`` part of scripts/soak (``--minutes M``): one daemon, 100 machines changing all the time, 20 clients of
every kind for M minutes; RSS and every per-session and per-machine structure of the endpoint printed each minute.

Clients (threads of this process, each its own ``Client`` unless said): 10 mutators (batches of adds, dry runs,
a new connection every 15 s), 2 clients each shared by two threads (``mutate_many`` of 200 and ``machines()`` in
a loop), 4 waiters (``when_ticks`` and ``state_ctx`` on mirrors), 1 watcher with mutation records, 1 slow
watcher (a raw socket subscribed with records that pings and never reads), 1 that connects and closes in a loop.
Fails when RSS grows more than 5 MiB after the warm-up (a fifth of the run, at least a minute), when a structure
ends larger than twice its warm-up peak, or when a mutation is lost or applied twice.
"""

from __future__ import annotations

import gc
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
MACHINES = 100


def _schema() -> dict[str, Any]:
    from machine import State

    return {"Exception": State(multi=True), "Multi": State(multi=True), "Local": State(multi=True),
            "A": State(), "B": State(remove=("A",))}


class _Deny:
    def AEnter(self, e: Any) -> bool:  # a negotiation handler: dry runs with deny=1 are refused
        return bool(e.args.get("deny") != 1)


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def serve() -> None:
    """The daemon (a child process): prints its address, then answers ``stats``, ``ticks`` and ``quit``."""
    from machine import Machine
    from transport import expose

    machs = [Machine(_schema(), id=f"m{i}", handlers=_Deny()) for i in range(MACHINES)]
    ep = expose(machs)
    stop = threading.Event()

    def change() -> None:  # server-side changes, seen by every mirror
        i = 0
        while not stop.wait(0.005):
            machs[i % MACHINES].add("Local", args={"i": i})
            i += 1

    threading.Thread(target=change, daemon=True).start()
    print(ep.address, flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "stats":
            print(json.dumps(stats(ep)), flush=True)
        elif cmd == "ticks":
            print(json.dumps({m.id: m.tick("Multi") for m in machs}), flush=True)
        elif cmd == "quit":
            break
    stop.set()
    ep.stop()


def stats(ep: Any) -> dict[str, int]:
    """The sizes of what the endpoint keeps per session and per machine (reaching into its private parts)."""
    loop, pushes = ep._loop, ep._pushes
    sessions = list(loop.sessions.values())
    return {
        "rss": _rss(), "sessions": len(sessions), "subs": sum(len(s.subs) for s in sessions),
        "replies": sum(len(s.replies) for s in sessions), "waiters": sum(len(s.args_waiters) for s in sessions),
        "waiter_bytes": sum(s.args_bytes for s in sessions), "seq_gaps": sum(len(s.seqs.gaps) // 2 for s in sessions),
        "backlog_bytes": sum(s.backlog.bytes for s in sessions) + sum(b.bytes for b in loop.backlogs.values()),
        "dropped_backlogs": len(loop.backlogs), "muts": sum(len(d) for d in list(pushes.muts.values())),
        "held": sum(len(h) for h in list(pushes.held.values())), "later": len(pushes.later), "tasks": len(loop.tasks),
        "gc_objects": len(gc.get_objects()),
    }


class _Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.added = [0] * MACHINES  # adds of Multi answered "executed" or queued
        self.unknown = [0] * MACHINES  # adds whose outcome is unknown (timeout)
        self.errors: list[str] = []
        self.waited = 0
        self.missed_waits = 0
        self.records = 0

    def count(self, i: int, res: list[Any]) -> None:
        from machine import Result
        from transport import TransportError

        with self.lock:
            for r in res:
                if r == Result.EXECUTED or (type(r) is int and r >= Result.QUEUED):  # queued: applied in turn
                    self.added[i] += 1
                elif isinstance(r, TransportError) and r.code == "timeout":
                    self.unknown[i] += 1
                else:
                    self.errors.append(repr(r)[:200])


def _mutator(addr: str, t: _Tally, end: float, k: int) -> None:
    from transport import TransportError, connect

    rnd = random.Random(k)
    while time.monotonic() < end:
        with connect(addr, timeout=10, name=f"mut{k}") as c:
            rm = c.machine(f"m{10 + k}")
            until = min(end, time.monotonic() + 15)
            while time.monotonic() < until:
                i = rnd.randrange(MACHINES)
                try:
                    t.count(i, c.mutate_many([(f"m{i}", "add", ["Multi"], None)] * 10))
                except TransportError:
                    with t.lock:
                        t.unknown[i] += 10
                if rnd.random() < 0.1:
                    r = rm.can_add("A", args={"deny": 1})
                    if r != 1:
                        t.errors.append(f"a refused dry run answered {r}")


def _shared(addr: str, t: _Tally, end: float, k: int) -> None:
    from transport import TransportError, connect

    with connect(addr, timeout=30, name=f"shared{k}") as c:
        def lister() -> None:
            while time.monotonic() < end:
                c.machines()

        th = threading.Thread(target=lister)
        th.start()
        i = 90 + k
        while time.monotonic() < end:
            try:
                t.count(i, c.mutate_many([(f"m{i}", "add", ["Multi"], None)] * 200))
            except TransportError:
                with t.lock:
                    t.unknown[i] += 200
        th.join()


def _waiter(addr: str, t: _Tally, end: float, k: int) -> None:
    from transport import connect

    with connect(addr, timeout=10, name=f"wait{k}") as c:
        rm = c.machine(f"m{k}")
        while time.monotonic() < end:
            ctx = rm.state_ctx("Local")
            ok = rm.when_ticks("Local", 2).wait(5)
            with t.lock:
                t.waited += 1
                t.missed_waits += not ok or not ctx.wait(1)


def _watcher(addr: str, t: _Tally, end: float) -> None:
    from transport import connect

    with connect(addr, timeout=10, name="watch") as c:
        rm = c.machine("m0", mutations=True)

        def seen(u: dict[str, Any]) -> None:
            with t.lock:
                t.records += len(u["mutations"])

        rm.on_update(seen)
        while time.monotonic() < end:
            time.sleep(0.5)


def _slow_watcher(addr: str, end: float) -> None:
    import msgpack
    import zmq

    s: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, 1)
    s.connect(addr)
    seq = 1
    for kind, mach, body in (("hello", None, {"id": "slow", "proto": 1}), ("sub", "m1", {"muts": True})):
        s.send(msgpack.packb([kind, seq, mach, body]))
        seq += 1
    while time.monotonic() < end:  # alive, never reading
        s.send(msgpack.packb(["ping", seq, None, {}]))
        seq += 1
        time.sleep(1.0)
    s.close(0)


def _churn(addr: str, end: float) -> None:
    from transport import connect

    while time.monotonic() < end:
        with connect(addr, timeout=10, name="churn") as c:
            c.machine(f"m{random.randrange(MACHINES)}")
        time.sleep(0.2)


def run(minutes: float, log: Any = print) -> tuple[bool, list[str], int]:
    """Run it; returns (nothing lost and nothing grew, the lines to report, mutations applied)."""
    proc = subprocess.Popen([sys.executable, str(HERE), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdin is not None and proc.stdout is not None

    def ask(cmd: str) -> Any:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(cmd + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    addr = proc.stdout.readline().strip()
    t = _Tally()
    start = time.monotonic()
    end = start + minutes * 60
    jobs = ([(_mutator, (addr, t, end, k)) for k in range(10)] + [(_shared, (addr, t, end, k)) for k in range(2)]
            + [(_waiter, (addr, t, end, k)) for k in range(4)] + [(_watcher, (addr, t, end))]
            + [(_slow_watcher, (addr, end)), (_churn, (addr, end))])
    threads = [threading.Thread(target=_guard, args=(fn, args, t)) for fn, args in jobs]
    for th in threads:
        th.start()
    warm_until = start + max(60.0, minutes * 12)  # a fifth of the run, at least a minute
    samples: list[dict[str, int]] = []
    warm: dict[str, int] = {}
    lines: list[str] = []
    try:
        while time.monotonic() < end:
            time.sleep(max(0.0, min(60.0, end - time.monotonic())))
            s: dict[str, int] = ask("stats")
            samples.append(s)
            if time.monotonic() <= warm_until or not warm:
                warm = {k: max(warm.get(k, 0), v) for k, v in s.items()}
                warm["rss_at_end_of_warmup"] = s["rss"]
            log(f"   {(time.monotonic() - start) / 60:.1f} min: rss {s['rss'] / 2**20:.1f} MiB, "
                + ", ".join(f"{k} {v:,}" for k, v in s.items() if k != "rss"))
        for th in threads:
            th.join(60)
        ticks = ask("ticks")
    finally:
        try:
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
    lost = doubled = applied = 0
    for i in range(MACHINES):
        n = (ticks[f"m{i}"] + 1) // 2  # Multi: the first add activates it (tick 1), each further one adds 2
        applied += n
        lost += max(0, t.added[i] - n)
        doubled += max(0, n - t.added[i] - t.unknown[i])
    last = samples[-1]
    grown = [k for k, v in last.items() if k not in ("rss", "gc_objects") and v > 2 * warm.get(k, 0) + 50]
    if last["gc_objects"] > warm["gc_objects"] * 1.1 + 1000:
        grown.append("gc_objects")
    rss_growth = last["rss"] - warm["rss_at_end_of_warmup"]
    lines.append(f"{applied:,} mutations applied, {sum(t.unknown):,} of unknown outcome (timeouts), lost {lost}, "
                 f"doubled {doubled}, {len(t.errors)} errors{' (' + t.errors[0] + ')' if t.errors else ''}; "
                 f"waiters {t.waited:,} ({t.missed_waits} missed); watcher records {t.records:,}")
    lines.append(f"daemon RSS {warm['rss_at_end_of_warmup'] / 2**20:.1f} MiB after warm-up, "
                 f"{last['rss'] / 2**20:.1f} MiB at the end ({rss_growth / 2**20:+.1f} MiB, goal < 5 MiB); "
                 f"grown after warm-up: {', '.join(grown) or 'nothing'}")
    ok = not lost and not doubled and not t.errors and not grown and rss_growth < 5 * 2**20 and not t.missed_waits
    return ok, lines, applied


def _guard(fn: Any, args: tuple[Any, ...], t: _Tally) -> None:
    try:
        fn(*args)
    except Exception as exc:
        with t.lock:
            t.errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}"[:200])


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        ROOT = HERE.parent.parent
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        serve()
