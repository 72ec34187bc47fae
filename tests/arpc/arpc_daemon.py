"""Fixture daemon for arpc end-to-end tests (spec section 7, fixtures X / F / H).

Machines worker0..2 (parent ``daemon``) with states [Exception, ErrOnClient, Foo, Bar, Baz, Start, Ready]: Foo, Bar
and Baz remove each other, Ready requires Start, Baz's enter guard rejects arg ``deny == "1"``. Each machine is
exposed with ``addr_dir`` (or all of them behind one endpoint with ``--hub``).

Prints ``ready`` once serving. Reads commands on stdin, one a line, answering ``ok`` / ``err <msg>``:
``add|remove|set ID STATE...`` (source-side mutations), ``args ID STATE`` (prints the last args the STATE's
enter handler saw, as JSON), ``argtypes ID STATE`` (the same as ``{name: [type name, repr]}``), ``sessions ID``
(client sessions on the endpoint serving ID), ``stop`` (stop the endpoints, removing the addr files); exits at EOF.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from arpc_fixture import SCHEMA  # fixture X, one definition for the local and the daemon runs

from machine import Arg, Machine
from transport import expose

# --typed: Foo and Bar declare their args (one of each type)
TYPED_ARGS = {"job": Arg(int, "job number"), "ratio": Arg(float), "ok": Arg(bool, "all good"),
              "name": Arg(str), "blob": Arg(bytes), "meta": Arg("json", "anything JSON")}


class Handlers:
    def __init__(self) -> None:
        self.seen: dict[str, dict[str, object]] = {}
        self.lock = threading.Lock()

    def _record(self, state: str, e: object) -> None:
        with self.lock:
            self.seen[state] = dict(e.args)  # type: ignore[attr-defined]

    def FooEnter(self, e: object) -> None:
        self._record("Foo", e)

    def BarEnter(self, e: object) -> None:
        self._record("Bar", e)

    def BazEnter(self, e: object) -> bool:
        self._record("Baz", e)
        return e.args.get("deny") != "1"  # type: ignore[attr-defined, no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--addr0", help="fixed address of worker0 (fixture F)")
    ap.add_argument("--hub", action="store_true", help="all machines behind one endpoint (fixture H)")
    ap.add_argument("--active", action="append", default=[], help="ID=STATE,STATE initial states")
    ap.add_argument("--typed", action="store_true", help="Foo and Bar declare TYPED_ARGS")
    ap.add_argument("--no-fleet", action="store_true", help="an older daemon: no group / watch requests")
    opts = ap.parse_args()
    if opts.no_fleet:
        import transport.server.fleet as fleet

        fleet.KINDS = frozenset()  # answered as unknown kinds, as a daemon from before them
    schema = SCHEMA
    if opts.typed:
        schema = {**SCHEMA, "Foo": SCHEMA["Foo"].replace(args=TYPED_ARGS),
                  "Bar": SCHEMA["Bar"].replace(args={"job": TYPED_ARGS["job"]})}

    handlers = {f"worker{i}": Handlers() for i in range(opts.n)}
    machs = [Machine(schema, id=f"worker{i}", parent="daemon", handlers=handlers[f"worker{i}"])
             for i in range(opts.n)]
    by_id = {m.id: m for m in machs}
    for spec in opts.active:
        mid, _, states = spec.partition("=")
        by_id[mid].add(*states.split(","))
    if opts.hub:
        eps = [expose(machs, addr=opts.addr0 or "tcp://127.0.0.1:*", addr_dir=opts.dir)]
    else:
        eps = [expose(m, addr=(opts.addr0 if i == 0 and opts.addr0 else "tcp://127.0.0.1:*"), addr_dir=opts.dir)
               for i, m in enumerate(machs)]
    ep_of = {m.id: eps[0 if opts.hub else i] for i, m in enumerate(machs)}
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            cmd = words[0]
            if cmd in ("add", "remove", "set"):
                r = getattr(by_id[words[1]], cmd)(*words[2:])
                print(f"ok {int(r)}", flush=True)
            elif cmd == "args":
                with handlers[words[1]].lock:
                    print("ok " + json.dumps(handlers[words[1]].seen.get(words[2])), flush=True)
            elif cmd == "argtypes":
                with handlers[words[1]].lock:
                    seen = handlers[words[1]].seen.get(words[2]) or {}
                    print("ok " + json.dumps({k: [type(v).__name__, repr(v)] for k, v in seen.items()}), flush=True)
            elif cmd == "addjson":  # add STATE with args given as JSON (typed values: ints, bools)
                r = by_id[words[1]].add(words[2], args=json.loads(" ".join(words[3:])))
                print(f"ok {int(r)}", flush=True)
            elif cmd == "err":  # add_err with a message, as daemon code would
                r = by_id[words[1]].add_err(RuntimeError(" ".join(words[2:])))
                print(f"ok {int(r)}", flush=True)
            elif cmd == "sessions":
                print(f"ok {ep_of[words[1]].sessions}", flush=True)
            elif cmd == "stop":
                for ep in eps:
                    ep.stop()
                print("ok", flush=True)
            else:
                print(f"err unknown command {cmd}", flush=True)
        except Exception as exc:  # noqa: BLE001
            print(f"err {exc}", flush=True)
    for ep in eps:
        ep.stop()


if __name__ == "__main__":
    main()
