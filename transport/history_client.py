"""What a mirror can ask about its source's past: transition history, last errors, figures (``RemoteMachine``'s
``history``, ``errors``, ``info`` and ``on_history``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from machine.history import History
from machine.log import LazyLogger

from . import protocol as P

if TYPE_CHECKING:
    from .client import Client

log = LazyLogger("transport.client")
Record = dict[str, Any]


class HistoryReader:
    """Mixed into ``RemoteMachine``: the source's history over the wire (``expose`` keeps 1000 transitions of
    each machine by default). A machine that keeps none raises ``TransportError`` with code ``no_history``."""

    _id: str
    _client: Client
    _hist_cbs: list[Callable[[Record], Any]]
    _hist_seq: int
    _hist_lock: threading.Lock

    def _hist_init(self) -> None:
        self._hist_cbs = []
        self._hist_seq = 0      # the newest record delivered to the on_history callbacks
        self._hist_lock = threading.Lock()

    @property
    def history(self) -> RemoteHistory:
        """The source's history, read over the wire: ``records(...)`` (or call it), ``errors()``, ``last_seq``."""
        return RemoteHistory(self)

    def errors(self, limit: int | None = None) -> list[Record]:
        """The source's last errors (type, message, trace, handler, time), oldest first."""
        return self.history.errors(limit)

    def info(self) -> dict[str, Any]:
        """The source's figures: ``time_sum``, ``queue_len``, ``queue_tick``, ``active``, ``exception``, ``history``
        (records kept), ``records`` (made so far), ``last_error``."""
        return dict(self._client._call(P.INFO, self._id, {}))

    def on_history(self, fn: Callable[[Record], Any], *, backlog: int = 100) -> Callable[[], None]:
        """Call ``fn(record)`` for the last ``backlog`` records, then for every new one, in order, with no gap and no
        duplicate (also across a reconnect); returns a function that stops it. ``fn`` runs on the thread that
        reads the client's socket (often the process's client I/O thread): it must not block."""
        body = self._follow_begin(fn, backlog)
        try:
            if body.get("follow"):
                self._client._call(P.HIST, self._id, body, on_reply=self._on_hist_backlog)
            else:
                self._catch_up(fn, self._client._call(P.HIST, self._id, body))
        except BaseException:
            self._follow_end(fn)
            raise
        return lambda: self._unfollow(fn, self._client._notify)

    def _follow_begin(self, fn: Callable[[Record], Any], backlog: int) -> dict[str, Any]:
        """``fn`` added to the followers, and the ``hist`` request to send for it (sync or asyncio): the first
        follower follows the source; a later one reads the backlog the first one got (``_catch_up``), then
        gets the same live records. On failure the caller calls ``_follow_end(fn)``."""
        with self._hist_lock:
            first = not self._hist_cbs
            self._hist_cbs = [*self._hist_cbs, fn]
        if first:
            return {"follow": True, "limit": backlog}
        return {"limit": backlog, "since_seq": max(0, self._hist_seq - backlog)}

    def _catch_up(self, fn: Callable[[Record], Any], out: Any) -> None:
        for r in out["records"]:
            if r["seq"] <= self._hist_seq:
                fn(r)

    def _follow_end(self, fn: Callable[[Record], Any]) -> bool:
        """Drop ``fn``; True when it was the last follower."""
        with self._hist_lock:
            self._hist_cbs = [f for f in self._hist_cbs if f is not fn]
            return not self._hist_cbs

    def _unfollow(self, fn: Callable[[Record], Any], send: Callable[[str, str | None, Any], Any]) -> None:
        """What ``on_history``'s stop does; ``send`` sends ``unfollow`` when the last follower is gone."""
        if self._follow_end(fn) and not self._client._closed:
            try:
                send(P.UNFOLLOW, self._id, {})
            except Exception:
                pass

    def _deliver(self, records: list[Any]) -> None:
        cbs = self._hist_cbs
        for r in records:
            if not isinstance(r, dict) or not isinstance(r.get("seq"), int) or r["seq"] <= self._hist_seq:
                continue
            self._hist_seq = r["seq"]
            for fn in cbs:
                try:
                    fn(r)
                except Exception:
                    log.exception("history callback failed")

    def _on_hist_backlog(self, body: Any) -> None:
        if not isinstance(body, dict):
            return
        if isinstance(body.get("last_seq"), int) and body["last_seq"] < self._hist_seq:
            # a new source process: its records start again at 1; read them all from its first
            self._hist_seq = 0
            self._client._call_async(P.HIST, self._id, {"since_seq": 0, "limit": P.MAX_HIST_REPLY},
                                     self._on_hist_backlog)
            return
        self._deliver(body.get("records") or [])

    def _on_hrec(self, record: Any) -> None:
        """A pushed record; a jump in seq (a push dropped while we did not read) is filled from the backlog."""
        if not self._hist_cbs or not isinstance(record, dict) or not isinstance(record.get("seq"), int):
            return
        if self._hist_seq and record["seq"] > self._hist_seq + 1:
            self._client._call_async(P.HIST, self._id, {"since_seq": self._hist_seq, "limit": P.MAX_HIST_REPLY},
                                     self._on_hist_backlog)
            return      # the reply holds this record too, in order
        self._deliver([record])

    def _refollow(self) -> None:
        """After a reconnect: follow again from the last record delivered."""
        if self._hist_cbs:
            self._client._call_async(P.HIST, self._id, {"follow": True, "since_seq": self._hist_seq,
                                                        "limit": P.MAX_HIST_REPLY}, self._on_hist_backlog)


def records_body(since_tick: int | None, since_time: float | None, since_seq: int | None,
                 limit: int | None) -> dict[str, Any]:
    """The ``hist`` request of ``records(...)``."""
    body: dict[str, Any] = {"limit": P.MAX_HIST_REPLY if limit is None else limit}
    for k, v in (("since_seq", since_seq), ("since_tick", since_tick), ("since_time", since_time)):
        if v is not None:
            body[k] = v
    return body


class RemoteHistory(History):
    """A mirror's view of its source's ``History``: the same reading methods, each one round trip. ``size`` is
    what the last ``records()`` reply said (0 before one)."""

    def __init__(self, mirror: HistoryReader) -> None:  # no ring here: nothing of History's state is used
        self._mirror = mirror
        self.size = 0

    def __call__(self, **kw: Any) -> list[Record]:
        """``records(**kw)``."""
        return self.records(**kw)

    def records(self, *, since_tick: int | None = None, since_time: float | None = None,
                since_seq: int | None = None, limit: int | None = 100) -> list[Record]:
        """Records oldest first, after record ``since_seq``, machine time ``since_tick`` (the sum of ticks) or
        wall time ``since_time``; the newest ``limit`` (at most 1000)."""
        out = self._mirror._client._call(P.HIST, self._mirror._id,
                                         records_body(since_tick, since_time, since_seq, limit))
        self.size = int(out.get("size", 0))
        return list(out["records"])

    def errors(self, limit: int | None = None) -> list[Record]:
        out = self._mirror._client._call(P.HIST, self._mirror._id,
                                         {"errors": True, "limit": limit or P.MAX_HIST_REPLY})
        return list(out["errors"])

    @property
    def last_seq(self) -> int:
        out = self._mirror._client._call(P.HIST, self._mirror._id, {"limit": 0})
        return int(out["last_seq"])

    def __len__(self) -> int:
        info = self._mirror.info()
        return min(int(info["records"]), int(info["history"]))

    def follow(self, fn: Callable[[Record], Any], since_seq: int = 0,
               limit: int | None = None) -> tuple[list[Record], Callable[[], None]]:
        """Not on a mirror: use ``RemoteMachine.on_history(fn)``."""
        raise NotImplementedError("history.follow() runs on the source; on a mirror use on_history(fn)")

    def resize(self, size: int) -> None:
        """Not on a mirror: the source decides what it keeps."""
        raise NotImplementedError("the history's size is set on the source (expose(..., history=N))")
