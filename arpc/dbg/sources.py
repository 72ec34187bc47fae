"""Where ``arpc dbg``'s live events come from: :class:`LiveSource` follows the machines behind a
:class:`arpc.session.Session`, one :class:`Follower` each, and hands their events to a :class:`Feed` (a replay
reads them from a file instead: :mod:`arpc.dbg.record`).

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
from .model import MAX_MACHINES, Event

MAX_QUEUE = 20_000


class Feed:
    """A bounded, thread-safe hand-over of events from I/O threads to the screen."""

    def __init__(self, maxlen: int = MAX_QUEUE) -> None:
        self._q: deque[Event] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, ev: Event) -> None:
        """Queue ``ev`` (never blocks; the screen polls the feed at its redraw rate)."""
        with self._lock:
            if len(self._q) == self._q.maxlen:
                self.dropped += 1
            self._q.append(ev)

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


HISTORY_WHY = {"no_history": "no history kept on the source",
               "limit": "its history is not followed (the daemon's limit per session; select it to follow it)"}


class Follower:
    """One machine's subscriptions: ``on_update`` always (the board's clock), and the source's history when it can
    be followed (the log: backlog, canceled transitions with their reason, errors with their traceback); without
    it, the log is one record per update (accepted transitions only).

    The one place that chooses the log's source: :meth:`start_history` and :meth:`stop_history` switch it, and
    the update events say which one is on (``h``), so the model never logs a transition twice."""

    def __init__(self, mach: Any, mid: str, put: Callable[[Event], Any], backlog: int = 100) -> None:
        self.mach = mach
        self.mid = mid
        self.put = put
        self.backlog = backlog
        self.hist = False
        self.why = ""  # why the history is not followed: no_history, limit (or "")
        self._off_hist: Callable[[], None] | None = None
        self._off_upd: Callable[[], None] = mach.on_update(self._on_update)

    def _on_update(self, u: dict[str, Any]) -> None:
        if self.hist:  # the history brings the record: the board needs only the clock (half the events of a pump)
            self.put({"k": "update", "m": self.mid, "t": _time.time(), "clock": list(u.get("time") or ()), "h": 1})
            return
        self.put({"k": "update", "m": self.mid, "t": _time.time(), "clock": list(u.get("time") or ()),
                  "added": list(u.get("added") or ()), "removed": list(u.get("removed") or ()),
                  "ticked": list(u.get("ticked") or ()), "mutations": list(u.get("mutations") or ()),
                  "h": int(self.hist)})

    def _on_record(self, rec: dict[str, Any]) -> None:
        self.put({"k": "history", "m": self.mid, "t": _time.time(), "rec": rec})

    def start_history(self) -> bool:
        """Follow the source's history; False (and a note in the log) when it has none or the daemon refuses."""
        on_history = getattr(self.mach, "on_history", None)
        if on_history is None or self.hist:
            return self.hist
        self.hist = True  # before the call: its backlog may arrive on the I/O thread before it returns
        try:
            self._off_hist = on_history(self._on_record, backlog=self.backlog)
        except Exception as e:  # noqa: BLE001 - no history to follow: say why, log updates instead
            self.hist = False
            code = str(getattr(e, "code", ""))
            if code not in HISTORY_WHY:
                raise
            if code != self.why:
                self.put({"k": "note", "m": self.mid, "t": _time.time(), "hist": False,
                          "text": f"{HISTORY_WHY[code]}: live transitions only"})
            self.why = code
            return False
        self.why = ""
        return True

    def stop_history(self, why: str = "limit") -> None:
        """Back to one record per update (the daemon follows a limited number of histories per session)."""
        # updates make records again before the history stops: a transition may be logged twice, never lost
        was, self.hist = self.hist, False
        if self._off_hist is not None:
            _quietly(self._off_hist)
            self._off_hist = None
        if was:
            self.why = why
            self.put({"k": "note", "m": self.mid, "t": _time.time(), "hist": False,
                      "text": f"{HISTORY_WHY[why]}: live transitions only"})

    def close(self) -> None:
        if self._off_hist is not None:
            _quietly(self._off_hist)
        _quietly(self._off_upd)


class LiveSource:
    """Follows every machine of a session, up to ``max_machines`` (the first by id; the others are listed once, so
    that the screen counts them, and never subscribed to): a ``machine`` event when one appears (or comes back),
    its transitions, ``status`` events when its link goes down or up. Mirrors are made here, not by the session
    (which must not be eager). Reconnection is the session's (retries, addr files)."""

    def __init__(self, session: Session, feed: Feed, *, watch: bool = True, backlog: int = 100,
                 max_machines: int = MAX_MACHINES) -> None:
        self.session = session
        self.max_machines = max_machines
        self._past_cap: set[str] = set()  # machines listed but not followed (said once each)
        self.backlog = backlog
        self.feed = feed
        self.watch = watch
        self._subs: dict[str, Follower] = {}  # machine id -> its subscriptions
        self._wanted: str | None = None  # the machine on screen: its history is followed, others give way
        self._hist_order: list[str] = []  # machines whose history is followed, the least recently wanted first
        self._up: dict[str, bool] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error = ""  # the last failure to follow a machine (the status line shows it)
        self.generation = 0  # +1 each time a machine is followed (anew): the screen re-freezes what lasts

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
            if mid not in self._subs and len(self._subs) >= self.max_machines:
                if mid not in self._past_cap and len(self._past_cap) < 100_000:  # ids only: a few MiB at most
                    self._past_cap.add(mid)  # the model counts it as not followed; no mirror, no subscription
                    self.feed.put({"k": "machine", "m": mid, "t": _time.time(), "up": up})
                continue
            mach = entry.mirror
            if mach is None and up:
                try:
                    mach = self.session.mirror(entry)
                except Exception as e:  # noqa: BLE001 - not connected after all: the next round retries
                    self.error, failed = f"{mid}: {e}", True
                    mach = None
            sub = self._subs.get(mid)
            if mach is not None and (sub is None or sub.mach is not mach):
                if sub is not None:
                    sub.close()
                self.feed.put(machine_event(mid, mach, up))
                try:
                    sub = self._subs[mid] = Follower(mach, mid, self.feed.put, self.backlog)
                    self.generation += 1
                    if sub.start_history():
                        self._hist_order.append(mid)
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
        self._give_history()
        if not failed:
            self.error = ""

    def want_history(self, mid: str | None) -> None:
        """The machine on screen: follow its history, in place of the least recently shown one if need be."""
        if mid != self._wanted:
            self._wanted = mid
            self._wake.set()

    def _give_history(self) -> None:
        mid = self._wanted
        sub = self._subs.get(mid) if mid is not None else None
        if sub is None or mid is None:
            return
        if sub.hist:
            if mid in self._hist_order:  # most recently wanted: the last to give way
                self._hist_order.remove(mid)
                self._hist_order.append(mid)
            return
        if sub.why != "limit" or not sub.mach.connected:
            return
        others = [m for m in self._hist_order if m != mid and m in self._subs]
        if others:
            victim = others[0]
            self._hist_order.remove(victim)
            self._subs[victim].stop_history()
        if sub.start_history():
            self._hist_order.append(mid)

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
        for sub in list(self._subs.values()):
            sub.close()
        self._subs.clear()
        if self._thread is not None:
            self._thread.join(2.0)
        self.session.close()


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001
        pass
