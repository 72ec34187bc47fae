"""A daemon serving many machines on one endpoint: a pool of workers, some busy on timers, some waiting for you.

Each worker has a few states (Start, Ready, Idle, Working, JobDone). Even-numbered workers are "timed": they
work, finish a job (``JobDone``, a multi state, ticks once per job, with the job's result in its args), rest,
and start again, on timers. Odd-numbered workers are "manual": they stay Idle until someone adds ``Working``;
then they do one job and go back to Idle. A ``pool`` machine (the workers' parent) counts the finished jobs.

Every machine is served by one ZeroMQ endpoint. With ``--addr-dir DIR`` each machine gets ``DIR/<id>.addr``,
so the shell can find them all:

    .venv/bin/python examples/daemon.py --addr-dir /tmp/am-daemon &
    arpc -d /tmp/am-daemon                            # the REPL on every machine
    arpc -d /tmp/am-daemon -- list                    # one command, then exit
    arpc -d /tmp/am-daemon -- add worker-01 Working   # give a manual worker a job
    arpc -d /tmp/am-daemon -- watch worker-02         # stream a timed worker's transitions

Run: .venv/bin/python examples/daemon.py [--addr ADDR] [--addr-dir DIR] [--workers N] [--seconds N]
It prints the address on the first line, then serves for --seconds N, or (by default) until Ctrl+C, SIGTERM or
until stdin is closed.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from machine import Event, Machine, State, StateNames
from transport import expose


class S(StateNames):
    Start: str
    Ready: str
    Idle: str
    Working: str
    JobDone: str


WORKER = {
    S.Start: State(),
    S.Ready: State(require=(S.Start,)),
    S.Idle: State(require=(S.Ready,), remove=(S.Working,)),
    S.Working: State(require=(S.Ready,), remove=(S.Idle,)),
    S.JobDone: State(multi=True, require=(S.Ready,)),
}

POOL = {
    S.Start: State(),
    S.Ready: State(require=(S.Start,)),
    S.JobDone: State(multi=True),  # ticks once per job finished by any worker
}


def later(mach: Machine, state: str, delay: float, fn: Callable[[], Any]) -> None:
    """Call ``fn`` after ``delay`` seconds, unless ``state``'s activation ended meanwhile (its context)."""
    ctx = mach.state_ctx(state)

    def fire() -> None:
        if not ctx.done and not mach.disposed:
            fn()

    t = threading.Timer(delay, fire)
    t.daemon = True
    t.start()
    ctx.on_done(t.cancel)  # the state ended first: no need to keep the timer


class Worker:
    """A worker's handlers. A job is a small, real computation (a hash chain), done on a timer thread."""

    def __init__(self, n: int, timed: bool, pool: Machine, speed: float) -> None:
        self.n, self.timed, self.pool, self.speed = n, timed, pool, speed
        self.jobs = 0

    def ReadyState(self, e: Event) -> None:
        e.machine.add(S.Idle)

    def IdleState(self, e: Event) -> None:
        if self.timed:  # rest a bit, then work again
            m = e.machine
            later(m, S.Idle, (0.3 + 0.05 * self.n) * self.speed, lambda: m.add(S.Working))

    def WorkingState(self, e: Event) -> None:
        m = e.machine
        job = self.jobs + 1

        def finish() -> None:
            digest = f"{m.id}/{job}".encode()
            for _ in range(2000):
                digest = hashlib.sha256(digest).digest()
            self.jobs = job
            m.add(S.JobDone, args={"job": job, "result": digest.hex()[:12]})
            m.add(S.Idle)
            self.pool.add(S.JobDone, args={"worker": m.id, "job": job})

        later(m, S.Working, (0.2 + 0.02 * self.n) * self.speed, finish)


def build(workers: int, speed: float = 1.0) -> tuple[Machine, list[Machine], list[Worker]]:
    pool = Machine(POOL, id="pool", tags=("pool",))
    machs, handlers = [], []
    for i in range(1, workers + 1):
        h = Worker(i, timed=i % 2 == 0, pool=pool, speed=speed)
        m = Machine(WORKER, id=f"worker-{i:02d}", parent=pool, handlers=h,
                    tags=("worker", "timed" if h.timed else "manual"))
        machs.append(m)
        handlers.append(h)
    pool.add(S.Start, S.Ready)
    for m in machs:
        m.add(S.Start, S.Ready)  # ReadyState adds Idle; timed workers start their timers
    return pool, machs, handlers


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--addr", default="tcp://127.0.0.1:*", help="where to listen (default: a free loopback port)")
    p.add_argument("--addr-dir", help="write <id>.addr files here, for `arpc -d DIR`")
    p.add_argument("--workers", type=int, default=20)
    p.add_argument("--seconds", type=float, help="serve this long (default: until Ctrl+C or stdin EOF)")
    p.add_argument("--speed", type=float, default=1.0, help="scale every delay (0.5 = twice as fast)")
    a = p.parse_args(argv)

    pool, workers, handlers = build(a.workers, a.speed)
    ep = expose([pool, *workers], addr=a.addr, addr_dir=a.addr_dir)
    print(ep.address, flush=True)  # the first line: the address, for scripts
    where = f"-d {a.addr_dir}" if a.addr_dir else ep.address
    print(f"serving {len(ep.machines)} machines (pool + {len(workers)} workers); inspect: arpc {where}",
          flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # `kill` stops it cleanly too (addr files removed)
    if a.seconds is None:
        def read_stdin() -> None:
            try:
                sys.stdin.read()  # returns at EOF
            finally:
                stop.set()

        threading.Thread(target=read_stdin, daemon=True).start()
    t0 = time.monotonic()
    try:
        stop.wait(a.seconds)  # None = until stdin closes; Ctrl+C interrupts the wait
    except KeyboardInterrupt:
        pass
    finally:
        ep.stop()  # removes the addr files
        for m in [*workers, pool]:
            m.dispose()  # ends the state contexts: pending timers do nothing
    jobs = sum(h.jobs for h in handlers)
    print(f"stopped after {time.monotonic() - t0:.1f}s; {jobs} jobs done "
          f"({sum(h.jobs for h in handlers if h.timed)} by timed workers)", flush=True)


if __name__ == "__main__":
    main()
