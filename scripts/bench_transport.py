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


def serve_echo() -> None:
    import threading

    import msgpack
    import zmq

    # exit when the parent closes stdin
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind("tcp://127.0.0.1:*")
    print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    while True:
        ident, data = sock.recv_multipart()
        kind, seq, mach, body = msgpack.unpackb(data, raw=False)
        if kind == "quit":
            return
        if seq:  # notifications get no reply, like ours
            sock.send_multipart([ident, msgpack.packb(["ok", seq, mach, [0, None]], use_bin_type=True)])


def serve_daemon(keys: str | None) -> None:
    from machine import Machine, State
    from transport import expose

    m = Machine({"M": State(multi=True), "Foo": State(remove=("Bar",)), "Bar": State(remove=("Foo",))}, id="b0")
    kw: dict[str, Any] = {}
    if keys:
        kw = {"curve": f"{keys}/server.key_secret", "allow": f"{keys}/clients"}
    ep = expose(m, **kw)
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
    p = subprocess.Popen([sys.executable, str(HERE), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
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


def _raw_dealer(addr: str) -> Any:
    import zmq

    d = zmq.Context.instance().socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(addr)
    return d


def measure(quick: bool) -> dict[str, Any]:
    import msgpack

    from transport import connect

    n = 1000 if quick else 5000
    k = 2000 if quick else 20000
    res: dict[str, Any] = {"n": n, "k": k}
    echo, eaddr = _spawn("echo")
    daemon, daddr = _spawn("daemon")
    try:
        d = _raw_dealer(eaddr)
        seq = [0]
        frame_body = {"s": ["M"]}

        def echo_rtt() -> None:
            seq[0] += 1
            d.send(msgpack.packb(["add", seq[0], "b0", frame_body], use_bin_type=True))
            msgpack.unpackb(d.recv(), raw=False)

        c = connect(daddr)
        rm = c.machine("b0")

        def remote_add() -> None:
            rm.add("M")

        # interleave repeats so both see the same load
        raw_l: list[float] = []
        ours_l: list[float] = []
        for _ in range(3):
            raw_l += _lat(echo_rtt, n // 3)
            ours_l += _lat(remote_add, n // 3)
        res["rtt_raw"] = (_pct(raw_l, 0.5), _pct(raw_l, 0.99))
        res["rtt_ours"] = (_pct(ours_l, 0.5), _pct(ours_l, 0.99))

        # pipelined: a window of 100 outstanding requests on the raw socket; add_ns + one sync for ours
        def raw_pipe() -> float:
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

        def ours_pipe() -> float:
            before = rm.tick("M")
            t = time.perf_counter()
            for _ in range(k):
                rm.add_ns("M")
            rm.sync()
            dt = time.perf_counter() - t
            assert rm.tick("M") == before + 2 * k, (rm.tick("M"), before, k)
            return k / dt

        raw_r, ours_r = [], []
        for _ in range(3):
            raw_r.append(raw_pipe())
            ours_r.append(ours_pipe())
        res["pipe_raw"] = max(raw_r)
        res["pipe_ours"] = max(ours_r)
        c.close()
        d.close(0)
    finally:
        _stop(echo)
        _stop(daemon)
    return res


def measure_fanout(quick: bool, mirrors: int = 100, procs: int = 4) -> dict[str, Any]:
    from transport import connect

    rounds = 30 if quick else 100
    daemon, daddr = _spawn("daemon")
    workers = []
    try:
        for _ in range(procs):
            workers.append(_spawn("mirrors", daddr, str(mirrors // procs))[0])
        c = connect(daddr)
        rm = c.machine("b0")
        t0s = []
        for _ in range(rounds):
            t0s.append(time.monotonic())
            rm.add("M")
            time.sleep(0.02)  # rounds apart, so each latency is one push's (a bench, not a test)
        time.sleep(0.5)
        seen: list[list[float]] = []
        for w in workers:
            assert w.stdin is not None and w.stdout is not None
            w.stdin.close()
            seen += json.loads(w.stdout.readline())
            w.wait(10)
        c.close()
    finally:
        _stop(daemon)
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
    return {"mirrors": len(seen), "rounds": rounds, "p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99),
            "last_p50": statistics.median(last), "missing": missing}


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


def main() -> None:
    mode = sys.argv[1]
    if mode == "echo":
        serve_echo()
    elif mode == "daemon":
        serve_daemon(sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--keys" else None)
    elif mode == "mirrors":
        run_mirrors(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
