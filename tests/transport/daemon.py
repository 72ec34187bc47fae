"""A daemon for the transport tests: spec fixture X (workers 0..2, parent "daemon") served by real endpoints.

Usage: python daemon.py [--addr ADDR] [--addr-dir DIR] [--hub] [--slow-foo SECONDS [--slow-mach ID]]
                        [--start STATE...] [--no-fleet] [--no-batches] [--peer-timeout SECONDS]
Prints one line per endpoint ("READY <address>"), then reads commands on stdin, one per line:
  add|remove|set MACH STATE...   a server-side mutation (prints "OK <result>")
  time MACH                      prints "TIME <ticks>"
  sessions                       prints "SESSIONS <n>" (client sessions of every endpoint)
  quit                           exits
"""

from __future__ import annotations

import argparse
import sys
import time

from machine import Event, Machine, State
from transport import expose
from transport import protocol as P

SCHEMA = {
    "Exception": State(multi=True),
    "ErrOnClient": State(require=("Exception",)),
    "Foo": State(remove=("Foo", "Bar", "Baz")),
    "Bar": State(remove=("Foo", "Bar", "Baz")),
    "Baz": State(remove=("Foo", "Bar", "Baz")),
    "Start": State(),
    "Ready": State(require=("Start",)),
    "Multi": State(multi=True),
}


class Handlers:
    def __init__(self, slow_foo: float) -> None:
        self.slow_foo = slow_foo

    def BazEnter(self, e: Event) -> bool:
        return e.args.get("deny") != "1"

    def FooState(self, e: Event) -> None:
        if self.slow_foo:
            time.sleep(self.slow_foo)  # a slow handler, so a client's call is retried


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--addr", default="tcp://127.0.0.1:*")
    p.add_argument("--addr-dir")
    p.add_argument("--hub", action="store_true", help="all machines behind one endpoint")
    p.add_argument("--slow-foo", type=float, default=0.0)
    p.add_argument("--slow-mach", help="only this machine's Foo is slow")
    p.add_argument("--start", nargs="*", default=[])
    p.add_argument("--no-fleet", action="store_true", help="an older daemon: no group / watch requests")
    p.add_argument("--no-batches", action="store_true",
                   help="an older daemon: its hello offers no ns_many, which it answers as an unknown kind")
    p.add_argument("--peer-timeout", type=float, help="drop a session silent this long (protocol's PEER_TIMEOUT)")
    a = p.parse_args()
    if a.no_fleet:
        import transport.server.fleet as fleet

        fleet.KINDS = frozenset()  # answered as unknown kinds, as a daemon from before them
    if a.no_batches:
        P.NS_MANY = "ns_many (not served)"  # the name the endpoint looks for and offers: never the client's
    if a.peer_timeout is not None:
        P.PEER_TIMEOUT = a.peer_timeout  # a liveness test's fault need not last the real 3.5 s
    machs = [Machine(SCHEMA, id=f"worker{i}", parent="daemon",
                     handlers=Handlers(a.slow_foo if a.slow_mach in (None, f"worker{i}") else 0.0),
                     handler_timeout=None) for i in range(3)]
    for m in machs:
        if a.start:
            m.add(*a.start)
    eps = [expose(machs, addr=a.addr, addr_dir=a.addr_dir)] if a.hub else [
        expose(m, addr=a.addr if i == 0 else "tcp://127.0.0.1:*", addr_dir=a.addr_dir) for i, m in enumerate(machs)]
    for ep in eps:
        print("READY", ep.address, flush=True)
    by_id = {m.id: m for m in machs}
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        if parts[0] in ("add", "remove", "set"):
            r = getattr(by_id[parts[1]], parts[0])(*parts[2:])
            print("OK", int(r), flush=True)
        elif parts[0] == "sessions":
            print("SESSIONS", sum(ep.sessions for ep in eps), flush=True)
        elif parts[0] == "time":
            print("TIME", " ".join(map(str, by_id[parts[1]].time())), flush=True)
    for ep in eps:
        ep.stop()


if __name__ == "__main__":
    main()
