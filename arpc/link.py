"""The per-address link of a session (:class:`Link`: its connection, the machines it listed, the mirrors made so
far) and :class:`Entry`, one machine of the listing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import UnknownState

# a link's state
NEW, CONNECTING, CONNECTED, DISCONNECTED, FAILED = "new", "connecting", "connected", "disconnected", "failed"


class Link:
    """One distinct address: its connection, the machines it listed, and the mirrors made so far."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.conn: Any = None
        self.state = NEW
        self.error = ""  # why the last connect failed, in words (arpc.diagnose)
        self.detail = ""  # the connector's own error (shown with --log-level)
        self.infos: list[dict[str, Any]] = []
        self.mirrors: dict[str, Any] = {}
        self.busy = False  # a connect attempt is running
        self.fails = 0
        self.next_try = 0.0
        self.fail_noticed = False
        self.ever_connected = False
        self.closed = False

    def failure(self, detail: bool = False) -> str:
        """``cannot connect to ADDR: why`` (``detail``: with the connector's own error)."""
        line = self.error or "not connected"
        if not line.startswith(f"cannot connect to {self.address}"):
            line = f"cannot connect to {self.address}: {line}"
        return f"{line} [{self.detail}]" if detail and self.detail and self.detail != self.error else line

    def conn_states(self) -> str:
        """The client's connection machine's active states (``transport.conn_state.describe``, e.g. ``Start
        Connected Ready``); "" without a transport client (none yet, or in-process machines)."""
        conn = self.conn
        if conn is None:
            return ""
        from transport.client import Client  # the session imports transport before any link has a client

        if not isinstance(conn, Client):
            return ""
        from transport.conn_state import describe

        return describe(conn)

    def line(self) -> str:
        """``ADDR: state[, N machines] [connection states][: last error]``, as ``connect`` lists a link."""
        n = len(self.infos)
        how = f"{self.state}, {n} machine{'s' if n != 1 else ''}" if self.connected else self.state
        cs = self.conn_states()
        err = f": {self.error}" if self.error and not self.connected else ""
        return f"{self.address}: {how}" + (f" [{cs}]" if cs else "") + err

    def summary(self) -> dict[str, Any]:
        """``line()`` as JSON: address, state, last error, connection states."""
        return {"address": self.address, "state": self.state, "error": self.error, "conn": self.conn_states().split()}

    @property
    def connected(self) -> bool:
        if self.state != CONNECTED or self.conn is None:
            return False
        ok = getattr(self.conn, "connected", True)
        return bool(ok)

    def __repr__(self) -> str:
        return f"<Link {self.address} {self.state} {[i['id'] for i in self.infos]}>"


class Entry:
    """A machine in the listing: its link, the last listing info and, once made, its mirror."""

    __slots__ = ("id", "link", "info")

    def __init__(self, link: Link, info: dict[str, Any]) -> None:
        self.id: str = info["id"]
        self.link = link
        self.info = info

    @property
    def mirror(self) -> Any:
        return self.link.mirrors.get(self.id)

    @property
    def names(self) -> list[str]:
        m = self.mirror
        return list(m.state_names) if m is not None else list(self.info.get("states") or [])

    @property
    def args(self) -> dict[str, Any]:
        """The args this machine declares, ``{name: machine.Arg}``: from its mirror, else from the listing."""
        m = self.mirror
        if m is not None:
            from machine import declared_args

            return declared_args(m)
        wire = self.info.get("args")
        if not wire:
            return {}
        from transport.protocol import args_from_wire

        return dict(args_from_wire(wire))

    def time(self) -> list[int]:
        m = self.mirror
        return list(m.time()) if m is not None else list(self.info.get("time") or [])

    def clock(self) -> dict[str, int]:
        return dict(zip(self.names, self.time(), strict=False))

    @property
    def parent_id(self) -> str | None:
        m = self.mirror
        return m.parent_id if m is not None else self.info.get("parent_id")

    @property
    def tags(self) -> list[str]:
        m = self.mirror
        return list(m.tags if m is not None else self.info.get("tags") or [])

    @property
    def connected(self) -> bool:
        if not self.link.connected:
            return False
        m = self.mirror
        if m is None:
            return True
        if getattr(m, "disposed", False):
            return False
        return bool(getattr(m, "connected", True))

    def active(self) -> list[str]:
        return [n for n, t in zip(self.names, self.time(), strict=False) if t & 1]

    def unknown(self, states: Iterable[str]) -> list[str]:
        names = self.names  # a few states against a short list: no set to build (once a machine of a fleet)
        return [s for s in states if s not in names]

    def check_states(self, states: Iterable[str]) -> None:
        bad = self.unknown(states)
        if bad:
            raise UnknownState(bad, self.id)

    def flags(self, names: list[str] | None = None, time: list[int] | None = None,
              connected: bool | None = None) -> str:
        """``C``/``D`` (connected or not), then ``R`` when its ``Ready`` is active, else ``S`` for ``Start``
        (``names``, ``time``, ``connected``: the entry's, when the caller has them already)."""
        flag = "C" if (self.connected if connected is None else connected) else "D"
        names = self.names if names is None else names
        time = self.time() if time is None else time
        for state, mark in (("Ready", "R"), ("Start", "S")):
            i = names.index(state) if state in names else len(time)
            if i < len(time) and time[i] & 1:
                return flag + mark
        return flag

    def __repr__(self) -> str:
        return f"<Entry {self.id} @ {self.link.address}>"
