"""One transition's execution: negotiation, applying the target, final handlers, recovery from a failed one,
panics, handler calls with their timeouts and worker thread, and async final handlers (spec sections 6 and 10).

Runs on the thread that holds the queue (see ``mutation_queue``). Writes the machine's ``_time`` and ``_active``
(under the lock, as waiters read them), ``_tx``, ``_tx_seq``, ``_err``, ``_bound``, ``_worker``,
``_internal_errors`` and ``_backoff_until``, and makes and ends state contexts; prepends the auto and Exception
mutations. A new machine's clock, handler cache and state contexts are shared empty objects (``zero_clock``,
``NO_BOUND``, ``NO_CTXS``), replaced by its own on first write, never written in place.
"""

from __future__ import annotations

import time as _time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .ctx_waiter import Ctx
from .errors import HandlerTimeoutError, trace_text
from .handlers import Binding
from .log import LogLevel, fmt_args
from .mutation import Mutation, MutationType, Result, new_mutation, own_queue
from .resolver import STATE, BoundFin, BoundNeg, Plan, _enters_exits, auto_states, final_handlers, make_plan, resolve
from .schema import AUTO_CACHE_MAX, EXCEPTION, PLAN_CACHE_MAX, Compiled
from .subscriptions import NO_SUBS, check_subs, match_args, resolve_queue_waiters
from .tracer import REJECTED_AUTOS, call_hooks
from .transition import Event, Transition, new_event, new_transition
from .worker import HandlerWorker, Job

if TYPE_CHECKING:
    import concurrent.futures

    from .machine import Machine

ADD = MutationType.ADD
EXECUTED, CANCELED = Result.EXECUTED, Result.CANCELED
# enum members as module globals: read through the class (``LogLevel.OPS``) each costs about 100 ns on the hot path
OPS, CHANGES = LogLevel.OPS, LogLevel.CHANGES
_perf_counter = _time.perf_counter
_NOTHING_BOUND: tuple[BoundNeg, BoundFin] = ([], [])  # a machine without bindings; never written to
NO_BOUND: dict[Plan, tuple[BoundNeg, BoundFin]] = {}  # a new machine's handler cache, shared, never written to
NO_CTXS: dict[str, Ctx] = {}  # a new machine's state contexts, shared, never written to (see state_ctx)
_ZERO_CLOCKS: dict[int, list[int]] = {}


def zero_clock(n: int) -> list[int]:
    """A shared clock of ``n`` zeros: a new machine's (a clock is replaced on change, never written in place)."""
    z = _ZERO_CLOCKS.get(n)
    if z is None:
        z = _ZERO_CLOCKS[n] = [0] * n
    return z


class _Panic:
    """A handler raised ``exc``."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_TIMEOUT = object()  # a handler ran past the machine's handler_timeout


def _raised(handler: str, exc: BaseException) -> str:
    """``CState raised RuntimeError: disk full`` (the message clipped: it is a one-line reason)."""
    try:
        msg = str(exc)
    except Exception:  # a user exception whose __str__ raises must not break the transition
        msg = "(str() failed)"
    msg = msg.splitlines()[0] if msg else ""
    return f"{handler} raised {type(exc).__name__}" + (f": {msg[:200]}" if msg else "")


def state_ctx(mach: Machine, state: str) -> Ctx:
    """See ``Machine.state_ctx`` (``state`` checked)."""
    if mach._disposed:
        c = Ctx()
        c.cancel()
        return c
    with mach._lock:
        ctx = mach._state_ctxs.get(state)
        if ctx is None or ctx.done:
            if mach._state_ctxs is NO_CTXS:
                mach._state_ctxs = {}
            ctx = mach._state_ctxs[state] = Ctx(mach._ctx)
            mach._refresh_plain()
        return ctx


def end_state_ctxs(mach: Machine, states: Iterable[str]) -> None:
    """End the state contexts of ``states``, whose tick changed (on the runner)."""
    ctxs = mach._state_ctxs
    for s in states:
        c = ctxs.pop(s, None)
        if c is not None:
            c.cancel()
    if not ctxs:  # the last one ended: the plain path is back (see machine.plain)
        with mach._lock:
            mach._refresh_plain()


def plan_for(c: Compiled, m: Mutation, before: tuple[str, ...]) -> Plan:
    """The cached plan of ``m`` from the active states ``before`` (made and cached on a miss)."""
    return cached_plan(c, m.type, m.called, before, m.is_auto, m.is_check)


def cached_plan(c: Compiled, mtype: MutationType, called: tuple[str, ...], before: tuple[str, ...], is_auto: bool,
                is_check: bool) -> Plan:
    """``make_plan``'s result, cached on the schema."""
    key = (mtype, called, before, is_auto, is_check)
    plan: Plan | None = c.plans.get(key)
    if plan is None:
        if len(c.plans) >= PLAN_CACHE_MAX:
            c.plans.clear()
        plan = c.plans[key] = make_plan(c, mtype, called, before, is_auto, is_check)
    return plan


def recent_plan(c: Compiled, m: Mutation, before: tuple[str, ...]) -> Plan:
    """``plan_for``, and the plan kept as the last one of its type and called states (``Compiled.recent``, the
    plain path's first look: one dict lookup by the called states instead of a 5-tuple key built and hashed)."""
    plan = plan_for(c, m, before)
    if not m.is_auto and not m.is_check:
        # equal to the tuple the plan was made from, but it is this one the active states will be again (the
        # final target of a cached plan): kept for the identity check, else a plan made from an equal tuple misses
        plan.before = before
        recent = c.recent[m.type]
        if len(recent) >= PLAN_CACHE_MAX:
            recent.clear()
        recent[m.called] = plan
    return plan


def run_transition(mach: Machine, m: Mutation) -> int:
    """Apply one mutation: resolve, negotiate, apply, run final handlers (spec section 6)."""
    before = mach._active
    plan = plan_for(mach._c, m, before)
    mach._tx_seq += 1
    tx = new_transition(mach, mach._tx_seq, m, plan, before, mach._time)
    mach._tx = tx
    if mach._log_level >= OPS:
        kind = f"{m.type}:auto" if m.is_auto else (f"{m.type}:check" if m.is_check else str(m.type))
        mach._log(OPS, f"[{kind}] {' '.join(m.called)}{fmt_args(m.args)}")
        for lvl, line in plan.log:
            mach._log(lvl, line)
    hooks = mach._hooks
    if hooks:  # each hook looked up by name: a tracer usually overrides one or two of them
        if fns := hooks.get("transition_init"):
            call_hooks(mach, fns, tx)
        if fns := hooks.get("transition_start"):
            call_hooks(mach, fns, tx)
    accepted = plan.accepted
    # the bound handlers of this plan, looked up once for both phases (none needed when relations refuse it)
    neg, fin = _bound_for(mach, plan) if accepted and mach._bindings else _NOTHING_BOUND
    if accepted and neg:
        accepted = _negotiate(mach, tx, neg)
    if m.is_check or not accepted:
        return end_unapplied(mach, tx, accepted)
    changed = _apply(mach, tx, plan, fin)
    tx.is_completed = True
    return end_applied(mach, tx, changed)


def end_unapplied(mach: Machine, tx: Transition, accepted: bool) -> int:
    """End a dry run, or a transition that relations or a negotiation handler canceled."""
    tx.is_accepted = accepted
    tx.is_completed = True
    if fns := mach._hooks.get("transition_end"):
        call_hooks(mach, fns, tx)
    mach._tx = None
    return EXECUTED if tx.mutation.is_check and accepted else CANCELED


def auto_entry(c: Compiled, active: tuple[str, ...]) -> tuple[tuple[str, ...], bool, Plan | None]:
    """(auto states to add after a change to ``active``, whether their transition is accepted, its plan from
    ``active``), cached. The plain path runs the auto transition with this plan, without looking it up again."""
    entry = c.autos.get(active)
    if entry is None:
        if len(c.autos) >= AUTO_CACHE_MAX:
            c.autos.clear()  # bounded like the plans: a machine wandering over many sets pays misses
        auto = auto_states(c, active)
        plan = cached_plan(c, ADD, auto, active, True, False) if auto else None
        # an auto transition that its relations reject has no effect: nobody needs to run it
        viable = plan is not None and plan.accepted
        entry = c.autos[active] = (auto, viable, plan)
    return entry


def end_applied(mach: Machine, tx: Transition, changed: bool) -> int:
    """End an applied transition: prepend the auto states its change calls for, then ``transition_end``."""
    m = tx.mutation
    if not tx.is_accepted:  # a final handler failed
        if fns := mach._hooks.get("transition_end"):
            call_hooks(mach, fns, tx)
        mach._tx = None
        return CANCELED
    c = mach._c
    if changed and c.auto_names and not m.is_auto and not tx.plan.health and not mach._disposing:
        auto, viable, _ = auto_entry(c, mach._active)
        if auto and (viable or REJECTED_AUTOS in mach._hooks or mach._log_level >= OPS):
            if mach._log_level >= OPS:
                mach._log(OPS, f"[auto] {' '.join(auto)}")
                mach._log(OPS, f"[prepend:add] {' '.join(auto)}")
            am = new_mutation(ADD, auto, None, 0, True)
            lock = mach._lock
            lock.acquire()  # not ``with``: see mutation_queue.mutate_general
            try:
                own_queue(mach).appendleft(am)
            finally:
                lock.release()
            if "mutation_queued" in mach._hooks:
                mach._emit("mutation_queued", mach, am)
    if fns := mach._hooks.get("transition_end"):
        call_hooks(mach, fns, tx)
    mach._tx = None
    # final handlers only queue, so the target is still active: only auto needs a check (spec 6.7)
    if m.is_auto:
        return EXECUTED if len(tx.target) > len(tx._before) else CANCELED
    return EXECUTED


def _bound_for(mach: Machine, plan: Plan) -> tuple[BoundNeg, BoundFin]:
    """(negotiation handlers, final handlers) of ``plan`` found on the bindings, cached per plan.

    Whatever replaces ``_bindings`` (binding, detaching, a schema change, dispose) empties the cache under the lock,
    so an entry needs no version to check. One made from bindings replaced meanwhile is used once, not kept.
    """
    entry = mach._bound.get(plan)
    if entry is None:
        bindings = mach._bindings
        neg: BoundNeg = []
        for name, owner in plan.neg:
            calls = [(b, b.handlers[name]) for b in bindings if name in b.handlers]
            if calls:
                neg.append((name, owner, calls))
        entry = (neg, bind_finals(mach, plan.fin, bindings))
        with mach._lock:  # reentrant: the plain path may hold it
            if mach._bindings is bindings:
                bound = mach._bound
                if not bound or len(bound) >= PLAN_CACHE_MAX:
                    bound = mach._bound = {}  # a machine starts with a shared empty table (see Machine.__init__)
                bound[plan] = entry
    return entry


def _negotiate(mach: Machine, tx: Transition, neg: BoundNeg) -> bool:
    """Run Exit, Enter, self, pair and AnyEnter handlers; False cancels (spec section 6)."""
    m = tx.mutation
    is_auto = m.is_auto
    rejected = tx._rejected
    for name, owner, calls in neg:
        if rejected is not None and owner in rejected:
            continue
        if name == "AnyEnter" and is_auto and rejected is not None:
            # an auto transition whose target emptied is canceled before AnyEnter
            if not [s for s in tx.target if s not in rejected]:
                tx._cancel = (f"every auto state refused ({', '.join(sorted(rejected))})", None, None)
                mach._log(OPS, "[cancel] () by auto")
                return False
        for binding, fn in calls:
            ret = _call(mach, tx, binding, name, fn, owner)
            if ret is None or ret is True:
                continue
            verdict = neg_returned(mach, tx, name, owner, ret)
            if verdict is False:
                return False
            if verdict:  # partial acceptance: this auto state's other handlers are skipped
                rejected = tx._rejected
                break
    if rejected is not None and not [s for s in tx.target if s not in rejected]:
        tx._cancel = (f"every auto state refused ({', '.join(sorted(rejected))})", None, None)
        return False
    return True


def neg_returned(mach: Machine, tx: Transition, name: str, owner: str | None, ret: object) -> bool | None:
    """A negotiation handler returned ``ret``, neither None nor True: False cancels the transition; True is a
    partial acceptance (the auto state ``owner`` left the target: the handler's other bindings are skipped); None
    accepts (a value other than False)."""
    if isinstance(ret, _Panic):
        tx._cancel = (_raised(name, ret.exc), name, ret.exc)
        _panic(mach, tx, ret.exc, final=False)
        return False
    if ret is _TIMEOUT:
        tx._cancel = (f"{name} timed out", name, None)
        mach._log(OPS, f"[cancel] ({' '.join(tx.target)}) by timeout")
        return False
    if ret is False:
        m = tx.mutation
        if m.is_auto and owner is not None and owner in m.called:
            # partial acceptance: only this auto state leaves the target
            if tx._rejected is None:
                tx._rejected = set()
            tx._rejected.add(owner)
            mach._log(OPS, f"[cancel] ({' '.join(tx.target)}) by {name}")
            return True
        tx._cancel = (f"{name} returned {ret!r}", name, None)
        self_h = owner is not None and name == owner + owner
        tag = "cancel:self" if self_h else "cancel"
        mach._log(OPS, f"[{tag}] ({' '.join(tx.target)}) by {name}")
        return False
    return None


def bind_finals(mach: Machine, fin: tuple[tuple[str, str, int], ...],
                bindings: list[Binding] | None = None) -> BoundFin:
    """Final handlers found on the bindings (``mach``'s by default; names without any handler are left out)."""
    out: BoundFin = []
    if bindings is None:
        bindings = mach._bindings
    for name, state, kind in fin:
        calls = [(b, b.handlers[name]) for b in bindings if name in b.handlers]
        if calls:
            out.append((name, state, kind, calls))
    calls = [(b, b.handlers["AnyState"]) for b in bindings if "AnyState" in b.handlers]
    if calls:
        out.append(("AnyState", "", -1, calls))
    return out


def _call(mach: Machine, tx: Transition, binding: Binding, name: str, fn: Callable[..., Any],
          state: str | None) -> Any:
    """Call one handler; returns its result, a _Panic, or _TIMEOUT."""
    if mach._log_level >= OPS:
        mach._log(OPS, f"[handler:{binding.seq}] {name}")
    hooks = mach._hooks
    if hooks and (fns := hooks.get("handler_start")):
        call_hooks(mach, fns, tx, binding.name, name)
    e = new_event(name, tx, state)
    if mach._worker is not None:
        ret = _call_on_worker(mach, fn, e, name, binding)
    else:
        ret = call_inline(mach, fn, e, name, binding)
    hooks = mach._hooks  # a handler may have bound or detached a tracer
    if hooks and (fns := hooks.get("handler_end")):
        call_hooks(mach, fns, tx, binding.name, name)
    return ret


def call_inline(mach: Machine, fn: Callable[..., Any], e: Event, name: str, binding: Binding) -> Any:
    """Call a handler on this thread; returns its result, a _Panic, or _TIMEOUT (``_call`` and the plain path's
    negotiation and final handlers)."""
    timeout = mach._handler_timeout
    try:
        if not timeout:
            return fn(e)
        t0 = _perf_counter()
        ret = fn(e)
    except Exception as exc:
        return _Panic(exc)
    # inline: a timeout is known only once the handler returned; the transition is canceled
    if _perf_counter() - t0 > timeout:
        _timed_out(mach, name, binding)
        return _TIMEOUT
    return ret


def _timed_out(mach: Machine, name: str, binding: Binding) -> None:
    err = HandlerTimeoutError(f"handler timeout: {name} from {binding.name}")
    if mach._internal_errors is None:
        mach._internal_errors = deque(maxlen=10)
    mach._internal_errors.append(err)
    mach._logger.warning("%s%s", mach._log_prefix, err)


def _call_on_worker(mach: Machine, fn: Callable[..., Any], e: Event, name: str, binding: Binding) -> Any:
    """Run a handler on the worker thread: time it out, and abandon it past the deadline (spec 10.4)."""
    assert mach._worker is not None
    job = mach._worker.submit(fn, e)
    timeout = mach._handler_timeout
    if job.done.wait(timeout if timeout else None):
        return _Panic(job.exc) if job.exc is not None else job.ret
    _timed_out(mach, name, binding)
    if not job.done.wait(max(0.0, mach._handler_deadline - (timeout or 0.0))):
        _abandon(mach, job, name)
    return _TIMEOUT


def _abandon(mach: Machine, job: Job, name: str) -> None:
    """A handler outlived the deadline: a new worker, an empty queue, an error, then a backoff."""
    from .mutation_queue import add_err, cancel_queue  # that module runs this one: imported when needed

    job.abandoned = True
    # reported even during the backoff: it is the end of the story the backoff started
    job.on_late = lambda: add_err(
        mach, EXCEPTION, RuntimeError(f"deadlined handler finished, theoretical leak: {name}"), None, True)
    mach._worker = HandlerWorker(f"am-handlers {mach._id}")
    with mach._lock:
        dropped = cancel_queue(mach)
    if dropped and mach._subs.queue:
        resolve_queue_waiters(mach)
    mach._log(OPS, f"[cancel] handler deadline: {name}, queue cleared")
    state = "ErrHandlerTimeout" if "ErrHandlerTimeout" in mach._c.index else EXCEPTION
    mach.add_err_state(state, HandlerTimeoutError(f"handler deadline: {name}"))
    mach._backoff_until = _time.monotonic() + mach._handler_backoff


def _apply(mach: Machine, tx: Transition, plan: Plan, fin: BoundFin) -> bool:
    """Set the target and ticks, end state contexts, run final handlers. Returns True if ticks changed."""
    m = tx.mutation
    if tx._rejected:
        before = tx._before
        # re-resolve without the rejected auto states, which drops what they would have added
        clean = tuple(s for s in m.called if s in tx.target and s not in tx._rejected)
        target_l = resolve(mach._c, ADD, clean, before, True, None)
        enters, exits, deltas = _enters_exits(mach._c, target_l, before, clean)
        target = tuple(target_l)
        fin_bound = bind_finals(mach, final_handlers(exits, enters))
        tx.target, tx.enters, tx.exits = target, enters, exits
    else:
        target, enters, exits, deltas = (plan.final_target, plan.final_enters, plan.final_exits,
                                         plan.final_deltas)
        fin_bound = fin
        if m.is_auto:
            tx.target, tx.enters, tx.exits = target, enters, exits
    if deltas:
        new_time = mach._time[:]
        for i, d in deltas:
            new_time[i] += d
        lock = mach._lock
        lock.acquire()  # waiters read ticks under the lock (not ``with``: see mutation_queue.mutate_general)
        try:
            mach._time = new_time
            mach._active = target
        finally:
            lock.release()
        tx._time_after = new_time
        if mach._log_level >= CHANGES:
            _log_state(mach, m, enters, exits)
        if mach._state_ctxs:
            end_state_ctxs(mach, (*exits, *enters))
    else:
        tx._time_after = mach._time
        mach._active = target
    if fns := mach._hooks.get("transition_finals"):
        call_hooks(mach, fns, tx)
    ok = _finals(mach, tx, fin_bound, enters) if fin_bound else True
    if mach._subs is not NO_SUBS:  # read after the final handlers: one of them may have made the first waiter
        resolve_waiters(mach, tx, enters, bool(deltas), ok)
    return bool(deltas)


def resolve_waiters(mach: Machine, tx: Transition, enters: tuple[str, ...], changed: bool, ok: bool) -> None:
    """Resolve the waiters an applied transition made due: ``when_args`` of the entered states, and the clock's."""
    subs = mach._subs
    if subs.args_states:
        index, now = mach._c.index, mach._time
        for s in enters:
            if s in subs.args_states and now[index[s]] & 1:
                match_args(mach, s, tx.args)
    if changed or not ok:
        check_subs(mach)


def _finals(mach: Machine, tx: Transition, fin_bound: BoundFin, enters: tuple[str, ...]) -> bool:
    """Run End/State/AnyState handlers. False when one failed (the transition is then canceled)."""
    for name, state, kind, calls in fin_bound:
        for binding, fn in calls:
            if name in binding.async_names:
                _spawn(mach, fn, new_event(name, tx, state), state, kind)
                continue
            ret = _call(mach, tx, binding, name, fn, state)
            if ret is not None and (ret is _TIMEOUT or isinstance(ret, _Panic)):  # None: the usual return
                final_failed(mach, tx, ret, name, state, kind, enters)
                return False
    return True


def final_failed(mach: Machine, tx: Transition, ret: object, name: str, state: str, kind: int,
                 enters: tuple[str, ...]) -> None:
    """The final handler ``name`` raised (``ret`` a _Panic) or timed out: cancel, recover, record the error."""
    exc = ret.exc if isinstance(ret, _Panic) else None
    tx._cancel = (_raised(name, exc) if exc is not None else f"{name} timed out", name, exc)
    _recover(mach, tx, name, state, kind, enters)
    if exc is not None:
        _panic(mach, tx, exc, final=True)


def _recover(mach: Machine, tx: Transition, name: str, state: str, kind: int, enters: tuple[str, ...]) -> None:
    """A final handler failed: if it was ``<S>State``, S and the states entered after it go back."""
    mach._log(OPS, f"[cancel] ({' '.join(tx.target)}) by recover")
    tx.is_accepted = False
    if kind != STATE or state not in enters:
        return
    undo = list(enters[enters.index(state):])
    # and whatever requires a state going back (the spec leaves those active, with a requirement unmet)
    c = mach._c
    while True:
        remaining = [s for s in mach._active if s not in undo]
        have = set(remaining)
        unmet = [s for s in remaining if any(r not in have for r in c.require[s])]
        if not unmet:
            break
        undo += unmet
    kept = " ".join(s for s in tx.target if s not in undo)
    mach._log(OPS, f"[recover] partial final states as ({kept})")
    index = mach._c.index
    new_time = list(mach._time)
    for s in undo:
        i = index[s]
        if new_time[i] & 1:
            new_time[i] += 1
    with mach._lock:
        mach._time = new_time
        mach._active = tuple(s for s in mach._active if s not in undo)
    tx._time_after = new_time
    end_state_ctxs(mach, undo)


def _panic(mach: Machine, tx: Transition, exc: BaseException, final: bool) -> None:
    """A handler raised: record the error and prepend Exception, unless the transition called it."""
    m = tx.mutation
    if not final:
        mach._log(OPS, f"[cancel] ({' '.join(tx.target)}) by recover")
    if mach._log_level > LogLevel.NOTHING:  # the error is in err and in Exception's args either way
        mach._logger.error("%s[error:%s] %s (%r)", mach._log_prefix, m.type, " ".join(m.called), exc,
                           exc_info=exc)
    if EXCEPTION in m.called or EXCEPTION not in mach._c.index or mach._disposing:
        return
    mach._err = exc
    args = {"err": exc, "err_trace": trace_text(exc), "panic": True}
    em = Mutation(ADD, (EXCEPTION,), args)
    with mach._lock:
        own_queue(mach).appendleft(em)
    if "mutation_queued" in mach._hooks:
        mach._emit("mutation_queued", mach, em)


def _spawn(mach: Machine, fn: Callable[..., Any], e: Event, state: str, kind: int) -> None:
    """Run an async final handler as a task; ``<S>State`` tasks end with S's state context."""
    import asyncio

    loop = mach._loop
    if loop is None or loop.is_closed():
        from .aio import background_loop

        loop = background_loop()
    fut = asyncio.run_coroutine_threadsafe(fn(e), loop)
    ctx = mach.state_ctx(state) if kind == STATE and state else mach._ctx
    cancel = fut.cancel
    ctx.on_done(cancel)

    def done(f: concurrent.futures.Future[Any]) -> None:
        ctx._remove_callback(cancel)  # a finished task leaves nothing on a ctx that lives on
        if f.cancelled():
            return
        exc = f.exception()
        if exc is not None and not mach._disposing:
            mach.add_err(exc, {"panic": True})

    fut.add_done_callback(done)


def _log_state(mach: Machine, m: Mutation, enters: tuple[str, ...], exits: tuple[str, ...]) -> None:
    parts = [f"+{s}" for s in enters] + [f"-{s}" for s in exits]
    tag = "auto_" if m.is_auto else "state"
    mach._log(CHANGES, f"[{tag}] {' '.join(parts)}{fmt_args(m.args)}")

