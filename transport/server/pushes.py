"""Pushes: changes of served machines go to every subscribed session as clock diffs (with mutation records for
watchers), coalesced while the I/O thread is busy; schema changes as a fresh export."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from machine import Machine, Tracer, Transition

from .. import protocol as P
from ..remote import served_clock
from .sessions import Session, Sub

if TYPE_CHECKING:
    from .endpoint import Endpoint
    from .loop import ServerLoop

MAX_MUTS = 64  # mutations remembered per machine between two pushes
MAX_PUSH_MUTS = 4 * 1024 * 1024  # bytes of mutation records in one push (the oldest are dropped past it)
MAX_BACKLOG = 16 * 1024 * 1024  # bytes of pushes with records a client has not taken yet, per session
LATER_MAX = 0.05  # seconds a push to watchers may wait for the record of its last mutation
# a last-sent clock that matches no real one: the next push to that mirror fails its checksum, so it syncs
_STALE: list[int] = []


class ChangeRecorder(Tracer):
    """Bound to each served machine: records each accepted transition's mutation (when a watcher wants them)
    and marks the machine dirty, so the endpoint pushes the change."""

    def __init__(self, ep: Endpoint, mach: Machine) -> None:
        self.ep = ep
        self.pushes = ep._pushes
        self.mach_id = mach.id

    def transition_end(self, tx: Transition) -> None:
        m = tx.mutation
        if m.is_check:
            return  # a dry run (can_add/can_remove) changes nothing: watchers must not see it as a mutation
        pushes = self.pushes
        mach_id = self.mach_id
        try:
            if pushes.want_muts and pushes.want_muts.get(mach_id) and tx.is_accepted:
                # the clock after this transition too: a watcher then sees each transition, not only their sum
                pushes.record(mach_id, [str(m.type), list(m.called), P.sanitize(m.args or {}),
                                        list(tx.time_after)])
        finally:
            # whatever happened above: an applied change is always pushed (mark_dirty's test first, in place: on
            # a served machine's every transition, and most find it marked or unmarked by the reply's diff)
            if mach_id not in pushes.dirty:
                pushes.mark_dirty(mach_id)

    def mirror_update(self, update: dict[str, Any]) -> None:
        pushes = self.pushes
        if pushes.want_muts.get(self.mach_id) and update["mutations"]:
            for m in update["mutations"]:  # a mirror's update is one upstream transition, or a sum of them
                pushes.record(self.mach_id, [m["type"], m["called"], m["args"], update["time"]])
        pushes.mark_dirty(self.mach_id)

    def schema_change(self, mach: Machine, old_schema: dict[str, Any]) -> None:
        self.ep._post(lambda: self.pushes.push_schema(mach))

    def machine_dispose(self, mach_id: str) -> None:
        self.ep._post(lambda: self.ep._drop_machine(mach_id))


class ReplicaRecorder(Tracer):
    """``ChangeRecorder`` for a served mirror (a replica): its changes arrive as ``mirror_update``s from its
    ``on_update``, so the transitions replayed to its tracers are not recorded a second time."""

    def __init__(self, ep: Endpoint, mach: Any) -> None:
        self.rec = ChangeRecorder(ep, mach)

    def mirror_update(self, update: dict[str, Any]) -> None:
        self.rec.mirror_update(update)

    def schema_change(self, mach: Machine, old_schema: dict[str, Any]) -> None:
        self.rec.schema_change(mach, old_schema)

    def machine_dispose(self, mach_id: str) -> None:
        self.rec.machine_dispose(mach_id)


def export(m: Machine, t: list[int], q: int, mt: int) -> dict[str, Any]:
    """A machine as a ``sub`` reply or a ``schema`` push carries it."""
    return {"id": m.id, "names": m.state_names, "schema": P.schema_to_wire(m.schema), "time": t,
            "qtick": q, "mtick": mt, "parent_id": m.parent_id, "tags": m.tags}


class Pushes:
    """What the endpoint keeps to push changes: dirty machines, the mutation records watchers want, and the
    subscriptions' count of watchers per machine. Used on the I/O thread, except ``record``/``mark_dirty``."""

    def __init__(self, loop: ServerLoop, machs: dict[str, Machine]) -> None:
        self.loop = loop
        self.machs = machs
        self.dirty: set[str] = set()
        self.retry: set[str] = set()  # machines with a push that could not be delivered
        self.muts: dict[str, deque[list[Any]]] = {}
        self.want_muts: dict[str, int] = {}  # sessions subscribed with mutation records, per machine
        self.nsubs: dict[str, int] = {}  # sessions subscribed, per machine
        self.later: dict[str, float] = {}  # machines whose push waits for a mutation record -> since when
        self.held: dict[str, list[list[Any]]] = {}  # their records drained meanwhile, oldest first

    # ------------------------------------------------------------------ from machine threads

    def record(self, mach_id: str, rec: list[Any]) -> None:
        self.muts.setdefault(mach_id, deque(maxlen=MAX_MUTS)).append(rec)

    def mark_dirty(self, mach_id: str) -> None:
        if mach_id not in self.dirty:
            self.dirty.add(mach_id)
            if threading.get_ident() != self.loop.ident:
                self.loop.wake()  # the I/O thread flushes after each batch anyway

    # ------------------------------------------------------------------ subscriptions (I/O thread)

    def subscribe(self, sess: Session, m: Machine, muts: bool) -> dict[str, Any]:
        """Start (or restart) a session's mirror of ``m``; returns the export its mirror starts from."""
        old = sess.subs.get(m.id)
        if old is not None and old.muts:
            self.want_muts[m.id] -= 1
        if old is None:
            self.nsubs[m.id] = self.nsubs.get(m.id, 0) + 1
        t, q, mt = m.time(), m.queue_tick, m.machine_tick
        sess.subs[m.id] = Sub(t, q, mt, muts)
        if muts:
            self.want_muts[m.id] = self.want_muts.get(m.id, 0) + 1
        return export(m, t, q, mt)

    def unsubscribe(self, sess: Session, mach_id: str) -> None:
        sub = sess.subs.pop(mach_id, None)
        if sub is not None:
            left = self.nsubs[mach_id] - 1
            if left:
                self.nsubs[mach_id] = left
            else:
                del self.nsubs[mach_id]
            if sub.muts:
                self.want_muts[mach_id] -= 1
        sess.cancel_waiters(mach_id)

    def forget(self, mach_id: str) -> None:
        """Drop what was kept for a machine's watchers, once it is no longer served."""
        if mach_id not in self.machs:
            for d in (self.muts, self.held, self.later):
                d.pop(mach_id, None)

    def diff(self, sess: Session, m: Machine, mach_id: str | None = None) -> list[Any] | None:
        """The update that brings this session's mirror of ``m`` to now (None if it has no mirror); ``mach_id``:
        ``m.id``, when the caller has it."""
        if mach_id is None:
            mach_id = m.id
        sub = sess.subs.get(mach_id)
        if sub is None:
            return None
        if self.nsubs.get(mach_id) == 1 and not self.want_muts.get(mach_id):
            # this session is the machine's only mirror and this update brings it to now: no push is needed for
            # what it carries (the flush after the batch would find nothing to send). Unmarked before the clock is
            # read: a change made after the read marks the machine again (its mark_dirty follows its clock)
            self.dirty.discard(mach_id)
        t, q, mt = served_clock(m), m.queue_tick, m.machine_tick  # replaced, never changed in place
        old = sub.time
        idxs: list[int] = []
        deltas: list[int] = []
        if len(t) == len(old) and old is not t:
            # P.diff written in place: one pass, on every mutation reply (a machine has few states)
            for i, (a, b) in enumerate(zip(old, t)):  # noqa: B905  same length (checked)
                if a != b:
                    idxs.append(i)
                    deltas.append(b - a)
        upd = [idxs, deltas, q, mt, P.checksum(t, q, mt)]
        sub.time, sub.qtick, sub.mtick = t, q, mt
        return upd

    # ------------------------------------------------------------------ sending (I/O thread)

    def flush(self) -> None:
        """One push per session whose mirror of a dirty machine is behind."""
        dirty = self.dirty
        self.dirty = set()
        send, send_tracked = self.loop.send, self.loop.send_tracked
        for mach_id in dirty:
            m = self.machs.get(mach_id)
            if m is None or mach_id not in self.nsubs:  # gone, or no mirror to bring up to date
                self.later.pop(mach_id, None)
                self.held.pop(mach_id, None)
                if m is not None:
                    self.muts.pop(mach_id, None)  # recorded while it was watched: no mirror is behind them
                continue
            t = served_clock(m)  # replaced, never changed in place: a consistent snapshot without a copy
            q, mt = m.queue_tick, m.machine_tick
            if len(t) == 0:
                continue
            muts = self.held.pop(mach_id, None)
            muts_q = self.muts.get(mach_id)
            if muts_q:
                muts = muts or []
                while muts_q:  # popleft, not the deque itself: a machine thread may be appending to it
                    muts.append(muts_q.popleft())
                del muts[:-MAX_MUTS]
            if self.want_muts.get(mach_id) and (not muts or muts[-1][3] != t):
                # the clock shows a transition whose mutation is not recorded yet (the machine sets its clock,
                # then calls transition_end): push once it is, a moment later, so a watcher gets each transition
                # with its mutation. After LATER_MAX the push goes out anyway: a clock change with no mutation (a
                # sync), or a final handler slower than that (its record then comes too late and is not sent).
                now = time.monotonic()
                since = self.later.setdefault(mach_id, now)
                if now - since < LATER_MAX:
                    if muts:
                        self.held[mach_id] = muts  # the endpoint's own list: machine threads never touch it
                    continue
            self.later.pop(mach_id, None)
            csum = -1
            # mirrors that saw the same clock get the same bytes: encode each distinct update once
            frames: dict[tuple[int, bool], tuple[list[int], bytes]] = {}  # the list kept alive: its id is a key
            for sess in list(self.loop.sessions.values()):
                sub = sess.subs.get(mach_id)
                if sub is None or sub.time == t:
                    continue
                with_muts = bool(sub.muts and muts)
                key = (id(sub.time), with_muts)
                hit = frames.get(key)
                if hit is not None:
                    frame = hit[1]
                else:
                    if csum < 0:
                        csum = P.checksum(t, q, mt)
                    idxs, deltas = P.diff(sub.time, t) if len(t) == len(sub.time) else ([], [])
                    body: list[Any] = [idxs, deltas, q, mt, csum]
                    if with_muts:
                        body.append(muts)
                    frame = P.pack(P.CLK, 0, mach_id, body)
                    if with_muts and len(frame) > MAX_PUSH_MUTS:
                        muts = body[5] = _fit(body[5])
                        frame = P.pack(P.CLK, 0, mach_id, body)
                    frames[key] = (sub.time, frame)
                sub.time, sub.qtick, sub.mtick = t, q, mt
                if with_muts:
                    # records can be large: what a client has not taken yet is bounded in bytes. Past the bound
                    # nothing more is queued for it (its records are dropped) and its mirror will resync
                    ok = sess.backlog.pending() + len(frame) <= MAX_BACKLOG and send_tracked(sess, frame)
                else:
                    ok = send(sess, frame)
                if not ok:
                    # not delivered (the client is not reading): send it again later, as a full resync
                    sub.time = _STALE
                    self.retry.add(mach_id)

    def flush_one(self, sess: Session, mach_id: str) -> None:
        """Bring one session's mirror of one machine up to date now."""
        m = self.machs.get(mach_id)
        if m is None or mach_id not in sess.subs:
            return
        upd = self.diff(sess, m)
        if upd is not None and upd[0]:
            self.loop.send(sess, P.pack(P.CLK, 0, mach_id, upd))

    def push_schema(self, m: Machine) -> None:
        t, q, mt = m.time(), m.queue_tick, m.machine_tick
        for sess in list(self.loop.sessions.values()):
            sub = sess.subs.get(m.id)
            if sub is None:
                continue
            sub.time, sub.qtick, sub.mtick = t, q, mt
            self.loop.send(sess, P.pack(P.SCHEMA, 0, m.id, export(m, t, q, mt)))

    def due(self) -> bool:
        """Retry the undelivered pushes (on the sweep)."""
        if self.retry:
            self.dirty |= self.retry
            self.retry.clear()
        return bool(self.dirty)


def _fit(muts: list[list[Any]]) -> list[list[Any]]:
    """The newest records that fit in MAX_PUSH_MUTS bytes."""
    room = MAX_PUSH_MUTS - 1024
    keep = 0
    for rec in reversed(muts):
        room -= P.packed_size(rec)
        if room < 0:
            break
        keep += 1
    return muts[len(muts) - keep:]
