"""In-process connections: serve local ``machine.Machine`` objects to a :class:`arpc.session.Session`.

A :class:`LocalConn` has the part of ``transport.Client`` that the session uses (``machines()``, ``machine(id)``,
``connected``, ``on_status``, ``close``) and hands out the machines themselves (a ``RemoteMachine`` has the same
API). :class:`LocalNet` maps addresses such as ``local://a`` to connections, so tests and embedded tools can run the
whole command table without sockets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any


class LocalConn:
    def __init__(self, machines: Iterable[Any], address: str = "local://") -> None:
        self.address = address
        self._machs: dict[str, Any] = {}
        for m in machines:
            self._machs.setdefault(m.id, m)
        self._connected = True
        self._status_fns: list[Callable[[bool], Any]] = []
        self._lock = threading.Lock()
        self.closed = False

    @property
    def connected(self) -> bool:
        return self._connected and not self.closed

    def machines(self) -> list[dict[str, Any]]:
        if not self.connected:
            raise ConnectionError(f"{self.address}: not connected")
        with self._lock:
            machs = list(self._machs.values())
        from machine import declared_args

        out = []
        for m in machs:
            if m.disposed:
                continue
            d = {"id": m.id, "parent_id": m.parent_id, "tags": list(m.tags), "time": m.time(),
                 "states": m.state_names}
            args = declared_args(m)
            if args:  # as a served machine's listing has them
                d["args"] = {n: {"type": a.type, "help": a.help} for n, a in args.items()}
            out.append(d)
        return out

    def machine(self, mach_id: str) -> Any:
        with self._lock:
            m = self._machs.get(mach_id)
        if m is None:
            raise LookupError(f"unknown machine: {mach_id}")
        return m

    def add(self, mach: Any) -> None:
        with self._lock:
            self._machs.setdefault(mach.id, mach)

    def on_status(self, fn: Callable[[bool], Any]) -> None:
        self._status_fns.append(fn)

    def set_connected(self, ok: bool) -> None:
        """Simulate the link dropping (``False``) or coming back (``True``)."""
        if ok == self._connected:
            return
        self._connected = ok
        for fn in list(self._status_fns):
            fn(ok)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> LocalConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalNet:
    """A registry of in-process endpoints: ``net.serve("local://a", [m1, m2])``, then pass ``net.connect`` as
    the session's connector. Connecting to an address nobody serves raises ``ConnectionError``."""

    def __init__(self) -> None:
        self._served: dict[str, list[Any]] = {}
        self.conns: list[LocalConn] = []

    def serve(self, address: str, machines: Iterable[Any]) -> None:
        self._served[address] = list(machines)

    def connect(self, address: str, timeout: float = 1.0) -> LocalConn:
        machs = self._served.get(address)
        if machs is None:
            raise ConnectionError(f"cannot connect to {address}")
        conn = LocalConn(machs, address)
        self.conns.append(conn)
        return conn
