"""Soak: the reliability tests run longer. ``scripts/soak [N] [options]``; N (default 1) scales every part.

Parts (``--only`` picks some):

- ``load``: 8 client processes (``--clients``) x 1000*N remote ``add`` of a multi state on one served machine, with
  8 ``when_ticks`` waiters per client on its mirror (``tests/transport/test_load.py``). Lost: mutations that did
  not return ``executed``, waiters that never resolved, ticks missing at the source, client processes that died.
- ``fuzz``: the core fuzz of ``tests/machine/test_fuzz.py`` with 150*N random machines (random schemas, random
  mutations from the test and from handlers, every transition checked against the model of the spec).
- ``panic``: the same with handlers that raise, 100*N machines.
- ``mirror``: random machines served over ZeroMQ in this process and mirrored; mirror == source after every step,
  40*N machines.
- ``long`` (only with ``--minutes M``, and then alone): one daemon with 100 machines changing, 20 clients of every
  kind for M minutes, RSS and the endpoint's per-session and per-machine sizes each minute; fails when anything
  grows after the warm-up or a mutation is lost or doubled (``scripts/soak_long.py``).

The fuzz parts are random (not the suite's fixed examples) unless ``--seed`` is given. A failing example is printed
by hypothesis as the steps that reproduce it. Prints operations, errors, crashes (goal 0 everywhere) and time per
part; ``--write docs/benchmarks.md`` replaces the block between ``<!-- bench:reliability:start -->`` and
``<!-- bench:reliability:end -->`` with them and the command that produced them. Exit 0 when nothing was lost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tests" / "machine", ROOT / "tests" / "transport"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

START, END = "<!-- bench:reliability:start -->", "<!-- bench:reliability:end -->"
PARTS = ("load", "fuzz", "panic", "mirror")


@dataclass
class Part:
    name: str
    what: str = ""
    operations: int = 0
    unit: str = "operations"
    errors: int = 0
    crashes: int = 0
    lost: int = 0
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.crashes == 0 and self.lost == 0

    def row(self) -> str:
        return (f"| {self.name} | {self.what} | {self.operations:,} {self.unit} | {self.errors} | {self.crashes} | "
                f"{self.lost} | {self.seconds:.1f} s | {'yes' if self.ok else '**no**'} |")


def guarded(part: Part, fn: Callable[[], None]) -> None:
    """Run a part: an assertion (an invariant broke) is an error, anything else a crash; both are printed."""
    t0 = time.perf_counter()
    try:
        fn()
    except AssertionError:
        part.errors += 1
        part.details.append(traceback.format_exc(limit=3))
    except BaseException as exc:  # noqa: BLE001 - a soak reports, it does not stop at the first problem
        if isinstance(exc, KeyboardInterrupt):
            raise
        part.crashes += 1
        part.details.append(traceback.format_exc())
    part.seconds = time.perf_counter() - t0


def run_load(n: int, clients: int, waiters: int) -> Part:
    from test_load import run_load as load

    per = 1000 * n
    part = Part("load", f"{clients} client processes x {per:,} remote `add` of a multi state, {clients} x {waiters} "
                        "`when_ticks` waiters", unit="mutations")

    def body() -> None:
        r = load(clients=clients, per_client=per, waiters=waiters, timeout=max(60.0, 30.0 * n))
        part.operations = r.mutations_ok
        part.errors = r.errors + r.endpoint_errors
        part.crashes = r.crashes
        part.lost = r.lost
        part.details.append(r.line())
        part.details += r.samples[:5]
        part.what += f"; {r.rate:,.0f} mutations/s, source tick {r.source_tick} (expected {r.expected_tick})"

    guarded(part, body)
    return part


def run_fuzz(name: str, n: int, seed: int | None) -> Part:
    import test_fuzz as tf

    if seed is not None:
        _force_seed(seed)
    if name == "fuzz":
        cls, examples, steps = tf.CoreFuzz, 150 * n, 40
        what = f"{examples:,} random machines x up to {steps} steps, each transition checked against the model"
    else:
        cls, examples, steps = tf.PanicFuzz, 100 * n, 30
        what = f"{examples:,} random machines x up to {steps} steps, handlers that raise"
    part = Part(name, what, unit="transitions")
    stats: dict[str, int] = {}

    def body() -> None:
        stats.update(tf.run_core_fuzz(cls, tf.fuzz_settings(examples, steps, derandomize=False)))

    guarded(part, body)
    stats = stats or dict(tf.CoreFuzz.stats)
    part.operations = stats.get("transitions", 0)
    part.details.append(", ".join(f"{k} {v:,}" for k, v in stats.items()))
    raised = f"{stats.get('panics', 0):,} raising handlers, " if name == "panic" else ""
    part.what += (f" ({stats.get('steps', 0):,} steps, {stats.get('canceled', 0):,} canceled, {raised}"
                  f"{stats.get('pairs', 0):,} remove pairs of the 2nd add expansion)")
    return part


def run_mirror(n: int, seed: int | None) -> Part:
    import test_fuzz as tf

    from transport import connect, expose

    if seed is not None:
        _force_seed(seed)
    examples = 40 * n
    part = Part("mirror", f"{examples:,} random machines served and mirrored in-process, up to 20 steps each, "
                          "mirror == source after every step", unit="remote operations")
    counts: dict[str, int] = {}

    def body() -> None:
        ep = expose([])
        client = connect(ep.address, timeout=5)
        try:
            counts.update(tf.run_mirror_fuzz(ep, client, tf.fuzz_settings(examples, 20, derandomize=False)))
            part.errors += ep.errors
        finally:
            client.close()
            ep.stop()

    guarded(part, body)
    part.operations = counts.get("remote", 0) + counts.get("pipelined", 0) + counts.get("syncs", 0)
    part.details.append(", ".join(f"{k} {v:,}" for k, v in counts.items()))
    part.what += f" ({counts.get('source', 0):,} source-side mutations)"
    return part


def run_long(minutes: float) -> Part:
    import soak_long

    part = Part("long", f"{minutes:g} min: one daemon, {soak_long.MACHINES} machines changing, 20 clients (mutators "
                        "reconnecting, clients shared by threads, waiters, state contexts, dry runs, a watcher, a "
                        "slow watcher); RSS and per-session/per-machine sizes each minute", unit="mutations")

    def body() -> None:
        ok, lines, applied = soak_long.run(minutes, log=lambda line: print(line, flush=True))
        part.operations = applied
        part.details.extend(lines)
        part.what += f" ({'; '.join(lines)})"
        if not ok:
            part.lost += 1

    guarded(part, body)
    return part


def _force_seed(seed: int) -> None:
    """Make the random fuzz parts repeatable (what pytest's --hypothesis-seed does)."""
    import hypothesis.core

    hypothesis.core.global_force_seed = seed  # type: ignore[attr-defined]


def host() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "machine", "transport", "arpc"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        rev += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        rev = "?"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = " ".join(line.split(":", 1)[1].split()[:2])
                break
    except OSError:
        pass
    return (f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()} "
            f"({platform.python_implementation()}), {platform.system()} {platform.release()}, asyncmachine {rev}")


def report(parts: list[Part], command: str, total: float, load_before: str) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ok = all(p.ok for p in parts)
    lines = [
        "### reliability",
        "",
        f"- {'nothing lost' if ok else '**something was lost**'}: "
        + "; ".join(f"{p.name} {p.operations:,} {p.unit}, {p.errors} errors, {p.crashes} crashes, {p.lost} lost"
                    for p in parts),
        "",
        "| part | what ran | operations | errors | crashes | lost | time | goal met (all 0) |",
        "|---|---|---|---|---|---|---|---|",
        *[p.row() for p in parts],
        "",
        "- errors: an invariant that broke (the fuzz stops at the first and prints the steps that reproduce it) or a "
        "mutation that did not return `executed`; crashes: an exception other than a failed check, or a client "
        "process that died; lost: mutations, waiters or ticks that never arrived.",
        "- The test suite runs the same checks smaller and deterministic (hypothesis `derandomize=True`): "
        "`tests/machine/test_fuzz.py`, `tests/transport/test_load.py` (8 x 1000), `tests/arpc/test_arpc_bad_input.py`"
        " (bad input to the CLI and the REPL).",
        "",
        f"Measured {now}, {host()}, load average {load_before} at the start, {total:.0f} s in all, with "
        f"`{command}`.",
    ]
    return "\n".join(lines)


def write_block(path: Path, text: str) -> None:
    block = f"{START}\n{text}\n{END}"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if START in old and END in old:
        head, rest = old.split(START, 1)
        _, tail = rest.split(END, 1)
        new = head + block + tail
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=1, help="scale: 1000*N mutations per client, 150*N machines")
    ap.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    ap.add_argument("--clients", type=int, default=8, help="client processes of the load (default 8)")
    ap.add_argument("--waiters", type=int, default=8, help="waiters per client (default 8)")
    ap.add_argument("--seed", type=int, help="repeatable fuzz (default: random)")
    ap.add_argument("--write", metavar="FILE", help="replace the reliability block of FILE (docs/benchmarks.md)")
    ap.add_argument("--minutes", type=float, help="run only the long part for this many minutes (see soak_long.py)")
    a = ap.parse_args(argv)
    if a.n < 1 or a.clients < 1 or a.waiters < 1:
        ap.error("N, --clients and --waiters must be at least 1")
    parts_wanted = a.only or list(PARTS)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    t0 = time.perf_counter()
    parts: list[Part] = []
    if a.minutes:
        parts_wanted = []
        print("== long", flush=True)
        parts.append(run_long(a.minutes))
    for name in PARTS:
        if name not in parts_wanted:
            continue
        print(f"== {name}", flush=True)
        if name == "load":
            part = run_load(a.n, a.clients, a.waiters)
        elif name == "mirror":
            part = run_mirror(a.n, a.seed)
        else:
            part = run_fuzz(name, a.n, a.seed)
        parts.append(part)
        print(f"   {part.operations:,} {part.unit}, errors {part.errors}, crashes {part.crashes}, lost {part.lost}, "
              f"{part.seconds:.1f} s", flush=True)
        for d in part.details:
            print("   " + d.rstrip().replace("\n", "\n   "), flush=True)
    total = time.perf_counter() - t0
    command = "scripts/soak" + "".join(f" {x}" for x in (argv if argv is not None else sys.argv[1:])
                                       if not x.startswith("--write") and x != a.write)
    text = report(parts, command, total, load_before)
    print()
    print(text)
    if a.write:
        write_block(Path(a.write), text)
        print(f"\nwrote the reliability block of {a.write}")
    return 0 if all(p.ok for p in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
