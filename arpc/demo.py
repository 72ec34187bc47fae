"""The demo daemon behind `arpc demo`: live workflow machines from the seeds, changing on timers.

- ``files-1..3``: the file-processing flow (download, process, upload), each file taking a few seconds;
- ``expense-1..3``: the expense flow; ``expense-1`` approves itself, the others wait for you:
  ``add expense-2 ApprovalGranted``;
- ``ticker``: a multi state that ticks every second.

Run alone: ``python -m arpc.demo [--addr ADDR] [--addr-dir DIR] [--seconds N]`` prints the address and serves until
SIGTERM or Ctrl+C (or for N seconds), then removes its addr files. It never reads stdin, so it runs in the
background (``&``, ``nohup``, systemd, stdin from /dev/null).
"""

from __future__ import annotations

import argparse
import itertools
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from machine import Event, Machine, State
from transport import Endpoint, expose

BASE = {
    "Start": State(),
    "Ready": State(require=("Start",)),
}

FILES = {
    **BASE,
    "DownloadingFile": State(require=("Start",), remove=("FileDownloaded", "FileUploaded")),
    "FileDownloaded": State(remove=("DownloadingFile",)),
    "ProcessingFile": State(auto=True, require=("FileDownloaded",), remove=("FileProcessed",)),
    "FileProcessed": State(remove=("ProcessingFile",)),
    "UploadingFile": State(auto=True, require=("FileProcessed",), remove=("FileUploaded",)),
    "FileUploaded": State(remove=("UploadingFile", "FileDownloaded", "FileProcessed")),
}

EXPENSE = {
    **BASE,
    "CreatingExpense": State(require=("Start",), remove=("ExpenseCreated", "PaymentCompleted")),
    "ExpenseCreated": State(remove=("CreatingExpense",)),
    "WaitingForApproval": State(auto=True, require=("ExpenseCreated",), remove=("ApprovalGranted",)),
    "ApprovalGranted": State(require=("ExpenseCreated",), remove=("WaitingForApproval",)),
    "PaymentInProgress": State(auto=True, require=("ApprovalGranted",), remove=("PaymentCompleted",)),
    "PaymentCompleted": State(require=("ExpenseCreated", "ApprovalGranted"), remove=("PaymentInProgress",)),
}

TICKER = {**BASE, "Tick": State(multi=True)}


def later(mach: Machine, state: str, delay: float, fn: Callable[[], Any]) -> None:
    """Run ``fn`` after ``delay`` seconds unless ``state``'s activation ended meanwhile (its state context)."""
    ctx = mach.state_ctx(state)

    def fire() -> None:
        if not ctx.done and not mach.disposed:
            fn()

    t = threading.Timer(delay, fire)
    t.daemon = True
    t.start()


class Files:
    """Handlers of a file-processing machine: each step finishes on a timer."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.n = itertools.count(1)

    def StartState(self, e: Event) -> None:
        e.machine.add("DownloadingFile", args={"file": f"report-{next(self.n)}.csv"})

    def DownloadingFileState(self, e: Event) -> None:
        m, args = e.machine, dict(e.args)
        later(m, "DownloadingFile", 1.5 * self.speed, lambda: m.add("FileDownloaded", args=args))

    def ProcessingFileState(self, e: Event) -> None:
        m = e.machine
        later(m, "ProcessingFile", 2.0 * self.speed, lambda: m.add("FileProcessed"))

    def UploadingFileState(self, e: Event) -> None:
        m = e.machine
        later(m, "UploadingFile", 1.0 * self.speed, lambda: m.add("FileUploaded"))

    def FileUploadedState(self, e: Event) -> None:
        m = e.machine
        later(m, "FileUploaded", 3.0 * self.speed,
              lambda: m.add("DownloadingFile", args={"file": f"report-{next(self.n)}.csv"}))


class Expense:
    """Handlers of an expense machine; ``auto_approve`` decides whether it waits for a person."""

    def __init__(self, auto_approve: bool, speed: float) -> None:
        self.auto_approve = auto_approve
        self.speed = speed
        self.n = itertools.count(1)

    def StartState(self, e: Event) -> None:
        e.machine.add("CreatingExpense", args={"expense": next(self.n), "amount": 120})

    def CreatingExpenseState(self, e: Event) -> None:
        m = e.machine
        later(m, "CreatingExpense", 1.0 * self.speed, lambda: m.add("ExpenseCreated"))

    def WaitingForApprovalState(self, e: Event) -> None:
        if self.auto_approve:
            m = e.machine
            later(m, "WaitingForApproval", 4.0 * self.speed, lambda: m.add("ApprovalGranted"))

    def PaymentInProgressState(self, e: Event) -> None:
        m = e.machine
        later(m, "PaymentInProgress", 1.5 * self.speed, lambda: m.add("PaymentCompleted"))

    def PaymentCompletedState(self, e: Event) -> None:
        m = e.machine
        n = next(self.n)
        later(m, "PaymentCompleted", 5.0 * self.speed,
              lambda: m.set("Start", "Ready", "CreatingExpense", args={"expense": n, "amount": 80 + 10 * (n % 7)}))


class Ticker:
    def __init__(self, speed: float) -> None:
        self.speed = speed

    def StartState(self, e: Event) -> None:
        e.machine.add("Tick")

    def TickState(self, e: Event) -> None:
        m = e.machine
        later(m, "Tick", 1.0 * self.speed, lambda: m.add("Tick"))


def demo_machines(speed: float = 1.0) -> list[Machine]:
    """The demo's machines, started (their timers running). ``speed`` scales every delay."""
    machs: list[Machine] = []
    for i in range(1, 4):
        # staggered speeds, so the machines are not in lockstep
        machs.append(Machine(FILES, id=f"files-{i}", parent="demo", tags=("files",),
                             handlers=Files(speed * (0.7 + 0.3 * i))))
    for i in range(1, 4):
        machs.append(Machine(EXPENSE, id=f"expense-{i}", parent="demo", tags=("expense",),
                             handlers=Expense(auto_approve=i == 1, speed=speed)))
    machs.append(Machine(TICKER, id="ticker", parent="demo", handlers=Ticker(speed)))
    for m in machs:
        m.add("Start", "Ready")
    threading.Thread(target=supervise, args=(machs, speed), name="arpc-demo supervisor", daemon=True).start()
    return machs


STALL = 8.0  # seconds (times speed) without a transition after which a chain counts as stopped; its longest step is 5


def supervise(machs: list[Machine], speed: float) -> None:
    """Restart a machine whose timer chain stopped: a chain ends for good when a step's handler fails or times out
    (a starved box) or someone removes the running step by hand; a demo must keep moving. ``expense-2`` and
    ``expense-3`` waiting for a person's approval are not stopped. Ends when every machine is disposed."""
    seen = {m.id: (sum(m.time()), time.monotonic()) for m in machs}  # each machine's clock, and since when
    while not all(m.disposed for m in machs):
        time.sleep(max(0.01, speed))  # a look per (scaled) second: pacing, nothing to wait on
        now = time.monotonic()
        for m in machs:
            if m.disposed:
                continue
            t, since = seen[m.id]
            if sum(m.time()) != t:
                seen[m.id] = t, since = sum(m.time()), now
            for_a_person = m.id != "expense-1" and m.is_active("WaitingForApproval")
            if m.is_err() or (not for_a_person and now - since > STALL * speed):
                m.set()  # everything off, then the chain from its start
                m.add("Start", "Ready")
                seen[m.id] = (sum(m.time()), now)


def serve(addr: str = "tcp://127.0.0.1:*", addr_dir: str | None = None, speed: float = 1.0) -> Endpoint:
    """Start the demo machines and expose them on one endpoint."""
    return expose(demo_machines(speed), addr=addr, addr_dir=addr_dir)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m arpc.demo", description=__doc__.split("\n")[0])
    p.add_argument("--addr", default="tcp://127.0.0.1:*")
    p.add_argument("--addr-dir", help="write <id>.addr files here (removed on exit)")
    p.add_argument("--speed", type=float, default=1.0, help="scale every delay (0.1 = ten times faster)")
    p.add_argument("--seconds", type=float, metavar="N", help="serve N seconds, then exit (default: until SIGTERM)")
    a = p.parse_args(argv)
    if a.seconds is not None and not 0 < a.seconds < float("inf"):
        p.error(f"--seconds: {a.seconds} is not a number of seconds above 0")
    stop = threading.Event()
    # SIGTERM (kill, systemd) and SIGINT (Ctrl+C) end the wait below, so the addr files are removed either way
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    machs = demo_machines(a.speed)
    try:
        ep = expose(machs, addr=a.addr, addr_dir=a.addr_dir)
        try:
            print(ep.address, flush=True)
            stop.wait(a.seconds)
        finally:
            ep.stop()
    finally:
        for m in machs:
            m.dispose()


if __name__ == "__main__":
    main()
