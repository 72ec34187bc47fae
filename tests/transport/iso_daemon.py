"""A daemon for the isolation tests: many machines behind one endpoint, one of them slow.

Usage: python iso_daemon.py [--machines N] [--slow SECONDS]
Serves ``m0`` .. ``m<N-1>``, each with the states Multi (multi), Foo and Bar, on one endpoint; ``m0``'s
``MultiState`` sleeps SECONDS (the slow machine). Every machine's ``MultiState`` records ``(c, n)`` from its args
and sleeps ``sleep`` seconds (or computes for ``spin`` seconds) when the args say so.
Prints "READY <address>", then reads commands on stdin, one per line:
  log MACH      prints "LOG <json list of [c, n]>" (the args of every Multi activation, in order)
  time MACH     prints "TIME <ticks>"
  demoted       prints "DEMOTED <n>": slow inline transitions left to their thread so far (leader.py)
  quit          exits
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from machine import Event, Machine, State
from transport import expose
from transport.server.leader import DOG

SCHEMA = {"Multi": State(multi=True), "Foo": State(remove=("Bar",)), "Bar": State(remove=("Foo",))}


class Handlers:
    def __init__(self, slow: float) -> None:
        self.slow = slow
        self.log: list[Any] = []

    def MultiState(self, e: Event) -> None:
        self.log.append([e.args.get("c"), e.args.get("n")])
        pause = self.slow or e.args.get("sleep", 0)
        if pause:
            time.sleep(pause)  # a slow disk, a DNS lookup: a handler that takes its time
        spin = e.args.get("spin", 0)
        if spin:  # a handler busy in Python for that long: it holds the GIL but for the interpreter's switches
            end = time.perf_counter() + spin
            while time.perf_counter() < end:
                pass


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--machines", type=int, default=100)
    p.add_argument("--slow", type=float, default=0.8)
    a = p.parse_args()
    handlers = [Handlers(a.slow if i == 0 else 0.0) for i in range(a.machines)]
    machs = [Machine(SCHEMA, id=f"m{i}", handlers=h, handler_timeout=None) for i, h in enumerate(handlers)]
    by_id = {m.id: (m, h) for m, h in zip(machs, handlers, strict=True)}
    ep = expose(machs)
    print("READY", ep.address, flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        if parts[0] == "log":
            print("LOG", json.dumps(by_id[parts[1]][1].log), flush=True)
        elif parts[0] == "demoted":
            print("DEMOTED", DOG.demoted, flush=True)
        elif parts[0] == "time":
            print("TIME", " ".join(map(str, by_id[parts[1]][0].time())), flush=True)
    ep.stop()


if __name__ == "__main__":
    main()
