"""The plain path: the queue and its transitions for a machine that uses none of the features a transition checks.

Why it exists: on the general path (``mutation_queue.drain``, ``execution.run_transition``) a transition checks,
each time, every feature it may have to serve: the log level, tracer hooks, waiters, state contexts, dispose, the
handler thread. Each check is an attribute read and a branch, and the work is split over five calls between the
queue and the phases. Most machines use none of these features, so each machine keeps one flag, ``_plain``, and a
mutation on a plain machine runs ``drain_plain``: the same phases in one function, those checks left out.

What clears the flag: a log level other than NOTHING, a tracer with a hook this path does not call
(``handler_start``, ``handler_end``, ``queue_end``; it does call the four transition hooks and ``mutation_queued``,
and runs the rejected auto transitions a tracer asks for), the first waiter, a state context, dispose starting, a
handler thread. Each place that turns one on calls ``refresh_plain`` under the machine's lock (``Machine.log_level``,
``tracer.bind_tracer``, ``subscriptions.own_subs``, ``execution.state_ctx``, ``mutation_queue.dispose``, the
constructor); turning one off (detaching the tracer, the last state context ending, log level NOTHING) calls it
too, to get the plain path back. The flag may be False when it could be True (only slower), never True while a
feature is on.

A handler may turn a feature on in the middle of a plain transition: the flag is read again after each handler, and
the rest of the transition goes to the general phases, which serve the feature from there as they would have
(``handler_end``, ``transition_end``, the auto transition prepended and logged, waiters resolved); the rest of the
queue goes to ``drain``. Negotiation handlers are called in place too, until one returns anything but None or True
(its result is then taken as ``execution._negotiate`` takes it, and the rest run there). The auto transition after a
change runs with the plan found with its states (``Plan.auto``), without a second lookup. ``Machine.add`` (``remove``,
``set``) calls this path directly, which claims an idle queue in the lock section that also writes the first
transition's clock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .execution import (
    _TIMEOUT,
    _apply,
    _bound_for,
    _finals,
    _negotiate,
    _Panic,
    _spawn,
    auto_entry,
    call_inline,
    end_applied,
    end_unapplied,
    final_failed,
    neg_returned,
    recent_plan,
    resolve_waiters,
)
from .mutation import Mutation, MutationType, Result, args_dict, in_backoff, own_queue
from .subscriptions import NO_SUBS, resolve_queue_waiters
from .tracer import REJECTED_AUTOS, TX_END, TX_FINALS, TX_INIT, TX_START, call_hooks, hook_raised
from .transition import Event, Transition, new_event

if TYPE_CHECKING:
    from .handlers import Binding
    from .machine import Machine
    from .resolver import BoundFin, BoundNeg

_new = object.__new__
NO_AUTO: tuple[tuple[str, ...], bool, None] = ((), False, None)  # Plan.auto of a plan no auto transition follows
_get_ident = threading.get_ident
ADD, EVAL = MutationType.ADD, MutationType.EVAL
EXECUTED, CANCELED = Result.EXECUTED, Result.CANCELED


# the hooks the plain path does not call: a tracer with one of them clears the flag (it may have the others)
_OFF_PATH_HOOKS = frozenset({"handler_start", "handler_end", "queue_end"})


def refresh_plain(mach: Machine) -> None:
    """Recompute ``mach._plain`` (see the module docstring); called under the lock by whatever changed a feature."""
    mach._plain = is_plain(mach)


def is_plain(mach: Machine) -> bool:
    """True while none of the features the plain path leaves out is on (see the module docstring)."""
    return (not mach._log_level and _OFF_PATH_HOOKS.isdisjoint(mach._hooks) and mach._subs is NO_SUBS
            and not mach._state_ctxs and not mach._disposing and mach._worker is None)


def drain_plain(mach: Machine, m: Mutation | None, mtype: MutationType | None = None, states: tuple[str, ...] = (),
                args: Mapping[str, Any] | None = None) -> int:
    """``mutation_queue.drain`` for a plain machine, with ``execution.run_transition`` written in place.

    Runs ``m`` (already counted as dequeued), then the queue until it is empty, and releases the queue. An auto
    transition is run next without passing through the queue (the general path prepends it, and the queue takes it
    at once). Once the flag is cleared (by a handler, or another thread), what is left goes to ``drain``.

    With ``mtype`` (and ``m`` None) this is ``Machine.add``, ``remove`` and ``set``: the states and args are checked,
    and on a plain machine that is idle the new mutation is run here, the queue claimed in the lock section that
    also writes its transition's clock. Otherwise ``mutation_queue.mutate_general`` takes it. (One function for both:
    a Python call costs about 2% of a mutation.)

    Lock sections: the one that claims the queue, or takes a mutation from it, stays open until that transition's
    clock is written when nothing runs in between (no transition hook before it, no negotiation handler). A lock
    section costs about 900 instructions, 3% of a mutation; most mutations take two instead of three.
    """
    first: int | None = None
    c = mach._c  # set_schema refuses while the queue is held
    lock = mach._lock
    handover = False
    held = False  # the lock, held from the claim or the pop to the clock write (see above)
    auto_plan = None  # the plan of ``auto`` below, from the target it was found for (``auto_from``)
    auto_from: tuple[str, ...] = ()
    if mtype is not None:  # a new add, remove or set
        index = c.index
        for s in states:
            if s not in index:
                mach._unknown(states)
        called = states if len(states) < 2 or len(set(states)) == len(states) else tuple(dict.fromkeys(states))
        a = None if args is None else args_dict(args)
        if mach._disposing or (mach._backoff_until and in_backoff(mach)):
            return CANCELED
        if not mach._plain or mach._processing or "mutation_queued" in mach._hooks:
            return _mutate_general(mach, mtype, called, a)
        # mutation.new_mutation written in place: a call costs about as much as the stores (2% of a mutation);
        # tests/machine/test_plain_objects.py checks that both set the same slots
        m = _new(Mutation)
        m.type = mtype
        m.called = called
        m.args = a
        m.is_auto = m.is_check = False
        m.fn = m.done = None
        m.result = CANCELED  # (its queue_tick is set by the claim)
        lock.acquire()  # not ``with``: see mutation_queue.mutate_general
        if mach._processing or mach._queue or not mach._plain:
            lock.release()
            return _mutate_general(mach, mtype, called, a)
        # an idle queue claimed: the mutation counts as appended and dequeued
        mach._processing = True
        mach._runner = _get_ident()
        mach._appended += 1
        mach._queue_tick += 1
        m.queue_tick = mach._appended + 1
        held = True  # plain, just checked under the lock: the loop's first check of the flag passes
    try:
        while True:
            if m is None:
                lock.acquire()
                held = True
                if not mach._plain or not mach._queue:
                    if not mach._plain:
                        handover = True
                    else:  # the queue is released
                        mach._processing = False
                        mach._runner = None
                        mach._tx = None
                    held = False
                    lock.release()
                    break
                m = own_queue(mach).popleft()
                if m.queue_tick:
                    mach._queue_tick += 1
                if m.type is EVAL:  # an eval another thread prepended (``Machine.eval``): drain runs it
                    held = False  # (the only way one gets here: the caller's and the auto mutations are not)
                    lock.release()
                    handover = True
                    break
            elif not mach._plain:
                handover = True
                break
            auto: Mutation | None = None
            # run_transition: the plan, the transition, its bound handlers, negotiation
            before = mach._active
            if auto_plan is not None and before is auto_from:  # m is the auto transition found below
                plan = auto_plan
            else:
                plan = c.recent[m.type].get(m.called)  # the last plan of this type and called states
                if plan is None or plan.before is not before or m.is_auto or m.is_check:
                    plan = recent_plan(c, m, before)
            auto_plan = None
            # transition.new_transition written in place: a call costs about as much as the stores (2% of a
            # mutation); tests/machine/test_plain_objects.py checks that both set the same slots
            tx = _new(Transition)
            tx._mach = mach
            tx._seq = mach._tx_seq = mach._tx_seq + 1
            tx.mutation = m
            tx.plan = plan
            tx._before = before
            tx.target = plan.target
            tx.enters = plan.enters
            tx.exits = plan.exits
            tx.time_before = mach._time
            tx._time_after = None
            tx.is_accepted = accepted = plan.accepted
            tx.is_completed = False
            tx._rejected = None
            tx._cancel = None
            mach._tx = tx
            if mach._hooks:  # only a tracer's transition hooks, on a plain machine
                tx_hooks = mach._tx_hooks
                if tx_hooks[TX_INIT] or tx_hooks[TX_START]:
                    if held:  # a hook never runs under the lock
                        held = False
                        lock.release()
                    if fns := tx_hooks[TX_INIT]:
                        call_hooks(mach, fns, tx)
                    if fns := tx_hooks[TX_START]:
                        call_hooks(mach, fns, tx)
            fin = None
            if accepted and mach._bindings:
                bound = mach._bound.get(plan)  # emptied by whatever replaces the bindings
                if bound is None:
                    bound = _bound_for(mach, plan)
                neg, fin = bound
                if neg:
                    if held:  # nor a handler
                        held = False
                        lock.release()
                    accepted = _negotiate_plain(mach, tx, neg)
            if m.is_check or not accepted:
                if held:
                    held = False
                    lock.release()
                m.result = end_unapplied(mach, tx, accepted)
            elif tx._rejected is not None or not mach._plain:  # an auto state refused, or a feature turned on
                if held:  # (not plain while held: only a hook or a handler of this thread could clear it)
                    held = False
                    lock.release()
                changed = _apply(mach, tx, plan, fin or [])
                tx.is_completed = True
                m.result = end_applied(mach, tx, changed)
            else:
                # _apply's common case: no state refused, no state contexts to end, nothing to log
                target, enters, deltas = plan.final_target, plan.final_enters, plan.final_deltas
                if m.is_auto:
                    tx.target, tx.enters, tx.exits = target, enters, plan.final_exits
                if deltas:
                    new_time = mach._time[:]
                    for i, d in deltas:
                        new_time[i] += d
                    if not held:
                        lock.acquire()  # waiters read ticks under the lock
                    try:
                        mach._time = new_time
                        mach._active = target
                    finally:
                        held = False
                        lock.release()
                    tx._time_after = new_time
                else:
                    if held:
                        held = False
                        lock.release()
                    tx._time_after = mach._time
                    mach._active = target
                if mach._hooks and (fns := mach._tx_hooks[TX_FINALS]):
                    call_hooks(mach, fns, tx)  # a hook may turn a feature on too
                if fin:
                    ok = _finals_plain(mach, tx, fin, enters) if mach._plain else _finals(mach, tx, fin, enters)
                else:
                    ok = True
                if mach._subs is not NO_SUBS:  # a final handler made the first waiter
                    resolve_waiters(mach, tx, enters, bool(deltas), ok)
                tx.is_completed = True
                if not ok or not mach._plain:
                    m.result = end_applied(mach, tx, bool(deltas))
                else:
                    # end_applied's common case: the auto transition is run next instead of prepended
                    entry = plan.auto
                    if entry is None:  # the auto transition after this plan: decided once per plan
                        entry = plan.auto = (auto_entry(c, target) if deltas and c.auto_names and not m.is_auto
                                             and not plan.health else NO_AUTO)
                    states, viable, a_plan = entry
                    if viable or (states and REJECTED_AUTOS in mach._hooks):
                        auto = _new(Mutation)  # mutation.new_mutation written in place, as above
                        auto.type = ADD
                        auto.called = states
                        auto.args = auto.fn = auto.done = None
                        auto.is_auto = True
                        auto.is_check = False
                        auto.queue_tick = 0
                        auto.result = CANCELED
                        auto_plan, auto_from = a_plan, target
                        # told as end_applied tells of the one it prepends (a hook that turns a feature on
                        # sends the auto transition to the general path: the flag is read at the loop's top)
                        if "mutation_queued" in mach._hooks:
                            mach._emit("mutation_queued", mach, auto)
                    if mach._hooks and (fns := mach._tx_hooks[TX_END]):
                        for fn in fns:  # call_hooks written in place: this is the hook tracers use most
                            try:
                                fn(tx)
                            except Exception:
                                hook_raised(mach, fn)
                    mach._tx = None
                    if m.is_auto:
                        m.result = EXECUTED if len(target) > len(before) else CANCELED
                    else:
                        m.result = EXECUTED
            # the queue's bookkeeping, as in drain
            if m.done is not None:
                m.done.set()
            if first is None:
                first = m.result
            if m.queue_tick:
                mach._done_tick = m.queue_tick
                if mach._subs.queue:  # a handler made a queue waiter
                    resolve_queue_waiters(mach)
            m = auto
    except BaseException:
        if held:
            lock.release()
        with lock:
            mach._processing = False
            mach._runner = None
            mach._tx = None
        raise
    if handover:  # outside the try: drain releases the queue itself, also when it raises
        from .mutation_queue import drain  # that module imports this one: looked up here, off the hot path

        r = drain(mach, m)
        return r if first is None else first
    if not mach._plain:  # turned off during the last transition (dispose begun, a tracer bound)
        from .mutation_queue import drain_end

        drain_end(mach)
    return CANCELED if first is None else first


def _mutate_general(mach: Machine, mtype: MutationType, called: tuple[str, ...], a: dict[str, Any] | None) -> int:
    from .mutation_queue import mutate_general  # that module imports this one: looked up here, off the hot path

    return mutate_general(mach, mtype, called, a)


def _negotiate_plain(mach: Machine, tx: Transition, neg: BoundNeg) -> bool:
    """``execution._negotiate`` with each handler called in place (``_call`` without the log, hooks and worker),
    while every handler returns None or True and the machine stays plain. Otherwise the handler's result is taken
    as ``_negotiate`` takes it, and the handlers after it run in ``_negotiate``. (Nothing is rejected before the
    first handover, so the checks ``_negotiate`` makes of rejected auto states have nothing to check here.)"""
    for name, owner, calls in neg:
        for binding, fn in calls:
            e = _new(Event)  # transition.new_event written in place, as the transition above
            e.name, e.transition, e._state = name, tx, owner
            ret = call_inline(mach, fn, e, name, binding)
            if (ret is None or ret is True) and mach._plain:  # the usual case
                continue
            if not mach._plain and (fns := mach._hooks.get("handler_end")):  # as _call ends it
                call_hooks(mach, fns, tx, binding.name, name)
            return _negotiate_from(mach, tx, neg, name, binding, ret)
    return True


def _negotiate_from(mach: Machine, tx: Transition, neg: BoundNeg, name: str, binding: Binding, ret: object) -> bool:
    """The handler ``name`` of ``binding`` returned ``ret`` (not None or True), or turned a feature on: its result
    taken as ``_negotiate`` takes it, then the handlers after it run in ``_negotiate``."""
    k = next(i for i, f in enumerate(neg) if f[0] == name)
    _, owner, calls = neg[k]
    rest = calls[next(i for i, (b, _) in enumerate(calls) if b is binding) + 1:]
    if ret is not None and ret is not True:
        verdict = neg_returned(mach, tx, name, owner, ret)
        if verdict is False:
            return False
        if verdict:  # partial acceptance: this auto state's other handlers are skipped
            rest = []
    return _negotiate(mach, tx, [(name, owner, rest), *neg[k + 1:]])


def _finals_plain(mach: Machine, tx: Transition, fin: BoundFin, enters: tuple[str, ...]) -> bool:
    """``execution._finals`` with each handler called in place (``_call`` without the log, hooks and worker);
    when a handler turns a feature on, the rest go to ``_finals``."""
    for name, state, kind, calls in fin:
        for binding, fn in calls:
            if name in binding.async_names:
                _spawn(mach, fn, new_event(name, tx, state), state, kind)  # may make a state context
                ret = None
            else:
                e = _new(Event)  # transition.new_event written in place, as in drain_plain
                e.name, e.transition, e._state = name, tx, state
                ret = call_inline(mach, fn, e, name, binding)
            if ret is None and mach._plain:  # the usual case
                continue
            failed = ret is _TIMEOUT or isinstance(ret, _Panic)
            if not mach._plain:
                return _finals_from(mach, tx, fin, enters, name, binding, failed, ret)
            if failed:
                final_failed(mach, tx, ret, name, state, kind, enters)
                return False
    return True


def _finals_from(mach: Machine, tx: Transition, fin: BoundFin, enters: tuple[str, ...], name: str,
                 binding: Binding, failed: bool, ret: object) -> bool:
    """The handler ``name`` of ``binding`` turned a feature on: end it as ``_call`` would (its ``handler_end``;
    an async one is only spawned, as in ``_finals``), then run the handlers after it with ``_finals``."""
    if name not in binding.async_names and (fns := mach._hooks.get("handler_end")):
        call_hooks(mach, fns, tx, binding.name, name)
    k = next(i for i, f in enumerate(fin) if f[0] == name)
    _, state, kind, calls = fin[k]
    if failed:
        final_failed(mach, tx, ret, name, state, kind, enters)
        return False
    j = next(i for i, (b, _) in enumerate(calls) if b is binding)
    rest = [(name, state, kind, calls[j + 1:]), *fin[k + 1:]]
    return _finals(mach, tx, rest, enters)
