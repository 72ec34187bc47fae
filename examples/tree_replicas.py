"""A tree of replicas (after the seeds' tree-state-source example): one source of flight statuses, mirrored
by replicas, which are mirrored again, with HTTP endpoints on the leaves.

    root ("flights", a real Machine, changing on a timer)
     |-- r1 (RemoteMachine mirror of root, exposed again)      |-- r2 (same)
          |-- r1.1  r1.2  r1.3 (mirrors of r1)                     |-- r2.1  r2.2  r2.3 (mirrors of r2)
               each with an HTTP endpoint: GET / -> {"replica", "active", "time"} as JSON

State clocks flow from the root down; a mutation made on a leaf travels up to the root (one round trip per
level) and comes back down. Everything runs in this one process over loopback TCP (ZeroMQ for the replicas, a
stdlib ``http.server`` on a random port per leaf); in a deployment each level would be its own process.

An endpoint serving a mirror pushes on the changes its mirror receives, so every level stays current by
pushes alone (docs/manual.md section 5.6).

The script makes a few HTTP GETs while the root changes, checks each answer is a clock the root really had,
pauses the root and checks every leaf converges to the root's exact clock, makes one change on a leaf and sees
it on the root and on another leaf, then shuts everything down.

Run: .venv/bin/python examples/tree_replicas.py
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from machine import Machine, Result, State, Tracer, Transition
from transport import Client, Endpoint, RemoteMachine, connect, expose

FLIGHTS = 3
STATUSES = ("Scheduled", "Boarding", "Departed", "Arrived")
GATES = ("Gate1", "Gate2", "Gate3")
TIMEOUT = 5.0  # every wait is bounded
TICK = 0.03  # the root changes this often


def flights_schema(n: int) -> dict[str, State]:
    """Per flight: a status (one of STATUSES), a gate (one of GATES) and a Delayed flag."""
    schema: dict[str, State] = {}
    for f in range(1, n + 1):
        status = [f"Flight{f}{s}" for s in STATUSES]
        gates = [f"Flight{f}{g}" for g in GATES]
        delayed = f"Flight{f}Delayed"
        for s in status:
            # mutually exclusive (a state removing itself is dropped); a flight in the air is no longer delayed
            schema[s] = State(remove=(*status, delayed) if s.endswith(("Departed", "Arrived")) else status)
        for g in gates:
            schema[g] = State(remove=gates)
        schema[delayed] = State()
    return schema


SCHEMA = flights_schema(FLIGHTS)


class History(Tracer):
    """Remembers every clock the root had, to check what the leaves serve."""

    def __init__(self, mach: Machine) -> None:
        self.mach = mach
        self.clocks = {tuple(mach.time())}
        self.lock = threading.Lock()

    def transition_end(self, tx: Transition) -> None:
        with self.lock:
            self.clocks.add(tuple(tx.time_after))

    def had(self, time: list[int]) -> bool:
        with self.lock:
            if tuple(time) in self.clocks:
                return True
        # a push can leave the root between a transition applying its clock and the transition's end (where
        # this tracer records it): let the transition in progress finish, then look again
        self.mach.eval(lambda: None, timeout=TIMEOUT)
        with self.lock:
            return tuple(time) in self.clocks


def run_root_timer(root: Machine, stop: threading.Event, seed: int = 7) -> threading.Thread:
    """Change the root every TICK seconds until ``stop`` is set: statuses advance, gates change, delays."""
    rng = random.Random(seed)

    def loop() -> None:
        while not stop.wait(TICK):
            f = rng.randint(1, FLIGHTS)
            r = rng.random()
            if r < 0.5:
                cur = root.switch(*[f"Flight{f}{s}" for s in STATUSES])
                nxt = STATUSES[(STATUSES.index(cur[len(f"Flight{f}"):]) + 1) % len(STATUSES)] if cur else STATUSES[0]
                root.add(f"Flight{f}{nxt}")
            elif r < 0.8:
                root.add(f"Flight{f}{rng.choice(GATES)}")
            elif root.any_active(f"Flight{f}Scheduled", f"Flight{f}Boarding"):
                root.toggle(f"Flight{f}Delayed")

    t = threading.Thread(target=loop, name="root-timer", daemon=True)
    t.start()
    return t


def snapshot(name: str, mach: Machine) -> dict[str, Any]:
    """What the HTTP endpoint answers: one clock read, and the active states derived from it."""
    t = mach.time()
    return {"replica": name, "machine": mach.id, "active": [s for s, x in zip(mach.state_names, t, strict=True)
                                                            if x & 1], "time": t}


def serve_http(name: str, mach: Machine) -> ThreadingHTTPServer:
    """GET / on 127.0.0.1:<random port> returns the replica's active states as JSON."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            body = json.dumps(snapshot(name, mach)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, args=(0.05,), name=f"http {name}", daemon=True).start()
    return srv


def get(srv: ThreadingHTTPServer) -> dict[str, Any]:
    port = srv.server_address[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=TIMEOUT) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


class Replica:
    """A level-1 replica: a mirror of the root, exposed again (it pushes on the clocks it receives)."""

    def __init__(self, name: str, upstream: str) -> None:
        self.name = name
        self.client = connect(upstream, timeout=TIMEOUT)
        self.mirror = self.client.machine("flights")
        self.endpoint: Endpoint = expose(self.mirror)

    def close(self) -> None:
        self.endpoint.stop()
        self.client.close()


class Leaf:
    """A level-2 replica: a mirror of a level-1 replica, with an HTTP endpoint."""

    def __init__(self, name: str, upstream: str) -> None:
        self.name = name
        self.client: Client = connect(upstream, timeout=TIMEOUT)
        self.mirror: RemoteMachine = self.client.machine("flights")
        self.http = serve_http(name, self.mirror)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.client.close()


def main() -> None:
    t0 = time.monotonic()
    root = Machine(SCHEMA, id="flights")
    for f in range(1, FLIGHTS + 1):
        root.add(f"Flight{f}Scheduled", f"Flight{f}Gate{f}")
    history = History(root)
    root.bind_tracer(history)
    ep_root = expose(root)
    replicas: list[Replica] = []
    leaves: list[Leaf] = []
    stop = threading.Event()
    timer = None
    try:
        for i in (1, 2):
            r = Replica(f"r{i}", ep_root.address)
            replicas.append(r)
            for j in (1, 2, 3):
                leaves.append(Leaf(f"r{i}.{j}", r.endpoint.address))
        print(f"root {ep_root.address}; level 1: {', '.join(r.endpoint.address for r in replicas)}")
        print(f"{len(leaves)} leaves with HTTP: "
              + ", ".join(f"{lf.name}=http://127.0.0.1:{lf.http.server_address[1]}/" for lf in leaves))

        timer = run_root_timer(root, stop)
        print("GETs while the root changes:")
        seen = set()
        for k in range(8):
            data = get(leaves[k % len(leaves)].http)
            ok = history.had(data["time"])
            seen.add(tuple(data["time"]))
            print(f"  GET {data['replica']}: {' '.join(data['active'])}  "
                  f"[{'a root clock' if ok else 'NOT a root clock'}]")
            assert ok, data
            stop.wait(0.1)  # the program's pace, not synchronisation: the root's timer is independent
        assert len(seen) > 1, "the root did not change between GETs"

        # pause the root, then every leaf must reach exactly the root's clock
        stop.set()
        timer.join(TIMEOUT)
        want = root.time()
        for lf in leaves:
            if not lf.mirror.when_time(root.state_names, want).wait(TIMEOUT):
                raise TimeoutError(f"{lf.name} did not catch up: {lf.mirror.time()} != {want}")
        answers = [get(lf.http) for lf in leaves]
        assert all(a["time"] == want for a in answers), answers
        print(f"root paused at {root}; all {len(leaves)} leaves serve the same clock")

        # a change made on a leaf goes up to the root and comes down the other branch
        src, other = leaves[1], leaves[-1]
        if src.mirror.is_active("Flight1Delayed"):
            src.mirror.remove("Flight1Delayed")  # so that the add below is a change (this travels up too)
        res = src.mirror.add("Flight1Delayed")
        print(f"add Flight1Delayed on leaf {src.name}: {Result(res).name.lower()}; root has it: "
              f"{root.is_active('Flight1Delayed')}")
        if not other.mirror.when("Flight1Delayed").wait(TIMEOUT):
            raise TimeoutError(f"{other.name} never saw Flight1Delayed")
        data = get(other.http)
        print(f"  GET {data['replica']}: {' '.join(data['active'])}")
        assert "Flight1Delayed" in data["active"] and data["time"] == root.time()
        print("the leaves follow the root")
    finally:
        stop.set()
        if timer is not None:
            timer.join(TIMEOUT)
        for lf in leaves:
            lf.close()
        for r in replicas:
            r.close()
        ep_root.stop()
        root.dispose()
    print(f"shut down ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    main()
