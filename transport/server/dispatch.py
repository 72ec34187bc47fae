"""Request dispatch: what each request kind does to the served machines and what it answers.

Threading. Requests are decoded, checked and answered on the endpoint's I/O thread. What may run handlers
(mutations, dry runs, ``when_args`` registration behind a mutation) runs either inline on the I/O thread or on the
machine's *lane* (``workers.py``): a FIFO per machine, run by a bounded pool of threads, one job of a lane at a time.

- Inline, the fast path: the machine is idle (``_processing`` is false: no thread runs its queue), has no lane
  with requests waiting, and its last transition run for a request was quick. No thread hand-off.
- On its lane: the machine is busy (another thread runs its queue), or a request for it already waits on the lane
  (so requests for one machine keep their order), or a transition run for a request took more than ``SLOW``
  (5 ms) in the last ``SLOW_HOLD`` seconds and was not followed by ``QUICK_STREAK`` quick ones. The pool thread
  applies it; the result is posted back and the reply (with the session's mirror update) is sent by the I/O
  thread, in the order the requests came. A ``sync`` waits there behind the same client's earlier requests.
- A retry of a seq still on a lane is not answered twice: its one reply goes out when it is applied.
- Back-pressure: past ``MAX_LANE`` requests waiting on a lane, the machine's requests answer ``limit``; an
  ``add_ns`` (no reply to carry it: its error is sent with seq 0) only past ``MAX_LANE_NS``.
- An inline run that outlasts ``SLOW`` does not hold the I/O thread: the watchdog makes another thread the I/O
  thread, which adopts the run onto the machine's lane (``adopt``: later requests for the machine wait behind it,
  its lane's jobs wait for it); the thread running it posts its result when it returns (``leader.py``). So the
  I/O thread is held by user code for about ``SLOW`` (up to twice that), and a quick machine pays no hand-off.
- ``when_args`` registrations waiting on a lane count against the session's limits from the moment they are
  accepted (``Session.reserve``), so a burst cannot overshoot them.
- Reads (``machs``, ``sub``, ``sync``, ``info``, ``hist``, ``ping``, ``hello``) never wait on a machine: they read
  its clock, which a transition replaces whole (never in place) under the machine's lock only for that swap.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import TYPE_CHECKING, Any, NoReturn

from machine import Ctx, Machine, SchemaError, StateError, Waiter, declared_args
from machine.history import SOURCE
from machine.log import LazyLogger
from machine.mutation import MutationType
from machine.mutation_queue import check

from .. import protocol as P
from .. import tracecontext
from ..errors import RemoteError, TransportError
from ..remote import served_busy
from .inspection import Inspection
from .leader import SLOW, Demoted
from .loop import InlineRun
from .nsbatch import NsBatches
from .sessions import Session
from .workers import Lane, Workers

if TYPE_CHECKING:
    from .endpoint import Endpoint

log = LazyLogger("transport.server")

MAX_WHEN_ARGS = 256  # pending server-side waiters per client session
_BUSY = -1  # what the core's check returns when the machine stayed busy past its wait
MAX_CHECKS = 64  # dry runs (can) of one session in progress at once
SLOW_HOLD = 2.0  # seconds a machine counts as slow after its last slow transition
QUICK_STREAK = 50  # quick transitions in a row on a lane that end a machine's slow time early
MAX_LANE = 1000  # requests of all clients waiting on one machine's lane; past it they answer limit
MAX_LANE_NS = 20_000  # the same for a notification (add_ns): it has no reply to say limit, so it gets more room
CHECK_THREADS = 4  # dry runs of different clients in parallel (each may wait up to 1 s for a busy machine)

_Handler = Callable[[Session, int, "str | None", dict[str, Any]], None]


class Dispatcher:
    """Handles one decoded request of a session and sends its reply; errors become ``err`` replies."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.loop = ep._loop
        self.pushes = ep._pushes
        self.machs = ep._machs
        self.checks: ThreadPoolExecutor | None = None  # made on the first dry run
        self.lanes: dict[str, Lane] = {}  # machines that are busy, slow, or have requests waiting (I/O thread)
        self.adopted: dict[int, tuple[Session, int, Machine, str, Lane]] = {}  # demoted runs not yet done
        self.workers = Workers(f"am-endpoint-lane {ep.address}")
        self._handlers: dict[str, _Handler] = {
            P.PING: self._ping, P.HELLO: self._hello, P.MACHS: self._machs, P.SUB: self._sub,
            P.UNSUB: self._unsub, P.SYNC: self._sync, P.CAN: self._can, P.WHEN_ARGS: self._when_args,
            P.WHEN_ARGS_CANCEL: self._when_args_cancel, P.BYE: self._bye}
        self.ns = NsBatches(self)  # ns_many: batches of add_ns
        look = Inspection(self)
        self._handlers.update({P.HIST: look.hist, P.UNFOLLOW: look.unfollow, P.INFO: look.info})
        from .fleet import KINDS, Fleet  # (it imports this module's bounds)

        self.fleet, self._fleet_kinds = Fleet(self), KINDS

    def request(self, sess: Session, kind: str, seq: int, mach_id: str | None, body: Any, first: bool) -> None:
        """Handle one request (``first``: its seq was never seen in this session)."""
        try:
            if kind in P.MUTATING:
                self.mutate(sess, kind, seq, mach_id, body, first)
                return
            if kind in self._fleet_kinds:  # many machines at once (fleet.py)
                self.fleet.request(sess, kind, seq, mach_id, body, first)
                return
            if kind == P.NS_MANY:
                self.ns.handle(sess, seq, body)
                return
            handler = self._handlers.get(kind)
            if handler is None:
                raise TransportError(f"unknown message kind: {P.clip(kind, 64)}", code=P.INVALID_PARAMS)
            handler(sess, seq, mach_id, _body(body))
        except Exception as exc:
            self._fail(sess.identity, seq, mach_id, kind, exc)

    def _fail(self, identity: bytes, seq: int, mach_id: str | None, kind: str, exc: Exception) -> None:
        """Answer a request that raised ``exc`` with the error reply its type calls for."""
        loop = self.loop
        if isinstance(exc, StateError):
            # the names as sent: clipped, like every value from a peer that goes into a reply or a log
            loop.reply_err(identity, seq, mach_id, P.UNKNOWN_STATE, str(exc), "StateError",
                           {"states": [P.clip(s) for s in exc.states[:20]], "machine": exc.machine_id})
        elif isinstance(exc, SchemaError):
            loop.reply_err(identity, seq, mach_id, P.INVALID_PARAMS, str(exc), "SchemaError")
        elif isinstance(exc, TransportError):
            if exc.code == P.INVALID_PARAMS:
                log.warning("invalid %s request from %r: %s", P.clip(kind, 32), identity[:32], P.clip(str(exc)))
            loop.reply_err(identity, seq, mach_id, exc.code, str(exc))
        elif isinstance(exc, (ValueError, TypeError, KeyError)):
            log.warning("invalid %s request from %r: %s", P.clip(kind, 32), identity[:32], P.clip(str(exc)))
            loop.reply_err(identity, seq, mach_id, P.INVALID_PARAMS, f"{P.clip(kind, 32)}: {exc}")
        else:
            # the traceback's frames, not its last line: the exception's text may hold what the peer sent
            log.error("request %s from %r failed: %s: %s\n%s", P.clip(kind, 32), identity[:32],
                      type(exc).__name__, P.clip(str(exc)), "".join(traceback.format_tb(exc.__traceback__)))
            loop.reply_err(identity, seq, mach_id, P.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _mach(self, mach_id: str | None) -> Machine:
        if mach_id is None:
            raise TransportError("this request needs a machine id", code=P.INVALID_PARAMS)
        m = self.machs.get(mach_id)
        if m is None or m.disposed:
            raise TransportError(f"unknown machine: {mach_id}", code=P.UNKNOWN_MACHINE)
        return m

    def _ok(self, sess: Session, seq: int, mach_id: str | None, body: Any) -> None:
        if seq:
            self.loop.send(sess, P.pack(P.OK, seq, mach_id, body))

    # ------------------------------------------------------------------ mutations

    def mutate(self, sess: Session, kind: str, seq: int, mach_id: str | None, body: Any, first: bool) -> None:
        """``add``/``rm``/``set``/``add_ns``/``add_err``: apply once, answer with the result and the session's
        mirror update; inline when the machine is idle and quick, else on its lane (see the module doc)."""
        b = body if type(body) is dict else _body(body)
        if sess.readonly:
            raise TransportError(f"no access: client {sess.client_id} is read-only", code=P.NO_ACCESS)
        m = self.machs.get(mach_id) if mach_id is not None else None  # (_mach, inlined: once per mutation)
        if m is None or m.disposed:
            m = self._mach(mach_id)
        if not first:
            # a retried request: answer again, never apply twice
            if seq in sess.inflight:
                return  # handed off and not applied yet: its reply goes out when it is
            cached = sess.replies.get(seq)
            if cached is None:
                if sess.seqs.forgotten(seq):
                    raise TransportError(f"request {seq} is older than this session can tell apart; not applied",
                                         code=P.STALE_SEQ)
                raise TransportError(f"request {seq} was applied already; its result is no longer kept",
                                     code=P.DUPLICATE)
            self._ok(sess, seq, m.id, [cached, self.pushes.diff(sess, m)])
            return
        # a plain add/rm/set/add_ns (no trace context: the common case) is called inline without a closure
        fn, states, args = _plain_call(kind, m, b) if kind in _PLAIN and "tc" not in b else (None, [], None)
        apply = None if fn is not None else _applier(sess, kind, m, b)
        # no lane for any machine and this one idle: the fast path, without a call (the common case)
        lane = None if not self.lanes and not served_busy(m) else self._lane_for(m)
        if lane is None:
            # inline, noted for the watchdog first: if it is still running after SLOW, another thread takes over
            # the sockets and this one, when the transition returns, only posts its result (leader.py)
            loop = self.loop
            runs = loop.inline
            ticket = next(loop.tickets)
            t0 = perf_counter()
            runs[ticket] = (t0, sess, seq, m, kind)
            token = SOURCE.set(sess.source)  # the history names the session
            try:
                r = apply() if apply is not None else int(fn(*states, args=args))  # type: ignore[misc]
            except Exception as exc:
                if runs.pop(ticket, None) is None:
                    self._demoted(ticket, exc)
                raise
            finally:
                SOURCE.reset(token)
            if runs.pop(ticket, None) is None:
                self._demoted(ticket, r)
            if perf_counter() - t0 > SLOW:
                self.mark_slow(m)
            if seq:  # (_answer, in place; add_ns: no reply, the change reaches the client as a push)
                sess.remember(seq, r)
                loop.send(sess, P.pack(P.OK, seq, mach_id, [r, self.pushes.diff(sess, m, mach_id)]))
            return
        if apply is None:
            apply = _applier(sess, kind, m, b)
        self._hand_off(sess, seq, lane, apply, self._answerer(sess, seq, m, kind))

    def mark_slow(self, m: Machine) -> None:
        """A transition run inline took more than SLOW: the machine's next requests go to its lane for a while."""
        self._lane(m).slow_until = time.monotonic() + SLOW_HOLD

    def resume(self) -> None:
        """A new leader's, after adopting the runs demoted: the rest of a batch one of them was part of."""
        self.ns.resume()

    def _answerer(self, sess: Session, seq: int, m: Machine, kind: str) -> Callable[[int | Exception], None]:
        """What answers a mutation applied on another thread, on the I/O thread."""
        identity = sess.identity

        def answer(r: int | Exception) -> None:
            if isinstance(r, Exception):
                self._fail(identity, seq, m.id, kind, r)
            else:
                self._answer(sess, seq, m, r)  # the session may be gone: the client still waits for it

        return answer

    def _answer(self, sess: Session, seq: int, m: Machine, r: int) -> None:
        if not seq:
            return  # add_ns: no reply; the change reaches the client as a push
        sess.remember(seq, r)
        self._ok(sess, seq, m.id, [r, self.pushes.diff(sess, m)])

    # ------------------------------------------------------------------ an inline run left to its thread

    def _demoted(self, ticket: int, result: int | Exception) -> NoReturn:
        """On a thread that is no longer the I/O thread: post the result, leave the loop."""
        self.loop.post(lambda: self._adopted_done(ticket, result))
        raise Demoted

    def adopt(self, ticket: int, run: InlineRun) -> None:
        """A new leader's first step for a run demoted: it waits on its machine's lane like a handed-off
        request (later requests for the machine queue behind it), and the lane's jobs wait until it is done."""
        _, sess, seq, m, kind = run
        if kind == P.GROUP:
            self.fleet.adopt(ticket, run)
            return
        lane = self._lane(m)
        self._enter(sess, seq, lane)
        self.workers.hold(lane)
        self.adopted[ticket] = (sess, seq, m, kind, lane)

    def _adopted_done(self, ticket: int, result: int | Exception) -> None:
        sess, seq, m, kind, lane = self.adopted.pop(ticket)
        self.workers.release(lane)
        self._leave(sess, seq, lane, True)
        self._answerer(sess, seq, m, kind)(result)

    # ------------------------------------------------------------------ lanes: where a busy machine's requests wait

    def _lane_for(self, m: Machine) -> Lane | None:
        """The lane a request for ``m`` goes to, or None to run it inline on the I/O thread."""
        lane = self.lanes.get(m.id)
        if lane is None or lane.mach is not m:
            if not served_busy(m):
                return None  # idle and not known to be slow: the fast path
            return self._lane(m)
        if lane.outstanding or served_busy(m) or lane.slow_until > time.monotonic():
            return lane  # once a request waits on the lane, every later one does too: order per machine
        del self.lanes[m.id]
        return None

    def _lane(self, m: Machine) -> Lane:
        lane = self.lanes.get(m.id)
        if lane is None or (lane.mach is not m and not lane.outstanding):
            lane = self.lanes[m.id] = Lane(m)
        return lane

    def _hand_off(self, sess: Session, seq: int, lane: Lane, fn: Callable[[], Any],
                  answer: Callable[[Any], None], bounded: bool = True, n: int = 1) -> None:
        """Run ``fn`` on the lane's pool thread, after the lane's earlier jobs; ``answer`` its result (or the
        exception it raised) on the I/O thread. ``n``: the requests it stands for (an ns_many batch's run of
        mutations for one machine, see nsbatch.py)."""
        # a notification (seq 0, add_ns) has no reply to carry limit back to its caller, only an error push, so
        # it is refused only past a larger bound; replies say limit past MAX_LANE
        cap = MAX_LANE if seq else MAX_LANE_NS
        if bounded and lane.outstanding >= cap:
            raise TransportError(f"machine {lane.mach.id} has {lane.outstanding} requests waiting; try again later",
                                 code=P.LIMIT)
        self._enter(sess, seq, lane, n)
        loop = self.loop

        def job() -> None:
            result: Any
            t0 = perf_counter()
            try:
                result = fn()
            except Exception as exc:
                result = exc
            slow = perf_counter() - t0 > SLOW * n
            loop.post(lambda: done(result, slow))

        def done(result: Any, slow: bool) -> None:
            self._leave(sess, seq, lane, slow, n)
            answer(result)

        self.workers.submit(lane, job)

    def _enter(self, sess: Session, seq: int, lane: Lane, n: int = 1) -> None:
        """Count ``n`` requests as waiting on ``lane`` (until ``_leave``)."""
        lane.outstanding += n
        if seq:
            sess.inflight.add(seq)
        identity = sess.identity
        lane.waiting[identity] = lane.waiting.get(identity, 0) + n

    def _leave(self, sess: Session, seq: int, lane: Lane, slow: bool, n: int = 1) -> None:
        """``n`` requests that waited on ``lane`` are done (their transitions took more than SLOW if ``slow``)."""
        lane.outstanding -= n
        identity = sess.identity
        left = lane.waiting.pop(identity) - n
        if left:
            lane.waiting[identity] = left
        now = time.monotonic()
        if slow:
            lane.slow_until = now + SLOW_HOLD
            lane.quick = 0
        else:
            lane.quick += n
            if lane.quick >= QUICK_STREAK:
                lane.slow_until = 0.0  # it was a pause (a GC, a busy box), not a slow handler: back inline
        mach_id = lane.mach.id
        if not lane.outstanding and lane.slow_until <= now and self.lanes.get(mach_id) is lane:
            del self.lanes[mach_id]
        sess.inflight.discard(seq)

    # ------------------------------------------------------------------ the other kinds

    def _ping(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        if sess.greeted:
            self._ok(sess, seq, None, {"boot": self.ep.boot, "session": sess.token})
        else:
            # the client's session is gone (expired while it was silent, or dropped) and this ping made a new,
            # empty one: say so. A client that only compares boot ids sees a new one and says hello again
            self._ok(sess, seq, None, {"boot": "", "hello": True})

    def _hello(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        proto = b.get("proto")
        if proto != P.PROTO:
            raise TransportError(f"unsupported protocol version {P.clip(proto, 64)} (server speaks {P.PROTO})",
                                 code=P.INVALID_PARAMS)
        sess.greeted = True
        self._ok(sess, seq, None, {"proto": P.PROTO, "machines": len(self.machs), "readonly": sess.readonly,
                                   "boot": self.ep.boot, "session": sess.token, P.NS_MANY: True})

    def _machs(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        if b.get("c") is True and seq and self._fleet_kinds:  # as columns (fleet.py)
            self.fleet.listing(sess, seq)
            return
        out = []
        for m in self.ep.machines:
            if m.disposed:
                continue
            d: dict[str, Any] = {"id": m.id, "parent_id": m.parent_id, "tags": m.tags, "time": m.time(),
                                 "states": m.state_names}
            args = declared_args(m)
            if args:  # only machines that declare args (shells complete --arg names from the listing)
                d["args"] = P.args_to_wire(args)
            out.append(d)
        self._ok(sess, seq, None, out)

    def _sub(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        m = self._mach(mach_id)
        self._ok(sess, seq, m.id, self.pushes.subscribe(sess, m, bool(b.get("muts", False))))

    def _unsub(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        if mach_id is None:
            raise TransportError("unsub needs a machine id", code=P.INVALID_PARAMS)
        self.pushes.unsubscribe(sess, mach_id)
        self._ok(sess, seq, mach_id, {})

    def _sync(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        m = self._mach(mach_id)
        lane = self.lanes.get(m.id)
        if lane is not None and lane.mach is m and lane.waiting.get(sess.identity):
            # this client's earlier requests still wait on the lane: its clock is read once they are applied
            # (a sync answers "after every earlier request"); other clients are answered at once
            self._hand_off(sess, 0, lane, _nothing, lambda r: self._sync_now(sess, seq, m), bounded=False)
            return
        self._sync_now(sess, seq, m)

    def _sync_now(self, sess: Session, seq: int, m: Machine) -> None:
        t, q, mt = m.time(), m.queue_tick, m.machine_tick
        sub = sess.subs.get(m.id)
        if sub is not None:
            sub.time, sub.qtick, sub.mtick = t, q, mt
        self._ok(sess, seq, m.id, [t, q, mt])

    def _can(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        """A dry run: it runs the negotiation handlers, and waits (up to 1 s) while the machine runs a
        transition on another thread, so it runs on a worker thread; the reply is sent from the I/O thread."""
        m = self._mach(mach_id)
        states = P.check_names(b.get("s"))
        args = _args(b.get("a"))[0]
        if sess.checks >= MAX_CHECKS:
            raise TransportError(f"too many dry runs in progress (limit {MAX_CHECKS})", code=P.LIMIT)
        mtype = MutationType.REMOVE if b.get("type") == P.REMOVE else MutationType.ADD
        loop, identity = self.loop, sess.identity

        def dry() -> int:
            if not isinstance(m, Machine):  # a replica (a RemoteMachine): its source answers, one round trip
                return (m.can_remove if mtype == MutationType.REMOVE else m.can_add)(*states, args=args)
            r = int(check(m, mtype, tuple(states), args, timed_out=_BUSY))
            if r == _BUSY:  # not a refusal: the machine stayed in a transition for the whole second
                raise TransportError(f"machine {m.id} was busy for 1 s: the dry run did not run", code=P.BUSY)
            return r

        def run() -> None:
            result: int | Exception
            try:
                result = dry()
            except Exception as exc:
                result = exc
            loop.post(lambda: done(result))

        def done(r: int | Exception) -> None:
            sess.checks -= 1
            if isinstance(r, Exception):
                self._fail(identity, seq, m.id, P.CAN, r)
            else:
                self._ok(sess, seq, m.id, r)  # the session may be gone: the client still waits for it

        lane = self.lanes.get(m.id)
        if lane is not None and lane.outstanding and lane.mach is m:
            # behind requests still waiting on the machine's lane: it runs there, after them
            self._hand_off(sess, 0, lane, dry, done)
            sess.checks += 1
            return
        sess.checks += 1
        self._checks().submit(run)

    def _checks(self) -> ThreadPoolExecutor:
        if self.checks is None:
            self.checks = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="am-endpoint-check")
        return self.checks

    def stop(self) -> None:
        """Let the lanes and the dry-run workers go (those running finish; their replies are not sent)."""
        self.workers.stop()
        self.fleet.stop()
        if self.checks is not None:
            self.checks.shutdown(wait=False, cancel_futures=True)

    def _when_args(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        m = self._mach(mach_id)
        state, args, token = b.get("state"), b.get("args"), b.get("token")
        if not isinstance(state, str) or not isinstance(args, dict) or token is None:
            raise ValueError("when_args takes {state, args, token}")
        if P.packed_size(token) > P.MAX_TOKEN_BYTES:
            raise TransportError(f"when_args token larger than {P.MAX_TOKEN_BYTES} bytes", code=P.LIMIT)
        if token in sess.args_waiters or token in sess.args_pending:
            raise ValueError(f"when_args token {P.clip(token)} in use")
        if len(sess.args_waiters) + len(sess.args_pending) >= MAX_WHEN_ARGS:  # those still on a lane count too
            raise TransportError(f"too many pending when_args waiters (limit {MAX_WHEN_ARGS})", code=P.LIMIT)
        size = _args(args)[1]
        if sess.args_bytes + size > P.MAX_WHEN_ARGS_BYTES:
            raise TransportError(f"pending when_args waiters hold more than {P.MAX_WHEN_ARGS_BYTES} bytes of args",
                                 code=P.LIMIT)
        # an own ctx per token: waiters with equal arguments are shared, and this one may be cancelled alone
        ctx = Ctx()
        lane = self.lanes.get(m.id)
        if lane is not None and lane.outstanding and lane.mach is m:
            # registered after the mutations still waiting on the machine's lane, as they were sent before it;
            # counted against the session's limits from now on, so that a burst can't overshoot them
            sess.reserve(token, m.id, size)

            def registered(w: Waiter | Exception) -> None:
                pending = sess.unreserve(token)
                if isinstance(w, Exception):
                    self._fail(sess.identity, seq, m.id, P.WHEN_ARGS, w)
                elif not pending:
                    ctx.cancel()  # cancelled while it waited (or the session is gone): it was, then it ended
                    self._ok(sess, seq, m.id, {})
                else:
                    self._args_registered(sess, seq, m, token, w, ctx, size)

            self._hand_off(sess, 0, lane, lambda: m.when_args(state, args, ctx=ctx), registered)
            return
        self._args_registered(sess, seq, m, token, m.when_args(state, args, ctx=ctx), ctx, size)

    def _args_registered(self, sess: Session, seq: int, m: Machine, token: Any, w: Waiter, ctx: Ctx,
                         size: int) -> None:
        sess.add_waiter(token, m.id, w, ctx, size)
        identity = sess.identity
        loop = self.loop

        def done() -> None:
            loop.post(lambda: self._args_done(identity, m.id, token, w))

        self._ok(sess, seq, m.id, {})
        w.on_done(done)

    def _args_done(self, identity: bytes, mach_id: str, token: Any, w: Waiter) -> None:
        sess = self.loop.sessions.get(identity)
        entry = sess.args_waiters.get(token) if sess is not None else None
        if sess is None or entry is None or entry[1] is not w:
            return
        sess.pop_waiter(token)
        self.pushes.flush_one(sess, mach_id)  # the clock first, so the mirror shows the state when it ends
        self.loop.send(sess, P.pack(P.ARGS_OK, 0, mach_id, [token, not w.cancelled]))

    def _when_args_cancel(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        token = b.get("token")
        entry = sess.pop_waiter(token)
        if entry is not None:
            entry[2].cancel()
        else:
            sess.unreserve(token)  # still on the lane: its registration is cancelled when its turn comes
        self._ok(sess, seq, mach_id, {})

    def _bye(self, sess: Session, seq: int, mach_id: str | None, b: dict[str, Any]) -> None:
        self.loop.drop_session(sess)


_PLAIN = frozenset({P.ADD, P.REMOVE, P.SET, P.ADD_NS})


def _plain_call(kind: str, m: Machine, b: dict[str, Any]) -> tuple[Callable[..., Any], list[str],
                                                                   dict[str, Any] | None]:
    """Check an add/rm/set/add_ns request: the machine's method to call, the states and the args."""
    a = b.get("a")
    args = None if a is None else _args(a)[0]
    states = P.check_names(b.get("s"))
    return (m.remove if kind == P.REMOVE else m.set if kind == P.SET else m.add), states, args


def _applier(sess: Session, kind: str, m: Machine, b: dict[str, Any]) -> Callable[[], int]:
    """Check a mutation request and return what applies it (on whichever thread runs it)."""
    source = sess.source
    tc = b.get("tc")  # the caller's trace context, continued while the transition runs (transport.otel)
    if type(tc) is not str or len(tc) > tracecontext.MAX_TC:
        tc = None
    if kind == P.ADD_ERR:
        a = b.get("a")
        args = None if a is None else _args(a)[0]
        state = b.get("state", "Exception")
        if not isinstance(state, str):
            raise ValueError("state must be a name")
        msg, type_name = str(b.get("msg", "")), str(b.get("type", "Exception"))
        if len(msg) + len(type_name) > P.MAX_ARGS_BYTES:
            raise TransportError(f"error message larger than {P.MAX_ARGS_BYTES} bytes", code=P.LIMIT)

        def call() -> int:
            return int(m.add_err_state(state, RemoteError(msg, type_name), args))
    else:
        fn, states, args = _plain_call(kind, m, b)
        if tc is None:
            # the common case, one closure (this runs once per remote mutation): the history names the session
            def plain() -> int:
                token = SOURCE.set(source)
                try:
                    return int(fn(*states, args=args))
                finally:
                    SOURCE.reset(token)

            return plain

        def call() -> int:
            return int(fn(*states, args=args))

    def apply() -> int:
        token = SOURCE.set(source)
        detach = tracecontext.attach(tc) if tc is not None and tracecontext.attach is not None else None
        try:
            return call()
        finally:
            SOURCE.reset(token)
            if detach is not None:
                detach()

    return apply


def _nothing() -> None:
    """A lane job that only keeps a request's place in the machine's order."""


def _body(body: Any) -> dict[str, Any]:
    """A request body as a map: a list or nil count as empty; anything else is refused."""
    if isinstance(body, dict):
        return body
    if body is not None and not isinstance(body, list):
        raise TransportError("body must be a map, a list or nil", code=P.INVALID_PARAMS)
    return {}


def _args(value: Any) -> tuple[dict[str, Any] | None, int]:
    """Args from a request (nil or a map) and their packed size; ``limit`` past MAX_ARGS_BYTES."""
    args = P.check_args(value)
    size = 0 if args is None else P.packed_size(args)
    if size > P.MAX_ARGS_BYTES:
        raise TransportError(f"args larger than {P.MAX_ARGS_BYTES} bytes", code=P.LIMIT)
    return args, size
