"""Load: client processes mutating one remote multi state at once, each with waiters on its mirror.

8 client processes x 1000 remote ``add`` of a multi state on one machine served from this process, and 8
``when_ticks`` waiters per client on its mirror, spread over the run up to the final tick. Nothing may be lost:
the source's tick is exact (1 + 2 * (total - 1)), every mutation returns ``executed``, every waiter resolves, no
client fails. ``run_load`` is shared with ``scripts/soak`` (longer runs, printed figures).

The client is this file run as a script: ``python test_load.py ADDR MACH COUNT TOTAL WAITERS TIMEOUT``. It prints
``READY`` once its mirror and waiters exist, starts on a ``go`` line on stdin, and prints one JSON line of
results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from tr_util import readline  # noqa: E402

SCHEMA_STATES = ("Multi", "Other")


def thresholds(total: int, waiters: int) -> list[int]:
    """Ticks of the multi state spread over the run, the last one exactly the final tick."""
    final = 2 * total - 1
    return [max(1, final * (i + 1) // waiters) for i in range(waiters)]


def client(addr: str, mach_id: str, count: int, total: int, waiters: int, timeout: float) -> None:
    from transport import TransportError, connect

    out: dict[str, Any] = {"ok": 0, "errors": 0, "error_samples": [], "resolved": 0, "waiters": waiters}
    c = connect(addr, timeout=10)
    try:
        m = c.machine(mach_id)
        start = m.tick("Multi")
        ws = [m.when_ticks("Multi", t - start) for t in thresholds(total, waiters)]
        print("READY", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        t0 = time.perf_counter()
        for _ in range(count):
            try:
                r = m.add("Multi")
            except TransportError as exc:
                r = exc
            if r == 0:
                out["ok"] += 1
            else:
                out["errors"] += 1
                if len(out["error_samples"]) < 3:
                    out["error_samples"].append(repr(r))
        out["mutate_s"] = time.perf_counter() - t0
        deadline = time.monotonic() + timeout
        out["resolved"] = sum(w.wait(max(0.0, deadline - time.monotonic())) for w in ws)
        out["done_s"] = time.perf_counter() - t0
        out["final_tick"] = m.tick("Multi")
    finally:
        print(json.dumps(out), flush=True)
        c.close()


@dataclass
class LoadResult:
    clients: int
    per_client: int
    waiters_each: int
    seconds: float = 0.0
    mutations_ok: int = 0
    errors: int = 0
    waiters_resolved: int = 0
    crashes: int = 0
    source_tick: int = 0
    expected_tick: int = 0
    endpoint_errors: int = 0
    samples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.clients * self.per_client

    @property
    def rate(self) -> float:
        return self.mutations_ok / self.seconds if self.seconds else 0.0

    @property
    def lost(self) -> int:
        """Mutations, waiters and ticks that did not arrive: the goal is 0."""
        return ((self.total - self.mutations_ok) + (self.clients * self.waiters_each - self.waiters_resolved)
                + abs(self.expected_tick - self.source_tick))

    def line(self) -> str:
        return (f"load: {self.clients} client processes x {self.per_client} remote add = {self.total} mutations, "
                f"{self.clients} x {self.waiters_each} waiters: {self.seconds:.2f} s, {self.rate:,.0f} mutations/s, "
                f"ok {self.mutations_ok}, errors {self.errors}, waiters resolved {self.waiters_resolved}/"
                f"{self.clients * self.waiters_each}, crashes {self.crashes}, source tick {self.source_tick} "
                f"(expected {self.expected_tick})")


def run_load(clients: int = 8, per_client: int = 1000, waiters: int = 8, timeout: float = 60.0) -> LoadResult:
    """Serve a machine from this process, run the client processes against it, and stop everything."""
    from machine import Machine, State
    from transport import expose

    res = LoadResult(clients, per_client, waiters)
    res.expected_tick = 2 * res.total - 1
    mach = Machine({s: State(multi=(s == "Multi")) for s in SCHEMA_STATES}, id="load")
    ep = expose(mach)
    procs: list[subprocess.Popen[str]] = []
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        for _ in range(clients):
            procs.append(subprocess.Popen(
                [sys.executable, str(HERE), ep.address, mach.id, str(per_client), str(res.total), str(waiters),
                 str(timeout)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env))
        for p in procs:
            assert p.stdout is not None
            line = readline(p.stdout, 30)
            assert line == "READY", f"a client did not start: {line!r}"
        t0 = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        deadline = time.monotonic() + timeout
        for p in procs:
            assert p.stdout is not None
            try:
                line = readline(p.stdout, max(0.1, deadline - time.monotonic()))
                r = json.loads(line)
            except (TimeoutError, ValueError) as exc:
                res.crashes += 1
                res.samples.append(f"client {p.pid}: {exc!r}")
                continue
            res.mutations_ok += r["ok"]
            res.errors += r["errors"]
            res.waiters_resolved += r["resolved"]
            res.samples += r["error_samples"]
        res.seconds = time.perf_counter() - t0
        for p in procs:
            try:
                if p.wait(10) != 0:
                    res.crashes += 1
            except subprocess.TimeoutExpired:
                res.crashes += 1
        res.source_tick = mach.tick("Multi")
        res.endpoint_errors = ep.errors
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
            for f in (p.stdin, p.stdout):
                if f is not None:
                    f.close()
        ep.stop()
        mach.dispose()
    return res


def test_load_8_clients_x_1000_remote_mutations_with_waiters(record_property: Any) -> None:
    res = run_load(clients=8, per_client=1000, waiters=8, timeout=60)
    print(res.line())
    record_property("load", res.line())
    assert res.crashes == 0, res.samples
    assert res.errors == 0 and res.mutations_ok == 8000, res.samples
    assert res.waiters_resolved == 64
    assert res.source_tick == res.expected_tick == 15999
    assert res.endpoint_errors == 0
    assert res.lost == 0


if __name__ == "__main__":
    a = sys.argv[1:]
    client(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), float(a[5]))
