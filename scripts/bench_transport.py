"""The `transport` section of scripts/bench: remote round trips, pipelining, push fan-out, CURVE cost.

Anchors, measured in the same run: a raw pyzmq DEALER -> ROUTER msgpack echo (the server in another process
decodes the frame and answers a frame of the same shape as ours). Servers and mirror workers run as child
processes of this module (`python scripts/bench_transport.py echo|daemon|mirrors ...`); latencies across
processes use CLOCK_MONOTONIC, which is system-wide.
"""

from __future__ import annotations

import json
import os
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


# ---------------------------------------------------------------------------------------------------- children


def _serving_router() -> Any:
    """The raw anchors' server socket: a ROUTER on a free loopback port, its address printed for the parent; the
    process exits when the parent closes its stdin."""
    import threading

    import zmq

    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    sock: Any = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind("tcp://127.0.0.1:*")
    print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    return sock


def serve_echo() -> None:
    import msgpack

    sock = _serving_router()
    while True:
        ident, data = sock.recv_multipart()
        kind, seq, mach, body = msgpack.unpackb(data, raw=False)
        if kind == "quit":
            return
        if seq:  # notifications get no reply, like ours
            sock.send_multipart([ident, msgpack.packb(["ok", seq, mach, [0, None]], use_bin_type=True)])


def _schema() -> dict[str, Any]:
    from machine import State

    return {"M": State(multi=True), "Foo": State(remove=("Bar",)), "Bar": State(remove=("Foo",))}


def serve_floor() -> None:
    """The round trip's floor: a raw ROUTER doing only the work a mutation needs (decode, a real transition on a
    Machine, the clock diff, encode), with none of the endpoint's checks, sessions, reply cache or pushes."""
    import msgpack

    from machine import Machine
    from transport import protocol as P

    m = Machine(_schema(), id="b0")
    sock = _serving_router()
    last = m.time()
    while True:
        ident, data = sock.recv_multipart()
        kind, seq, mach, body = msgpack.unpackb(data, raw=False)
        r = int(m.add(*body["s"]))
        t, q, mt = m.time(), m.queue_tick, m.machine_tick
        idxs, deltas = P.diff(last, t)
        last = t
        sock.send_multipart([ident, msgpack.packb(["ok", seq, mach, [r, [idxs, deltas, q, mt, P.checksum(t, q, mt)]]],
                                                  use_bin_type=True)])


def serve_fan_raw() -> None:
    """The fan-out anchor's server: a raw ROUTER; `hello` registers a peer, `add` is answered and then one small
    frame (the size of our clock push) goes to every peer."""
    import msgpack
    import zmq

    sock = _serving_router()
    peers: list[bytes] = []
    while True:
        ident, data = sock.recv_multipart()
        kind, seq, mach, body = msgpack.unpackb(data, raw=False)
        if kind == "hello":
            peers.append(ident)
        sock.send_multipart([ident, msgpack.packb(["ok", seq, mach, [0, None]], use_bin_type=True)])
        if kind == "add":
            frame = msgpack.packb(["clk", 0, "b0", [[0], [2], seq, 1, 123456]], use_bin_type=True)
            for p in peers:
                sock.send(p, zmq.SNDMORE | zmq.NOBLOCK)
                sock.send(frame, zmq.NOBLOCK)


def run_raw_mirrors(addr: str, n: int) -> None:
    """The fan-out anchor's worker: n raw DEALERs read by one thread (an epoll over their fds, like our client I/O
    thread); each is the least a mirror is: the push decoded, its diff applied to the DEALER's copy of the clock,
    and the time noted when the watched tick reaches the one awaited (ours: a `when_time` waiter's callback, on
    the I/O thread too); dump JSON on stdin EOF."""
    import select
    import threading

    import msgpack
    import zmq

    ctx: Any = zmq.Context.instance()
    socks = []
    for _ in range(n):
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(addr)
        d.send(msgpack.packb(["hello", 1, None, {}], use_bin_type=True))
        d.recv()
        socks.append(d)
    # per fd: the socket, the times noted, its clock (one tick: the anchor's server sends a diff of index 0) and
    # the tick awaited next
    recs: dict[int, tuple[Any, list[float], list[int], list[int]]] = {
        d.getsockopt(zmq.FD): (d, [], [0], [1]) for d in socks}
    ep = select.epoll()
    for fd in recs:
        ep.register(fd, select.EPOLLIN)
    for d in socks:
        d.getsockopt(zmq.EVENTS)  # libzmq's rule: ask EVENTS before waiting on the fd
    stop = threading.Event()
    def wait_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_eof, daemon=True).start()
    print("READY", flush=True)
    pollin = int(zmq.POLLIN)
    while not stop.is_set():
        for fd, _ in ep.poll(0.1):
            d, rec, clock, want = recs[fd]
            while d.getsockopt(zmq.EVENTS) & pollin:
                _, _, _, (idxs, deltas, *_) = msgpack.unpackb(d.recv(zmq.NOBLOCK), raw=False)
                for i, delta in zip(idxs, deltas, strict=True):
                    clock[i] += delta
                if clock[0] >= want[0]:
                    rec.append(time.monotonic())
                    want[0] = clock[0] + 1
    print(json.dumps([r[1] for r in recs.values()]), flush=True)
    os._exit(0)


def serve_daemon(keys: str | None) -> None:
    from machine import Machine
    from transport import expose

    m = Machine(_schema(), id="b0")
    kw: dict[str, Any] = {}
    if keys:
        kw = {"curve": f"{keys}/server.key_secret", "allow": f"{keys}/clients"}
    ep = expose(m, **kw)
    print(ep.address, flush=True)
    sys.stdin.readline()
    ep.stop()


def serve_slow(n: int, pause: float) -> None:
    """n machines b0..b<n-1> on one endpoint; b0's MState sleeps ``pause`` seconds (the slow machine)."""
    from machine import Machine
    from transport import expose

    class Slow:
        def MState(self, e: Any) -> None:
            time.sleep(pause)

    machs = [Machine(_schema(), id=f"b{i}", handlers=Slow() if i == 0 else None, handler_timeout=None)
             for i in range(n)]
    ep = expose(machs)
    print(ep.address, flush=True)
    sys.stdin.readline()
    ep.stop()


def _arm(rm: Any, rec: list[float]) -> None:
    """A waiter for the next tick of M; when it resolves, note the time and wait for the one after."""
    w = rm.when_time(["M"], [rm.tick("M") + 1])

    def done() -> None:
        if not w.cancelled:
            rec.append(time.monotonic())
            _arm(rm, rec)

    w.on_done(done)


def run_mirrors(addr: str, n: int) -> None:
    """n clients on one mirror each; record when each sees each tick of M; dump JSON on stdin EOF."""
    from transport import connect

    seen: list[list[float]] = []
    clients = []
    for _ in range(n):
        c = connect(addr)
        rm = c.machine("b0")
        rec: list[float] = []
        seen.append(rec)

        _arm(rm, rec)
        clients.append(c)
    print("READY", flush=True)
    sys.stdin.read()
    print(json.dumps(seen), flush=True)
    for c in clients:
        c.close()


def _spawn(*args: str) -> tuple[subprocess.Popen[str], str]:
    return _spawn_at(HERE, *args)


def _spawn_at(script: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """A child running ``script`` (this module, or its copy in another checkout: that checkout's code)."""
    p = subprocess.Popen([sys.executable, str(script), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None
    line = p.stdout.readline().strip()
    if not line:
        p.kill()
        raise RuntimeError(f"child {args} said nothing")
    return p, line


def _stop(p: subprocess.Popen[str]) -> None:
    try:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(5)
    except Exception:
        p.kill()


# ---------------------------------------------------------------------------------------------------- measurements


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * q))]


def _lat(fn: Any, n: int) -> list[float]:
    for _ in range(min(500, n)):
        fn()
    out = []
    pc = time.perf_counter
    for _ in range(n):
        t = pc()
        fn()
        out.append(pc() - t)
    return out


def _cpu_ns(pid: int | str = "self") -> int:
    """CPU time of every thread of a process so far (ns, from the scheduler's own account: no tick rounding)."""
    out = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                out += int(f.read().split()[0])
        except OSError:
            pass  # a thread that ended meanwhile
    return out


def _lat_cpu(fn: Any, n: int) -> tuple[list[float], float, float]:
    """``_lat`` with the CPU time of the calling thread and of this whole process over the timed calls (s)."""
    for _ in range(min(500, n)):
        fn()
    out = []
    pc = time.perf_counter
    cpu, proc = time.thread_time(), _cpu_ns()
    for _ in range(n):
        t = pc()
        fn()
        out.append(pc() - t)
    return out, time.thread_time() - cpu, (_cpu_ns() - proc) / 1e9


def _raw_dealer(addr: str) -> Any:
    import zmq

    d: Any = zmq.Context.instance().socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(addr)
    return d


def _floor_rtt(fd: Any, seq: list[int]) -> Any:
    """A round trip to the floor server: the same work as ours, minus everything else (decode, apply the diff
    to a local machine's clock)."""
    import msgpack

    from machine import Machine
    from machine import mirror as mirror_api

    mirror = Machine(_schema(), id="b0")
    frame_body = {"s": ["M"]}

    def rtt() -> None:
        seq[0] += 1
        fd.send(msgpack.packb(["add", seq[0], "b0", frame_body], use_bin_type=True))
        _, _, _, (_, (idxs, deltas, q, mt, _)) = msgpack.unpackb(fd.recv(), raw=False)
        new = mirror_api.clock_view(mirror)[:]
        for i, dt in zip(idxs, deltas, strict=True):
            new[i] += dt
        mirror_api.set_clock(mirror, new, q, mt, idxs)

    return rtt


def _raw_client_rtt(addr: str) -> tuple[Any, Any]:
    """A raw DEALER driving our endpoint (hello, then `add` round trips with no mirror: the reply carries no
    diff): our server's share of a round trip, with the floor's client. Returns (socket, rtt)."""
    import msgpack

    d = _raw_dealer(addr)
    d.send(msgpack.packb(["hello", 1, None, {"proto": 1}], use_bin_type=True))
    if not d.poll(5000):
        raise RuntimeError("no hello reply")
    d.recv()
    seq = [1]
    frame_body = {"s": ["M"]}

    def rtt() -> None:
        seq[0] += 1
        d.send(msgpack.packb(["add", seq[0], "b0", frame_body], use_bin_type=True))
        msgpack.unpackb(d.recv(), raw=False)

    return d, rtt


def _raw_pipe(d: Any, seq: list[int], k: int) -> float:
    """Pipelined on the raw echo: a window of 100 outstanding requests; mutations a second."""
    import msgpack

    frame_body = {"s": ["M"]}
    t = time.perf_counter()
    sent = got = 0
    while got < k:
        while sent < k and sent - got < 100:
            seq[0] += 1
            sent += 1
            d.send(msgpack.packb(["add", seq[0], "b0", frame_body], use_bin_type=True))
        msgpack.unpackb(d.recv(), raw=False)
        got += 1
    return k / (time.perf_counter() - t)


def _ours_pipe(rm: Any, k: int) -> float:
    """Pipelined on ours: ``add_ns`` x k, then one ``sync``; the final tick checked; mutations a second."""
    before = rm.tick("M")
    t = time.perf_counter()
    for _ in range(k):
        rm.add_ns("M")
    rm.sync()
    dt = time.perf_counter() - t
    assert rm.tick("M") == before + 2 * k, (rm.tick("M"), before, k)
    return k / dt


_DRIVER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from transport import connect
def cpu_ns():
    import os
    out = 0
    for t in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{t}/schedstat") as f:
            out += int(f.read().split()[0])
    return out
c = connect(sys.argv[2])
rm = c.machine("b0")
print("READY", flush=True)
for line in sys.stdin:
    cmd, n = line.split()
    n = int(n)
    if cmd == "lat":
        for _ in range(min(500, n)):
            rm.add("M")
        out, pc = [], time.perf_counter
        cpu, proc = time.thread_time(), cpu_ns()
        for _ in range(n):
            t = pc()
            rm.add("M")
            out.append(pc() - t)
        print(json.dumps([out, time.thread_time() - cpu, (cpu_ns() - proc) / 1e9]), flush=True)
    else:
        before = rm.tick("M")
        t = time.perf_counter()
        for _ in range(n):
            rm.add_ns("M")
        rm.sync()
        dt = time.perf_counter() - t
        assert rm.tick("M") == before + 2 * n, (rm.tick("M"), before, n)
        print(json.dumps(n / dt), flush=True)
c.close()
"""


_HOT = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import zmq
from machine import Machine, State
from transport import protocol as P
P.HEARTBEAT = P.PEER_TIMEOUT = 1e9  # no ping takes a seq in the middle of the replies prepared below
schema = Machine({"M": State(multi=True), "Foo": State(), "Bar": State()}).schema
names = list(schema)
ctx = zmq.Context.instance()
router = ctx.socket(zmq.ROUTER)
router.setsockopt(zmq.SNDHWM, 0)
router.setsockopt(zmq.RCVHWM, 0)
addr = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
# fewer calls a block than the client's SNDHWM (MAX_PENDING): a send that fails would read the replies ahead
i, clock, mt, n = names.index("M"), [0] * len(names), [0], 800
if sys.argv[3] == "floor":
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.IDENTITY, b"floor")
    d.connect(addr)
    d.send(b"hi")
    ident = router.recv_multipart()[0]
    sys.path.insert(0, sys.argv[1] + "/scripts")
    from bench_transport import _floor_rtt
    call, hold, seq0 = _floor_rtt(d, [0]), None, lambda: 0
else:
    import threading
    from transport import connect
    def setup():
        for _ in range(2):
            who, data = router.recv_multipart()
            kind, seq, mach, body = P.unpack(data)
            out = {"boot": "b", "session": "s", "ns_many": True} if kind == "hello" else {
                "id": "b0", "schema": P.schema_to_wire(schema), "names": names, "time": clock, "qtick": 0,
                "mtick": 0, "parent_id": None, "tags": []}
            router.send_multipart([who, P.pack("ok", seq, mach, out)])
    th = threading.Thread(target=setup)
    th.start()
    c = connect(addr)
    rm = c.machine("b0")
    th.join()
    ident, hold, seq0 = c.id.encode(), c._io, lambda: c._next_seq
    call = lambda: rm.add("M")
res = []
for _ in range(int(sys.argv[2])):
    if hold is not None:
        hold.acquire()  # the client's I/O thread must not read the replies prepared for the calls
    s0 = seq0()
    for k in range(n):  # each call's reply waits on the socket before the call is made: no wait is measured
        mt[0] += 1
        d_ = 1 if clock[i] == 0 else 2
        clock[i] += d_
        router.send_multipart([ident, P.pack("ok", s0 + k, "b0", [0, [[i], [d_], 0, mt[0],
                                                                     P.checksum(clock, 0, mt[0])]])])
    time.sleep(0.1)
    t = time.thread_time()
    for _ in range(n):
        call()
    res.append((time.thread_time() - t) / n)
    if hold is not None:
        hold.release()
    while router.poll(0):
        router.recv_multipart()
print(min(res), sorted(res)[len(res) // 2])
"""


def measure_hot(other: str, rounds: int) -> dict[str, tuple[float, float]]:
    """The client's Python per remote ``add``, hot: each call's reply already waits on its socket (a fake server
    in the same process answered ahead), so only the caller's own work is timed (thread CPU time). This tree's
    client, another tree's (``other``) and the floor's raw client, in processes of their own, alternating:
    ``python scripts/bench_transport.py hot OTHER_ROOT [ROUNDS]``. Returns (best, median) seconds a call."""
    runs: dict[str, list[float]] = {"before": [], "after": [], "floor": []}
    order = [("before", Path(other).resolve(), "ours"), ("after", ROOT, "ours"), ("floor", ROOT, "floor")]
    for r in range(rounds):
        for name, root, mode in order if r % 2 == 0 else order[::-1]:
            p = subprocess.run([sys.executable, "-c", _HOT, str(root), "8", mode], capture_output=True, text=True)
            if p.returncode:
                raise RuntimeError(f"{name}: {p.stderr[-2000:]}")
            runs[name].append(float(p.stdout.split()[0]))
    return {name: (min(xs), statistics.median(xs)) for name, xs in runs.items()}


_HOT_SERVER = r"""
import os, sys, threading, time
sys.path.insert(0, sys.argv[1])
from transport import protocol as P
P.HEARTBEAT = P.PEER_TIMEOUT = 1e9  # no ping in the middle
from transport.server import dispatch as _d, leader as _l
_d.SLOW = _l.SLOW = 1e9  # (under valgrind, 50x slower, no transition may count as slow: it would take a lane)
from machine import Machine, State
from transport import expose, connect
m = Machine({"M": State(multi=True), "Foo": State(remove=("Bar",)), "Bar": State(remove=("Foo",))}, id="b0")
ep = expose(m)
c = connect(ep.address)
c.machine("b0").add("M")  # the session has a mirror: each reply carries a diff, as in the round trips
loop, ident, seq = ep._loop, c.id.encode(), [10**6]
def on_io(frames, res, done):
    send = loop.send
    loop.send = lambda s, f: True
    req = loop.request
    t = time.thread_time()
    for f in frames:
        req(ident, f, None)
    res.append(time.thread_time() - t)
    loop.send = send
    done.set()
def batch(n, kind="add"):
    frames = []
    for _ in range(n):
        seq[0] += 1
        frames.append(P.pack(kind, seq[0], "b0", {"s": ["M"]}))
    res, done = [], threading.Event()
    loop.post(lambda: on_io(frames, res, done))
    assert done.wait(120)
    return res[0] / n
batch(500)
if "N" in os.environ:  # under valgrind: N requests, instructions counted from outside
    batch(int(os.environ["N"]))
else:
    xs = sorted(batch(5000) for _ in range(int(sys.argv[2])))
    print(xs[0], xs[len(xs) // 2])
c.close()
ep.stop()
os._exit(0)
"""


def measure_hot_server(other: str, rounds: int) -> dict[str, tuple[float, float]]:
    """The endpoint's Python per remote ``add`` request, hot: a real client's session (with its mirror), the
    requests' frames handed to ``ServerLoop.request`` on the endpoint's I/O thread (``post``), sends stubbed,
    thread CPU time; this tree and another (``other``), each in a process of its own, alternating:
    ``python scripts/bench_transport.py hotsrv OTHER_ROOT [ROUNDS]``. Returns (best, median) seconds a request.
    Its instructions: ``N=2000`` and ``N=12000`` under ``valgrind --tool=callgrind --separate-threads=yes``, the
    I/O thread's difference over 10,000 (docs/benchmarks.md, "round four of P3")."""
    runs: dict[str, list[float]] = {"before": [], "after": []}
    order = [("before", Path(other).resolve()), ("after", ROOT)]
    for r in range(rounds):
        for name, root in order if r % 2 == 0 else order[::-1]:
            p = subprocess.run([sys.executable, "-c", _HOT_SERVER, str(root), "5"], capture_output=True, text=True)
            if p.returncode:
                raise RuntimeError(f"{name}: {p.stderr[-2000:]}")
            runs[name].append(float(p.stdout.split()[0]))
    return {name: (min(xs), statistics.median(xs)) for name, xs in runs.items()}


class _Driver:
    """A client process running one checkout's ``transport`` (its client and its endpoint are compared together)
    against that checkout's daemon: ``lat(n)`` round trips, ``pipe(k)`` pipelined mutations a second."""

    def __init__(self, root: Path, addr: str) -> None:
        self.p = subprocess.Popen([sys.executable, "-c", _DRIVER, str(root), addr], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert self.p.stdout is not None and self.p.stdout.readline().strip() == "READY"

    def _ask(self, cmd: str, n: int) -> Any:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(f"{cmd} {n}\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def lat(self, n: int) -> tuple[list[float], float, float]:
        """Round trip times, then the CPU time of the calling thread and of the client process (s)."""
        out, cpu, proc = self._ask("lat", n)
        return list(out), float(cpu), float(proc)

    def pipe(self, k: int) -> float:
        return float(self._ask("pipe", k))

    def close(self) -> None:
        _stop(self.p)


def measure_ab(other: str, rounds: int, block: int, k: int) -> dict[str, Any]:
    """P3 and P4 of this tree (its client and its endpoint) against another tree's (``other``: a checkout of the
    code before a change), with the floor and the raw window-100 anchor, in small blocks alternating in one
    session, so that both see the same load: ``python scripts/bench_transport.py ab OTHER_ROOT [ROUNDS BLOCK K]``.
    Each tree's client runs in a process of its own, with that tree's code."""
    roots = {"before": Path(other).resolve(), "after": ROOT}
    procs = {name: _spawn_at(root / "scripts" / HERE.name, "daemon") for name, root in roots.items()}
    floor, faddr = _spawn("floor")
    echo, eaddr = _spawn("echo")
    drivers: dict[str, _Driver] = {}
    try:
        drivers = {name: _Driver(roots[name], addr) for name, (_, addr) in procs.items()}
        seq = [0]
        fd, d = _raw_dealer(faddr), _raw_dealer(eaddr)
        floor_rtt = _floor_rtt(fd, seq)
        # (name, round trips, the server's pid)
        rtts: list[tuple[str, Any, int]] = [(name, dr.lat, procs[name][0].pid) for name, dr in drivers.items()]
        rtts.append(("floor", lambda n: _lat_cpu(floor_rtt, n), floor.pid))
        raws = {name: _raw_client_rtt(addr) for name, (_, addr) in procs.items()}
        rtts += [(f"{name} server, raw client", lambda n, fn=fn: _lat_cpu(fn, n), procs[name][0].pid)
                 for name, (_, fn) in raws.items()]
        lat: dict[str, list[float]] = {name: [] for name, _, _ in rtts}
        # CPU seconds: the calling thread, the client process, the server process; and the calls they cover
        cpu: dict[str, list[float]] = {name: [0.0, 0.0, 0.0, 0] for name, _, _ in rtts}
        pipe: dict[str, list[float]] = {"before": [], "after": [], "raw": []}
        for r in range(rounds):
            for name, fn, pid in rtts if r % 2 == 0 else rtts[::-1]:
                s0 = _cpu_ns(pid)
                xs, tcpu, pcpu = fn(block)
                acc = cpu[name]
                acc[2] += (_cpu_ns(pid) - s0) / 1e9 / (block + min(500, block)) * block  # warm-up calls too
                acc[0] += tcpu
                acc[1] += pcpu
                acc[3] += block
                lat[name] += xs
            pipes = [("before", lambda: drivers["before"].pipe(k)), ("after", lambda: drivers["after"].pipe(k)),
                     ("raw", lambda: _raw_pipe(d, seq, k))]
            for name, run in pipes if r % 2 == 0 else pipes[::-1]:
                pipe[name].append(run())
        fd.close(0)
        d.close(0)
        for sock, _ in raws.values():
            sock.close(0)
    finally:
        for dr in drivers.values():
            dr.close()
        for p in [floor, echo, *(p for p, _ in procs.values())]:
            _stop(p)
    return {"p3": {name: (_pct(xs, 0.5), _pct(xs, 0.99)) for name, xs in lat.items()},
            "cpu": {name: (t / n, p / n, srv / n) for name, (t, p, srv, n) in cpu.items()},
            "p4": {name: (max(xs), statistics.median(xs)) for name, xs in pipe.items()}}


def measure(quick: bool) -> dict[str, Any]:
    import msgpack

    from transport import connect

    n = 1000 if quick else 5000
    k = 2000 if quick else 20000
    res: dict[str, Any] = {"n": n, "k": k}

    echo, eaddr = _spawn("echo")
    daemon, daddr = _spawn("daemon")
    floor, faddr = _spawn("floor")
    try:
        d = _raw_dealer(eaddr)
        fd = _raw_dealer(faddr)
        seq = [0]
        frame_body = {"s": ["M"]}

        def echo_rtt() -> None:
            seq[0] += 1
            d.send(msgpack.packb(["add", seq[0], "b0", frame_body], use_bin_type=True))
            msgpack.unpackb(d.recv(), raw=False)

        floor_rtt = _floor_rtt(fd, seq)
        c = connect(daddr)
        rm = c.machine("b0")

        def remote_add() -> None:
            rm.add("M")

        rd, server_rtt = _raw_client_rtt(daddr)

        # interleave small blocks so all see the same load (this VM's round trips drift by 2x within a minute),
        # the order reversed every other block so that none always runs right after another
        raw_l: list[float] = []
        ours_l: list[float] = []
        floor_l: list[float] = []
        server_l: list[float] = []
        blocks = 5 if quick else 20
        order = [(raw_l, echo_rtt), (ours_l, remote_add), (floor_l, floor_rtt), (server_l, server_rtt)]
        for b in range(blocks):
            for into, fn in order if b % 2 == 0 else order[::-1]:
                into += _lat(fn, n // blocks)
        rd.close(0)
        res["rtt_raw"] = (_pct(raw_l, 0.5), _pct(raw_l, 0.99))
        res["rtt_ours"] = (_pct(ours_l, 0.5), _pct(ours_l, 0.99))
        res["rtt_floor"] = (_pct(floor_l, 0.5), _pct(floor_l, 0.99))
        res["rtt_server"] = (_pct(server_l, 0.5), _pct(server_l, 0.99))  # our endpoint, the floor's client

        def raw_pipe() -> float:
            return _raw_pipe(d, seq, k)

        def ours_pipe() -> float:
            return _ours_pipe(rm, k)

        raw_r, ours_r = [], []
        for _ in range(3):
            raw_r.append(raw_pipe())
            ours_r.append(ours_pipe())
        res["pipe_raw"] = max(raw_r)
        res["pipe_ours"] = max(ours_r)
        res["pipe_raw_med"] = statistics.median(raw_r)
        res["pipe_ours_med"] = statistics.median(ours_r)
        c.close()
        d.close(0)
        fd.close(0)
    finally:
        _stop(echo)
        _stop(daemon)
        _stop(floor)
    return res


def _fanout_run(raw: bool, rounds: int, mirrors: int, procs: int, script: Path = HERE, pause: float = 0.02,
                cpu: list[float] | None = None) -> tuple[list[float], list[float], int]:
    """One fan-out run: per-mirror latencies, the last mirror's latency per round, pushes never seen; the
    server and the workers run ``script`` (this module, or its copy in another checkout: that checkout's code).
    ``cpu``: gets each worker process's CPU time a push (s) over the rounds."""
    import msgpack

    server, addr = _spawn_at(script, "fanraw" if raw else "daemon")
    workers = []
    try:
        for _ in range(procs):
            workers.append(_spawn_at(script, "rawmirrors" if raw else "mirrors", addr, str(mirrors // procs))[0])
        if raw:
            d: Any = _raw_dealer(addr)

            def change(i: int) -> None:
                d.send(msgpack.packb(["add", i + 1, "b0", {"s": ["M"]}], use_bin_type=True))
                d.recv()
        else:
            from transport import connect

            c = connect(addr)
            rm = c.machine("b0")

            def change(i: int) -> None:
                rm.add("M")
        t0s = []
        cpu0 = [_cpu_ns(w.pid) for w in workers]
        for i in range(rounds):
            t0s.append(time.monotonic())
            change(i)
            time.sleep(pause)  # rounds apart, so each latency is one push's (a bench, not a test)
        time.sleep(0.5)
        if cpu is not None:
            cpu += [(_cpu_ns(w.pid) - c0) / 1e9 / (rounds * (mirrors // procs)) for w, c0 in zip(workers, cpu0,
                                                                                               strict=True)]
        seen: list[list[float]] = []
        for w in workers:
            assert w.stdin is not None and w.stdout is not None
            w.stdin.close()
            seen += json.loads(w.stdout.readline())
            w.wait(10)
        if raw:
            d.close(0)
        else:
            c.close()
    finally:
        _stop(server)
        for w in workers:
            if w.poll() is None:
                w.kill()
    lat, last, missing = [], [], 0
    for r, t0 in enumerate(t0s):
        per = []
        for rec in seen:
            if r < len(rec):
                per.append(rec[r] - t0)
            else:
                missing += 1
        lat += per
        if per:
            last.append(max(per))
    return lat, last, missing


def measure_fanout(quick: bool, mirrors: int = 100, procs: int = 4) -> dict[str, Any]:
    """Ours and the raw anchor, alternating (raw, ours, raw, ours) so both see the same machine state."""
    rounds = 30 if quick else 100
    out: dict[str, Any] = {"mirrors": mirrors, "procs": procs, "rounds": rounds}
    acc: dict[str, tuple[list[float], list[float], int]] = {"raw": ([], [], 0), "ours": ([], [], 0)}
    for _ in range(2):
        for kind in ("raw", "ours"):
            lat, last, missing = _fanout_run(kind == "raw", rounds // 2, mirrors, procs)
            a = acc[kind]
            acc[kind] = (a[0] + lat, a[1] + last, a[2] + missing)
    for kind, (lat, last, missing) in acc.items():
        out[kind] = {"p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99), "last_p50": statistics.median(last),
                     "missing": missing, "n": len(lat)}
    return out


def measure_fanout_ab(other: str, rounds: int = 100, cycles: int = 4) -> None:
    """Fan-out of this tree and another checkout (its daemon, mirrors and raw anchor), with this tree's raw anchor,
    alternating (the order reversed every other cycle); pooled p50 / p99 per kind, as `measure_fanout` pools."""
    kinds = {"raw": (True, HERE), "raw (other)": (True, Path(other) / "scripts" / HERE.name),
             "other": (False, Path(other) / "scripts" / HERE.name), "this": (False, HERE)}
    acc: dict[str, list[float]] = {k: [] for k in kinds}
    missing = dict.fromkeys(kinds, 0)
    for cyc in range(cycles):
        for kind in list(kinds) if cyc % 2 == 0 else list(reversed(kinds)):
            raw, script = kinds[kind]
            lat, _, miss = _fanout_run(raw, rounds, 100, 4, script)
            acc[kind] += lat
            missing[kind] += miss
            print(f"cycle {cyc} {kind}: p50 {_pct(lat, 0.5) * 1e3:.2f} ms, p99 {_pct(lat, 0.99) * 1e3:.2f} ms, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    for kind, lat in acc.items():
        print(f"{kind}: p50 {_pct(lat, 0.5) * 1e3:.2f} ms, p99 {_pct(lat, 0.99) * 1e3:.2f} ms ({len(lat)} pushes, "
              f"{missing[kind]} missed)", flush=True)


def measure_live_cpu(other: str, rounds: int = 1500, runs: int = 3) -> None:
    """A live worker's process CPU a push: one worker of 25 mirrors (or the anchor's 25 DEALERs), pushes 2 ms
    apart, /proc schedstat over the rounds; the anchor, the other checkout and this one alternating."""
    kinds = {"raw": (True, HERE), "other": (False, Path(other) / "scripts" / HERE.name), "this": (False, HERE)}
    acc: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(runs):
        for kind in list(kinds) if r % 2 == 0 else list(reversed(kinds)):
            raw, script = kinds[kind]
            cpu: list[float] = []
            _fanout_run(raw, rounds, 25, 1, script, pause=0.002, cpu=cpu)
            acc[kind] += cpu
            print(f"run {r} {kind}: {cpu[0] * 1e6:.1f} us a push, load {os.getloadavg()[0]:.1f}", flush=True)
    for kind, xs in acc.items():
        print(f"{kind}: median {statistics.median(xs) * 1e6:.1f} us a push ({len(xs)} runs)", flush=True)


def measure_push_cpu(n: int = 30000, waiter: bool = True) -> float:
    """A mirror's push, hot: thread CPU time a push from the frame to the resolved (and re-armed) `when_time`
    waiter, `Client._handle` fed the frames the server would send (best of 5 blocks; the I/O thread kept out)."""
    import functools

    from machine import Machine
    from transport import connect, expose
    from transport import protocol as P

    m = Machine(_schema(), id="b0")
    m.add("M")
    ep = expose(m)
    c = connect(ep.address)
    rm = c.machine("b0")
    t, q, mt = rm.time(), m.queue_tick, m.machine_tick
    frames = []
    for _ in range(n):
        t = [t[0] + 2, *t[1:]]
        q, mt = q + 1, mt + 1
        frames.append(P.pack(P.CLK, 0, "b0", [[0], [2], q, mt, P.checksum(t, q, mt)]))
    rec: list[float] = []
    if waiter:
        _arm(rm, rec)
    c._io.acquire()  # the socket held: the I/O thread does not read meanwhile
    best, blk, handle = float("inf"), n // 5, c._handle
    for b in range(5):
        t0 = time.thread_time()
        # in functools.reduce, so that callgrind can count just these: --toggle-collect=functools_reduce
        functools.reduce(lambda _, f: handle(f), frames[b * blk:(b + 1) * blk], None)
        best = min(best, time.thread_time() - t0)
    c._io.release()
    assert rm.tick("M") == t[0] and (not waiter or len(rec) == n), "a push was not applied"
    c.close()
    ep.stop()
    return best / blk


def measure_curve(quick: bool) -> dict[str, Any]:
    from transport import connect
    from transport.security import keygen

    n = 1000 if quick else 5000
    with tempfile.TemporaryDirectory() as tmp:
        keygen(tmp, "server")
        _, csec = keygen(f"{tmp}/clients", "client")
        plain, paddr = _spawn("daemon")
        curve, caddr = _spawn("daemon", "--keys", tmp)
        try:
            cp = connect(paddr)
            cc = connect(caddr, server_key=f"{tmp}/server.key", client_keys=str(csec))
            rp, rc = cp.machine("b0"), cc.machine("b0")
            pl: list[float] = []
            cl: list[float] = []
            for _ in range(3):
                pl += _lat(lambda: rp.add("M"), n // 3)
                cl += _lat(lambda: rc.add("M"), n // 3)
            cp.close()
            cc.close()
        finally:
            _stop(plain)
            _stop(curve)
    return {"plain": (_pct(pl, 0.5), _pct(pl, 0.99)), "curve": (_pct(cl, 0.5), _pct(cl, 0.99)), "n": n}

def measure_isolation(quick: bool, machines: int = 100, pause: float = 0.8, script: Path = HERE) -> dict[str, Any]:
    """One machine of ``machines`` has a handler that sleeps ``pause`` s and is mutated in a loop by one client;
    another client's `add` on another machine, `machines()`, and `sync` + history of the slow machine itself.
    ``first``: the same other client's `add` and `machines()` during the slow machine's first transition (it was
    idle and quick till then, so that transition begins inline on the endpoint's I/O thread)."""
    import threading

    from transport import connect

    server, addr = _spawn_at(script, "slow", str(machines), str(pause))
    stop, first = threading.Event(), threading.Event()
    slow_c = connect(addr, timeout=10)
    slow_c.machine("b0")

    def loop() -> None:
        rm = slow_c.machine("b0")
        while not stop.is_set():
            rm.add("M")
            first.set()

    t = threading.Thread(target=loop, daemon=True)
    res: dict[str, Any] = {"machines": machines, "pause": pause}
    try:
        with connect(addr) as c:
            rm = c.machine("b5")
            _lat(lambda: rm.add("M"), 200)  # warm
            t.start()
            adds, lists = [], []
            pc = time.perf_counter
            while not first.is_set() and len(adds) < 1_000_000:
                t0 = pc()
                rm.add("M")
                t1 = pc()
                c.machines()
                adds.append(t1 - t0)
                lists.append(pc() - t1)
            res["first"] = (max(adds), max(lists), len(adds))
            if not first.wait(15):
                raise RuntimeError("the slow machine never finished a transition")
            n = 1000 if quick else 5000
            lat = _lat(lambda: rm.add("M"), n)
            res["add"] = (_pct(lat, 0.5), _pct(lat, 0.99), max(lat))
            lst = _lat(c.machines, 20)
            res["list"] = (_pct(lst, 0.5), max(lst))
            slow_rm = c.machine("b0")

            def look() -> None:
                slow_rm.sync()
                slow_rm.history.records(limit=5)

            lk = _lat(look, 20)
            res["look"] = (_pct(lk, 0.5), max(lk))
    finally:
        stop.set()
        if t.ident is not None:
            t.join(pause * 3 + 5)
        slow_c.close()
        _stop(server)
    return res


def main() -> None:
    mode = sys.argv[1]
    if mode == "echo":
        serve_echo()
    elif mode == "daemon":
        serve_daemon(sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--keys" else None)
    elif mode == "mirrors":
        run_mirrors(sys.argv[2], int(sys.argv[3]))
    elif mode == "floor":
        serve_floor()
    elif mode == "slow":
        serve_slow(int(sys.argv[2]), float(sys.argv[3]))
    elif mode == "fanraw":
        serve_fan_raw()
    elif mode == "rawmirrors":
        run_raw_mirrors(sys.argv[2], int(sys.argv[3]))
    elif mode == "hot":
        for name, (best, med) in measure_hot(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 5).items():
            print(f"client Python per remote add, hot: {name}: best {best * 1e6:.2f} us, median {med * 1e6:.2f} us",
                  flush=True)
    elif mode == "hotsrv":  # hotsrv OTHER_ROOT [ROUNDS]
        for name, (best, med) in measure_hot_server(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 5).items():
            print(f"endpoint Python per add request, hot: {name}: best {best * 1e6:.2f} us, median {med * 1e6:.2f} us",
                  flush=True)
    elif mode == "fanab":  # fanab OTHER_ROOT [ROUNDS CYCLES]
        measure_fanout_ab(sys.argv[2], *(int(x) for x in sys.argv[3:5]))
    elif mode == "livecpu":  # livecpu OTHER_ROOT [ROUNDS RUNS]
        measure_live_cpu(sys.argv[2], *(int(x) for x in sys.argv[3:5]))
    elif mode == "pushcpu":  # pushcpu [N] [--no-waiter]: this tree's code (run it from each checkout)
        w = "--no-waiter" not in sys.argv
        n = next((int(x) for x in sys.argv[2:] if x.isdigit()), 30000)
        print(f"{ROOT}: {measure_push_cpu(n, w) * 1e6:.2f} us a push{'' if w else ' (no waiter)'}", flush=True)
    elif mode == "ab":
        # ab OTHER_ROOT [ROUNDS BLOCK K] [--no-iso]: P3 and P4 (and, unless --no-iso, the slow-machine proof)
        iso_too = "--no-iso" not in sys.argv
        argv = [a for a in sys.argv if a != "--no-iso"]
        rounds, block, k = (int(x) for x in (argv[3:6] if len(argv) >= 6 else ("40", "250", "5000")))
        r = measure_ab(sys.argv[2], rounds, block, k)
        for name, (p50, p99) in r["p3"].items():
            t, p, srv = r["cpu"][name]
            print(f"P3 {name}: p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us; CPU a call: caller thread "
                  f"{t * 1e6:.1f} us, client process {p * 1e6:.1f} us, server process {srv * 1e6:.1f} us", flush=True)
        for name, (best, median) in r["p4"].items():
            print(f"P4 {name}: best {best:,.0f}/s, median {median:,.0f}/s", flush=True)
        for i in range(3 if iso_too else 0):  # the slow machine among 100, this tree and the other alternating
            for name, script in (("before", Path(sys.argv[2]) / "scripts" / HERE.name), ("after", HERE)):
                iso = measure_isolation(False, script=script)
                (fa, fl, fn), (a50, a99, amax) = iso["first"], iso["add"]
                print(f"isolation {name} {i}: first slow transition: other add max {fa * 1e3:.1f} ms, "
                      f"machines() max {fl * 1e3:.1f} ms ({fn} rounds); then other add p50 {a50 * 1e6:.0f} us, "
                      f"p99 {a99 * 1e6:.0f} us, max {amax * 1e3:.1f} ms; machines() max {iso['list'][1] * 1e3:.1f}"
                      f" ms; sync + history of the slow machine max {iso['look'][1] * 1e3:.1f} ms", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
