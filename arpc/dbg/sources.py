"""Where ``arpc dbg``'s events come from: :class:`LiveSource` (the machines behind a :class:`arpc.session.Session`)
and :func:`replay_events` (a ``--record`` file), both handing events to a :class:`Feed`.

Callbacks of the transport run on the process's one client I/O thread and must not block: they only append to the
feed, a bounded deque the screen drains at its own pace (the oldest events are dropped, and counted, when the screen
falls behind).
"""

from __future__ import annotations

import threading
import time as _time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..session import Session
from .model import Event

MAX_QUEUE = 20_000


class Feed:
    """A bounded, thread-safe hand-over of events from I/O threads to the screen."""

    def __init__(self, maxlen: int = MAX_QUEUE, wake: Callable[[], Any] | None = None) -> None:
        self._q: deque[Event] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.dropped = 0
        self.wake = wake

    def put(self, ev: Event) -> None:
        with self._lock:
            if len(self._q) == self._q.maxlen:
                self.dropped += 1
            self._q.append(ev)
        if self.wake is not None:
            self.wake()

    def drain(self, limit: int = 100_000) -> list[Event]:
        """Up to ``limit`` events, oldest first; a ``gap`` event first when some were dropped since last time."""
        with self._lock:
            n = min(limit, len(self._q))
            out = [self._q.popleft() for _ in range(n)]
            dropped, self.dropped = self.dropped, 0
        if dropped:
            out.insert(0, {"k": "gap", "n": dropped, "t": _time.time()})
        return out

    def __len__(self) -> int:
        return len(self._q)


def machine_event(mid: str, mach: Any, up: bool) -> Event:
    """A ``machine`` event from a mirror: names, schema (relations), clock, parent, tags, link state."""
    schema = {name: {"require": list(st.require), "remove": list(st.remove), "add": list(st.add),
                     "after": list(st.after), "multi": bool(st.multi), "auto": bool(st.auto)}
              for name, st in mach.schema.items()}
    return {"k": "machine", "m": mid, "t": _time.time(), "parent": mach.parent_id, "tags": list(mach.tags or ()),
            "states": list(mach.state_names), "schema": schema, "clock": list(mach.time()), "up": up}


def follow(mach: Any, mid: str, put: Callable[[Event], Any], backlog: int = 100) -> Callable[[], None]:
    """Send ``mach``'s transitions to ``put``; returns the unsubscribe function.

    The one place that chooses the log's source: the source's history (``on_history``: the last ``backlog``
    records, then every transition, canceled ones with their reason, errors with their traceback) when the
    mirror has it and the source keeps one, else one record per ``on_update`` (accepted transitions only).
    ``on_update`` always feeds the board's clock."""
    offs: list[Callable[[], None]] = []
    on_history = getattr(mach, "on_history", None)
    if on_history is not None:
        def on_record(rec: dict[str, Any]) -> None:
            put({"k": "history", "m": mid, "t": _time.time(), "rec": rec})

        try:
            offs.append(on_history(on_record, backlog=backlog))
        except Exception as e:  # noqa: BLE001 - no history to follow: say why, log updates instead
            why = {"no_history": "no history kept on the source",
                   "limit": "not following its history (the daemon's limit per session)"}.get(getattr(e, "code", ""))
            if why is None:
                raise
            put({"k": "note", "m": mid, "t": _time.time(), "text": f"{why}: live transitions only"})
    hist = 1 if offs else 0

    def on_update(u: dict[str, Any]) -> None:
        put({"k": "update", "m": mid, "t": _time.time(), "clock": list(u.get("time") or ()),
             "added": list(u.get("added") or ()), "removed": list(u.get("removed") or ()),
             "ticked": list(u.get("ticked") or ()), "mutations": list(u.get("mutations") or ()), "h": hist})

    offs.append(mach.on_update(on_update))

    def off() -> None:
        for fn in offs:
            _quietly(fn)

    return off


class LiveSource:
    """Follows every machine of a session: a ``machine`` event when one appears (or comes back), its transitions,
    ``status`` events when its link goes down or up. Reconnection is the session's (retries, addr files)."""

    def __init__(self, session: Session, feed: Feed, *, watch: bool = True, backlog: int = 100) -> None:
        self.session = session
        self.backlog = backlog
        self.feed = feed
        self.watch = watch
        self._subs: dict[str, tuple[Any, Callable[[], None]]] = {}  # machine id -> (mirror, unsubscribe)
        self._up: dict[str, bool] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error = ""  # the last failure to follow a machine (the status line shows it)

    def start(self) -> None:
        """Connect and follow in a background thread (the screen opens at once, machines appear as they come)."""
        self.session.on_change = self._wake.set  # may be called on the I/O thread: only wakes the sync thread
        self._thread = threading.Thread(target=self._loop, daemon=True, name="arpc-dbg-sync")
        self._thread.start()

    def _loop(self) -> None:
        try:
            self.session.open()
            self.session.start_background(watch=self.watch)
        except Exception as e:  # noqa: BLE001 - shown on the status line; the session retries
            self.error = str(e) or type(e).__name__
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as e:  # noqa: BLE001 - the follower must not die
                self.error = str(e) or type(e).__name__
            self._wake.wait(1.0)
            self._wake.clear()

    def sync(self) -> None:
        """Follow new machines (and new mirrors after a reconnect); report links that went down or up."""
        failed = False
        for entry in self.session.entries():
            if self._stop.is_set():
                return
            mid = entry.id
            up = entry.connected
            mach = entry.mirror
            if mach is None and up:
                try:
                    mach = self.session.mirror(entry)
                except Exception as e:  # noqa: BLE001 - not connected after all: the next round retries
                    self.error, failed = f"{mid}: {e}", True
                    mach = None
            sub = self._subs.get(mid)
            if mach is not None and (sub is None or sub[0] is not mach):
                if sub is not None:
                    _quietly(sub[1])
                self.feed.put(machine_event(mid, mach, up))
                try:
                    self._subs[mid] = (mach, follow(mach, mid, self.feed.put, self.backlog))
                except Exception as e:  # noqa: BLE001
                    self.error, failed = f"{mid}: {e}", True
                    continue
                self._up[mid] = up
            elif self._up.get(mid) != up:
                self._up[mid] = up
                if up and mach is not None:  # back: the source may have restarted, its clock with it
                    self.feed.put(machine_event(mid, mach, up))
                else:
                    self.feed.put({"k": "status", "m": mid, "t": _time.time(), "up": up})
        if not failed:
            self.error = ""

    def mutate(self, mid: str, op: str, state: str) -> str:
        """``add``/``remove`` ``state`` on machine ``mid``; the result as a word (or the error's message)."""
        try:
            entry = self.session.resolve(mid)
            mach = self.session.live(entry)
            r = getattr(mach, op)(state)
        except Exception as e:  # noqa: BLE001 - shown on the status line
            return f"{op} {state}: {e}"
        name = {0: "executed", 1: "canceled"}.get(int(r), "queued")
        return f"{op} {state} on {mid}: {name}"

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for _, off in list(self._subs.values()):
            _quietly(off)
        self._subs.clear()
        if self._thread is not None:
            self._thread.join(2.0)
        self.session.close()


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001
        pass
