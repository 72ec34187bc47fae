"""Requests that look back and around: a machine's transition history (``hist``, ``unfollow``) and the
endpoint's or a machine's figures (``info``). Read-only clients may use them all."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from machine import Machine

from .. import protocol as P
from ..errors import TransportError
from .pushes import MAX_BACKLOG
from .sessions import Session

if TYPE_CHECKING:
    from .dispatch import Dispatcher


def _opt_number(b: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    v = b.get(key)
    if v is not None and (not isinstance(v, kind) or isinstance(v, bool)):
        raise ValueError(f"{key} must be a number")
    return v


class Inspection:
    """``hist``, ``unfollow`` and ``info`` for a ``Dispatcher`` (on the I/O thread)."""

    def __init__(self, d: Dispatcher) -> None:
        self.d = d
        self.started = time.time()

    def _history(self, m: Machine) -> Any:
        h = m.history
        if h is None:
            raise TransportError(f"machine {m.id} keeps no history (expose(..., history=N) or "
                                 f"mach.keep_history(N) on the daemon)", code=P.NO_HISTORY)
        return h

    def hist(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        """Records after ``since_seq`` / ``since_tick`` / ``since_time`` (the newest ``limit``, default 100);
        ``errors: true`` for the last errors instead; ``follow: true`` pushes every later record (``hrec``)."""
        m = self.d._mach(mach_id)
        h = self._history(m)
        limit = _opt_number(b, "limit", int)
        limit = P.MAX_HIST_REPLY if limit is None else max(0, min(limit, P.MAX_HIST_REPLY))
        if b.get("errors"):
            self.d._ok(sess, seq, m.id, {"errors": h.errors(limit) if limit else []})
            return
        since_seq = _opt_number(b, "since_seq", int)
        since_tick = _opt_number(b, "since_tick", int)
        since_time = _opt_number(b, "since_time", (int, float))
        if b.get("follow"):
            if m.id not in sess.follows and len(sess.follows) >= P.MAX_FOLLOWS:
                raise TransportError(f"a session follows at most {P.MAX_FOLLOWS} histories", code=P.LIMIT)
            self._unfollow(sess, m.id)
            records, stop = h.follow(self._pusher(sess, m.id), since_seq or 0, limit)
            sess.follows[m.id] = stop
        else:
            records = h.records(since_seq=since_seq, limit=limit)
        if since_tick is not None or since_time is not None:
            records = [r for r in records if (since_tick is None or r["tick"] > since_tick)
                       and (since_time is None or r["time"] >= since_time)]
        self.d._ok(sess, seq, m.id, {"records": records, "last_seq": h.last_seq, "size": h.size})

    def _pusher(self, sess: Session, mach_id: str) -> Any:
        loop = self.d.loop
        identity = sess.identity

        def push(record: dict[str, Any]) -> None:     # on the machine's thread: hand over to the I/O thread
            frame = P.pack(P.HREC, 0, mach_id, record)

            def send() -> None:
                s = loop.sessions.get(identity)
                if s is not None and mach_id in s.follows:
                    # dropped when the client does not read: it sees the seq jump and asks for the gap. Small
                    # records are bounded by SNDHWM (messages); larger ones (args, a traceback) are counted in
                    # bytes with the session's other pushes of records, as those are
                    if len(frame) <= P.HREC_UNTRACKED:
                        loop.send(s, frame)
                    elif s.backlog.pending() + len(frame) <= MAX_BACKLOG:
                        loop.send_tracked(s, frame)

            loop.post(send)

        return push

    def unfollow(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        if mach_id is None:
            raise TransportError("unfollow needs a machine id", code=P.INVALID_PARAMS)
        self._unfollow(sess, mach_id)
        self.d._ok(sess, seq, mach_id, {})

    @staticmethod
    def _unfollow(sess: Session, mach_id: str) -> None:
        stop = sess.follows.pop(mach_id, None)
        if stop is not None:
            stop()

    def info(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        """The endpoint's figures, or with a machine id that machine's."""
        if mach_id is not None:
            self.d._ok(sess, seq, mach_id, machine_info(self.d._mach(mach_id)))
            return
        ep, loop = self.d.ep, self.d.loop
        machs = [m for m in ep.machines if not m.disposed]
        queued = sorted(((m.id, m.queue_len) for m in machs if m.queue_len), key=lambda x: -x[1])
        self.d._ok(sess, seq, None, {
            "proto": P.PROTO, "boot": ep.boot, "address": ep.address, "uptime": time.time() - self.started,
            "machines": len(machs), "sessions": len(loop.sessions), "handled": loop.handled, "errors": loop.errors,
            "exceptions": sorted(m.id for m in machs if m.is_err())[:100],
            "queues": dict(queued[:100]), "queued": sum(n for _, n in queued)})


def machine_info(m: Machine) -> dict[str, Any]:
    """A machine's figures for ``info``: ticks, queue, history size and its last error."""
    h = m.history
    errs = h.errors(1) if h is not None else []
    return {"id": m.id, "time_sum": sum(m.time()), "queue_len": m.queue_len, "queue_tick": m.queue_tick,
            "machine_tick": m.machine_tick, "active": m.active_states(), "exception": m.is_err(),
            "history": h.size if h is not None else 0, "records": h.last_seq if h is not None else 0,
            "last_error": errs[-1] if errs else None}
