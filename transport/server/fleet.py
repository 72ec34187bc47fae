"""Requests about many machines of an endpoint at once, for shells that drive a fleet (``arpc -d DIR``).

- ``group``: one mutation (``add``/``rm``/``set``) of many machines named by id, in one request. Each machine's
  mutation runs where a request of its own would: inline on the I/O thread when the machine is idle and quick
  (noted for the watchdog, so a slow one is demoted as in ``leader.py``, and the rest of the group goes on on the
  new I/O thread), else on its lane behind the requests already waiting there, with the lane's bound. A slow
  machine holds only its own result: the others are applied meanwhile. The reply comes once every machine is
  done: a result per machine (in the order of the ids), and an error body for each that failed.
- ``watch``: a session-wide subscription to the transitions of all the endpoint's machines (or of some ids),
  without a mirror per machine: compact records (``[id, time before, time after, wall ms, type, called, args]``)
  in ``wrec`` pushes, gathered once per batch of the I/O thread. Bounded: at most ``MAX_QUEUE`` records wait for
  the I/O thread, and a push that would take a session past ``MAX_BACKLOG`` bytes not yet taken is dropped; the
  session's next push that goes out says how many records it missed (``d``). A push also carries the state names
  of the machines whose records the session gets for the first time (``names``: each schema's list once, ``m``: id
  -> its index), so a shell can show them without asking for a listing. Machines exposed after the watch began are
  watched too (``exposed``), and a machine removed and exposed again under its id is watched as the new one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any

from machine import Machine, SchemaError, StateError, Tracer, Transition, declared_args
from machine.history import SOURCE

from .. import protocol as P
from ..errors import TransportError
from ..remote import served_busy
from .dispatch import MAX_LANE, SLOW_HOLD
from .leader import SLOW, Demoted, own_queued_ns
from .loop import InlineRun
from .pushes import MAX_BACKLOG
from .sessions import Session

if TYPE_CHECKING:
    from .dispatch import Dispatcher

GROUP, WATCH, UNWATCH, WREC, MAX_GROUP = P.GROUP, P.WATCH, P.UNWATCH, P.WREC, P.MAX_GROUP
KINDS = frozenset({GROUP, WATCH, UNWATCH})
GROUP_REPLIES = 16  # group replies kept per session, for retries of a request already answered
GROUP_REPLY_BYTES = 1024 * 1024  # and their bytes at most (the newest one is always kept)
MAX_QUEUE = 100_000  # transition records waiting for the I/O thread; past it they are dropped (and counted)
PUSH_RECORDS = 5_000  # records in one wrec push (well under MAX_ITEMS)
RETRY = 0.2  # seconds between two tries to tell a session that missed records, while nothing else is pushed
_KINDS = {P.ADD: "add", P.REMOVE: "remove", P.SET: "set"}


def err_body(exc: BaseException, mach_id: str) -> dict[str, Any]:
    """An exception as the body of an error reply (what ``calls._error_from`` reads back)."""
    if isinstance(exc, StateError):
        return {"type": "StateError", "msg": P.clip(str(exc), 1000), "code": P.UNKNOWN_STATE,
                "states": [P.clip(s) for s in exc.states[:20]], "machine": mach_id}
    if isinstance(exc, SchemaError):
        return {"type": "SchemaError", "msg": P.clip(str(exc), 1000), "code": P.INVALID_PARAMS}
    if isinstance(exc, TransportError):
        return {"type": "TransportError", "msg": P.clip(str(exc), 1000), "code": exc.code}
    return {"type": "TransportError", "msg": P.clip(f"{type(exc).__name__}: {exc}", 1000), "code": P.INTERNAL}


class _Group:
    """One group request in progress."""

    __slots__ = ("sess", "seq", "name", "states", "args", "ids", "results", "errors", "left", "scanned")

    def __init__(self, sess: Session, seq: int, name: str, states: list[str], args: dict[str, Any] | None,
                 ids: list[str]) -> None:
        self.sess, self.seq, self.name, self.states, self.args, self.ids = sess, seq, name, states, args, ids
        self.results: list[int] = [-1] * len(ids)  # -1: failed (its error in errors)
        self.errors: dict[str, dict[str, Any]] = {}
        self.left = 0  # mutations handed off (to a lane, or a demoted run) and not back yet
        self.scanned = False  # every id has been looked at

    def set(self, i: int, r: int | BaseException) -> None:
        if isinstance(r, BaseException):
            self.errors[self.ids[i]] = err_body(r, self.ids[i])
        else:
            self.results[i] = r


class _Watch:
    """A session's watch: its selection (None: every machine) and the records it missed since its last push."""

    __slots__ = ("sess", "ids", "args", "dropped", "named")

    def __init__(self, sess: Session, ids: frozenset[str] | None, args: bool) -> None:
        self.sess, self.ids, self.args = sess, ids, args
        self.dropped = 0
        self.named: set[str] = set()  # machines whose state names this session was sent

    def selects(self, mach_id: str) -> bool:
        return self.ids is None or mach_id in self.ids


class _Feed(Tracer):
    """Bound to a served machine while some session watches: one record per accepted transition."""

    def __init__(self, fleet: Fleet, mach_id: str) -> None:
        self.fleet = fleet
        self.mach_id = mach_id

    def transition_end(self, tx: Transition) -> None:
        if tx.is_check or not tx.is_accepted:
            return
        before, after = tx.time_before, tx.time_after
        if before == after:
            return
        m = tx.mutation
        args = P.sanitize(m.args) if m.args else None
        self.fleet.feed([self.mach_id, list(before), list(after), int(time.time() * 1000), str(m.type),
                         list(m.called), args])

    def schema_change(self, mach: Machine, old_schema: dict[str, Any]) -> None:
        self.fleet.loop.post(lambda: self.fleet.renamed(self.mach_id))


class Fleet:
    """The ``group``, ``watch`` and ``unwatch`` requests of one endpoint (on its I/O thread, but ``feed``)."""

    def __init__(self, d: Dispatcher) -> None:
        self.d = d
        self.loop = d.loop
        self.machs = d.machs
        self.running: dict[tuple[bytes, int], _Group] = {}  # group requests not answered yet
        self.inline: dict[int, tuple[_Group, int]] = {}  # ticket -> the group and index of a run inline
        self.adopted: dict[int, tuple[_Group, int, Any]] = {}  # demoted runs: group, index, lane
        self.watches: dict[bytes, _Watch] = {}
        self.feeds: dict[str, tuple[Machine, _Feed]] = {}
        self.queue: deque[list[Any]] = deque()
        self.lost = 0  # records dropped at MAX_QUEUE since the last drain (any thread adds, the drain takes)
        self.draining = False  # a drain is posted and not begun
        self._lock = threading.Lock()  # the queue's bound and lost count, against feeding threads
        self.timer: threading.Timer | None = None  # a drain to come, for a session told what it missed

    def request(self, sess: Session, kind: str, seq: int, mach_id: str | None, body: Any, first: bool) -> None:
        if kind == GROUP:
            self._group(sess, seq, body, first)
        elif kind == WATCH:
            self._watch(sess, seq, body)
        else:
            self._unwatch(sess, seq)

    # ------------------------------------------------------------------ group

    def _group(self, sess: Session, seq: int, body: Any, first: bool) -> None:
        if sess.readonly:
            raise TransportError(f"no access: client {sess.client_id} is read-only", code=P.NO_ACCESS)
        key = (sess.identity, seq)
        if seq and not first:
            # a retry: answered once, never applied twice
            if key in self.running:
                return  # its reply goes out when the last machine is done
            kept = sess.group_replies
            frame = kept.get(seq) if kept is not None else None
            if frame is not None:
                self.loop.send(sess, frame)
                return
            if sess.seqs.forgotten(seq):
                raise TransportError(f"request {seq} is older than this session can tell apart; not applied",
                                     code=P.STALE_SEQ)
            raise TransportError(f"request {seq} was applied already; its result is no longer kept",
                                 code=P.DUPLICATE)
        if type(body) is not dict:
            raise TransportError("group takes {k, s, a?, ids}", code=P.INVALID_PARAMS)
        name = _KINDS.get(body.get("k"))  # type: ignore[arg-type]
        if name is None:
            raise TransportError("group: k must be add, rm or set", code=P.INVALID_PARAMS)
        states = P.check_names(body.get("s"))
        if not states and name != "set":
            raise ValueError("states must not be empty")
        args = P.check_args(body.get("a"))
        if args is not None and P.packed_size(args) > P.MAX_ARGS_BYTES:
            raise TransportError(f"args larger than {P.MAX_ARGS_BYTES} bytes", code=P.LIMIT)
        ids = body.get("ids")
        if type(ids) is not list or not all(type(i) is str for i in ids):
            raise ValueError("ids must be a list of machine ids")
        if len(ids) > MAX_GROUP:
            raise TransportError(f"more than {MAX_GROUP} machines in one group request", code=P.LIMIT)
        g = _Group(sess, seq, name, states, args, list(dict.fromkeys(ids)))  # each machine once
        if seq:
            self.running[key] = g
        self._run(g, 0)

    def _apply(self, g: _Group, m: Machine) -> int:
        """On a lane's thread (inline runs set the source once for the whole group: see ``_run``)."""
        token = SOURCE.set(g.sess.source)  # the history names the session, as for a mutation of its own
        try:
            return int(getattr(m, g.name)(*g.states, args=g.args))
        finally:
            SOURCE.reset(token)

    def _run(self, g: _Group, start: int) -> None:
        """Apply the group's mutation to its machines from ``start`` on (on the I/O thread)."""
        token = SOURCE.set(g.sess.source)  # the history names the session, as for a mutation of its own
        try:
            self._run_inline(g, start)
        finally:
            SOURCE.reset(token)
        g.scanned = True
        self._finish(g)

    def _run_inline(self, g: _Group, start: int) -> None:
        d, loop, machs = self.d, self.loop, self.machs
        ids, name, states, args = g.ids, g.name, g.states, g.args
        queued = own_queued_ns()  # this thread's wait for a CPU so far: a preempted run is not a slow one
        for i in range(start, len(ids)):
            mid = ids[i]
            m = machs.get(mid)
            if m is None or m.disposed:
                g.errors[mid] = {"type": "TransportError", "msg": f"unknown machine: {P.clip(mid)}",
                                 "code": P.UNKNOWN_MACHINE}
                continue
            lane = None if not d.lanes and not served_busy(m) else d._lane_for(m)
            if lane is not None:
                if lane.outstanding >= MAX_LANE:
                    g.set(i, TransportError(f"machine {mid} has {lane.outstanding} requests waiting; try again "
                                            "later", code=P.LIMIT))
                    continue
                g.left += 1
                d._hand_off(g.sess, 0, lane, partial(self._apply, g, m), partial(self._handed_back, g, i),
                            bounded=False)
                continue
            # inline, noted for the watchdog as dispatch.mutate does: a slow one is demoted, and the new I/O
            # thread adopts it and goes on with the rest of the group
            ticket = next(loop.tickets)
            self.inline[ticket] = (g, i)
            t0 = perf_counter()
            loop.inline[ticket] = (t0, g.sess, 0, m, GROUP)
            r: int | BaseException
            try:
                r = int(getattr(m, name)(*states, args=args))
            except Exception as exc:
                r = exc
            if loop.inline.pop(ticket, None) is None:
                loop.post(partial(self._adopted_done, ticket, r))
                raise Demoted
            del self.inline[ticket]
            took = perf_counter() - t0
            if took > SLOW:
                now_queued = own_queued_ns()
                if now_queued is not None and queued is not None:
                    took -= (now_queued - queued) / 1e9  # (the wait since the last look: a run after it gets all)
                queued = now_queued
                if took > SLOW:
                    d._lane(m).slow_until = time.monotonic() + SLOW_HOLD
            g.set(i, r)

    def adopt(self, ticket: int, run: InlineRun) -> None:
        """A new I/O thread's first step for a group's run demoted: the machine's later requests wait behind it
        (as ``Dispatcher.adopt``), and the rest of the group goes on."""
        g, i = self.inline.pop(ticket)
        lane = self.d._lane(run[3])
        self.d._enter(g.sess, 0, lane)
        self.d.workers.hold(lane)
        self.adopted[ticket] = (g, i, lane)
        g.left += 1
        self.loop.post(lambda: self._run(g, i + 1))

    def _adopted_done(self, ticket: int, r: int | BaseException) -> None:
        g, i, lane = self.adopted.pop(ticket)
        self.d.workers.release(lane)
        self.d._leave(g.sess, 0, lane, True)
        self._handed_back(g, i, r)

    def _handed_back(self, g: _Group, i: int, r: int | BaseException) -> None:
        g.left -= 1
        g.set(i, r)
        self._finish(g)

    def _finish(self, g: _Group) -> None:
        if g.left or not g.scanned:
            return
        sess = g.sess
        key = (sess.identity, g.seq)
        self.running.pop(key, None)
        if not g.seq:
            return
        # the session's own mirrors of these machines first (pushes go out in order), so they are current when
        # the call returns, as after a mutation of its own
        if sess.subs:
            flush_one = self.d.pushes.flush_one
            for mid in g.ids:
                if mid in sess.subs:
                    flush_one(sess, mid)
        frame = P.pack(P.OK, g.seq, None, {"r": g.results, "e": g.errors})
        self._keep(sess, g.seq, frame)
        self.loop.send(sess, frame)  # the session may be gone: the client still waits for it

    def _keep(self, sess: Session, seq: int, frame: bytes) -> None:
        """Keep a group reply for a retry: the session's last GROUP_REPLIES, at most GROUP_REPLY_BYTES of them
        (kept on the session: other sessions' groups never push them out, and they end with it)."""
        replies = sess.group_replies
        if replies is None:
            replies = sess.group_replies = OrderedDict()
        replies[seq] = frame
        sess.group_bytes += len(frame)
        while len(replies) > 1 and (len(replies) > GROUP_REPLIES or sess.group_bytes > GROUP_REPLY_BYTES):
            sess.group_bytes -= len(replies.popitem(last=False)[1])

    # ------------------------------------------------------------------ a compact listing

    def listing(self, sess: Session, seq: int) -> None:
        """``machs`` with ``{c: true}``: the listing as columns, each parent, tags list and schema (names and
        declared args) sent once (a daemon's 1000 machines of one schema: one list of names, not 1000)."""
        ids: list[str] = []
        times: list[list[int]] = []
        pidx: list[int] = []
        tidx: list[int] = []
        sidx: list[int] = []
        parents: dict[Any, int] = {}
        tags: dict[tuple[str, ...], int] = {}
        schemas: dict[tuple[Any, ...], int] = {}
        names_l: list[list[str]] = []
        args_l: list[Any] = []
        for m in self.d.ep.machines:
            if m.disposed:
                continue
            names = m.state_names
            args = declared_args(m)
            key: tuple[Any, ...] = tuple(names)
            if args:
                key = (key, tuple((k, a.type, a.help) for k, a in args.items()))
            k = schemas.get(key)
            if k is None:
                k = schemas[key] = len(names_l)
                names_l.append(names)
                args_l.append(P.args_to_wire(args) if args else None)
            ids.append(m.id)
            times.append(m.time())
            sidx.append(k)
            pidx.append(parents.setdefault(m.parent_id, len(parents)))
            tidx.append(tags.setdefault(tuple(m.tags), len(tags)))
        self.loop.send(sess, P.pack(P.OK, seq, None, {
            "ids": ids, "t": times, "s": sidx, "names": names_l, "args": args_l, "p": pidx, "parents": list(parents),
            "g": tidx, "tags": [list(t) for t in tags]}))

    # ------------------------------------------------------------------ watch

    def _watch(self, sess: Session, seq: int, body: Any) -> None:
        b = body if type(body) is dict else {}
        ids = b.get("ids")
        if ids is not None and (type(ids) is not list or not all(type(i) is str for i in ids)):
            raise ValueError("ids must be nil or a list of machine ids")
        sel = None if ids is None else frozenset(ids)
        w = _Watch(sess, sel, bool(b.get("a", True)))
        old = self.watches.get(sess.identity)
        if old is not None and old.sess is sess:  # a watch replaced: what it missed is still told, names not resent
            w.dropped, w.named = old.dropped, old.named
        self.watches[sess.identity] = w
        machs = self.machs
        for m in list(machs.values()) if sel is None else [machs[i] for i in sel if i in machs]:
            self._bind(m)
        unknown = [] if sel is None else sorted(i for i in sel if i not in machs)
        if seq:  # the ids it does not serve (at most 100 named)
            self.loop.send(sess, P.pack(P.OK, seq, None, {"unknown": [P.clip(i) for i in unknown[:100]],
                                                          "unknown_count": len(unknown)}))

    def _bind(self, m: Machine) -> None:
        """A feed on ``m`` (the machine served now under its id: a feed left on one removed since is moved)."""
        held = self.feeds.get(m.id)
        if held is not None:
            if held[0] is m:
                return
            self._unbind(m.id)
        if not m.disposed:
            feed = _Feed(self, m.id)
            m.bind_tracer(feed)
            self.feeds[m.id] = (m, feed)

    def _unbind(self, mach_id: str) -> None:
        m, feed = self.feeds.pop(mach_id)
        try:
            m.detach_tracer(feed)
        except Exception:  # noqa: BLE001 - a disposed machine
            pass

    def exposed(self, m: Machine) -> None:
        """On the I/O thread, after ``Endpoint.add``: a watch that selects the machine watches it from now on."""
        if self.machs.get(m.id) is m and any(w.selects(m.id) for w in self.watches.values()):
            self._bind(m)

    def removed(self, mach_id: str) -> None:
        """On the I/O thread, after ``Endpoint.remove``: no feed stays on a machine no longer served."""
        held = self.feeds.get(mach_id)
        if held is not None and self.machs.get(mach_id) is not held[0]:
            self._unbind(mach_id)
        for w in self.watches.values():
            w.named.discard(mach_id)  # (one exposed again under the id may have other states)

    def renamed(self, mach_id: str) -> None:
        """A watched machine's schema changed: its names go again with its next records."""
        for w in self.watches.values():
            w.named.discard(mach_id)

    def _unwatch(self, sess: Session, seq: int) -> None:
        if self.watches.pop(sess.identity, None) is not None and not self.watches:
            self._detach()
        if seq:
            self.loop.send(sess, P.pack(P.OK, seq, None, {}))

    def stop(self) -> None:
        """The endpoint stops: its watches end, no tracer of theirs stays on a machine."""
        self.watches.clear()
        self._detach()
        if self.timer is not None:
            self.timer.cancel()

    def _detach(self) -> None:
        for mid in list(self.feeds):
            self._unbind(mid)

    def feed(self, rec: list[Any]) -> None:
        """A transition's record, from the thread that ran it: queued for the I/O thread (bounded)."""
        if len(self.queue) >= MAX_QUEUE:
            with self._lock:
                self.lost += 1
            return
        self.queue.append(rec)
        if not self.draining:
            # set before the post: a record queued after the drain took the queue finds it false and posts again
            self.draining = True
            self.loop.post(self._drain)

    def _drain(self) -> None:
        """On the I/O thread: the queued records to each watching session, one push (or a few) each."""
        self.draining = False
        q = self.queue
        recs = [q.popleft() for _ in range(len(q))]
        with self._lock:
            lost, self.lost = self.lost, 0
        machs, feeds = self.machs, self.feeds
        if any(r[0] not in machs for r in recs):  # removed from the endpoint (or disposed) since: not watched
            recs = [r for r in recs if r[0] in machs]
            for mid in [mid for mid in feeds if mid not in machs]:
                self._unbind(mid)
        sessions = self.loop.sessions
        for identity, w in list(self.watches.items()):
            if sessions.get(identity) is not w.sess:  # the session ended: its watch with it
                del self.watches[identity]
                continue
            mine = recs if w.ids is None else [r for r in recs if r[0] in w.ids]
            if not w.args:
                mine = [r[:6] + [None] for r in mine]
            w.dropped += lost
            for k in range(0, max(len(mine), 1), PUSH_RECORDS):
                self._push(w, mine[k:k + PUSH_RECORDS], machs)
        if not self.watches and self.feeds:
            self._detach()
        elif any(w.dropped for w in self.watches.values()):
            self._drain_later()

    def _drain_later(self) -> None:
        """A session that missed records is told once it reads again, also when no transition comes: a drain
        about every RETRY seconds until then (a timer only while some session has missed records)."""
        if self.timer is not None or self.loop.stopped:
            return
        loop = self.loop

        def due() -> None:
            self.timer = None
            loop.post(self._drain)

        self.timer = threading.Timer(RETRY, due)
        self.timer.daemon = True
        self.timer.start()

    def _push(self, w: _Watch, recs: list[list[Any]], machs: dict[str, Machine]) -> None:
        if not recs and not w.dropped:
            return
        sess = w.sess
        body: dict[str, Any] = {"r": recs, "d": w.dropped}
        new = {r[0] for r in recs if r[0] not in w.named}
        if new:  # the state names of machines this session has no records of yet: each schema's list once
            schemas: dict[tuple[str, ...], int] = {}
            idx: dict[str, int] = {}
            for mid in new:
                m = machs.get(mid)
                if m is not None:
                    idx[mid] = schemas.setdefault(tuple(m.state_names), len(schemas))
            body["names"], body["m"] = [list(n) for n in schemas], idx
        frame = P.pack(WREC, 0, None, body)
        if sess.backlog.pending() + len(frame) <= MAX_BACKLOG and self.loop.send_tracked(sess, frame):
            w.dropped = 0
            w.named |= new
        else:
            w.dropped += len(recs)  # the client does not read: never more than MAX_BACKLOG held for it
