"""The core's interface for mirrors: what a local copy of a machine served elsewhere (``transport.RemoteMachine``)
may do to the private ``Machine`` that holds its schema and clock.

Transport uses only these functions, never the machine's private fields: set the clock a source pushed, read it,
replay a source's transition to the mirror's final handlers and tracers, follow a schema, close. A mirror never
runs transitions of its own: its clock only moves by ``set_clock``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .ctx_waiter import Ctx, Waiter
from .handlers import handler_kind
from .log import LazyLogger
from .mutation import MutationType, args_dict, new_mutation
from .persistence import notify_waiters as _notify_waiters
from .persistence import set_clock as _set_clock
from .persistence import set_schema
from .resolver import Plan, final_handlers, sort_states
from .schema import State, called_names, check_names
from .transition import Event, Transition, new_event, tick_changes

if TYPE_CHECKING:
    import asyncio

    from .machine import Machine

__all__ = [
    "Step", "cancel_with", "check_args", "check_called", "check_states", "clock_view", "close", "follow_schema",
    "has_replay_listeners", "is_busy", "negotiation_handlers", "new_mirror", "pending_waiter", "replay",
    "resolve_waiter", "set_clock", "set_err", "set_loop",
]

_log = LazyLogger("machine")
_TYPES = {"add": MutationType.ADD, "remove": MutationType.REMOVE, "set": MutationType.SET}
# the hooks a replayed transition calls: a mirror has no queue, so mutation_queued and queue_end never fire
_REPLAY_HOOKS = ("transition_init", "transition_start", "transition_finals", "handler_start", "handler_end",
                 "transition_end")
# (clock before, clock after, mutation record {"type", "called", "args"} or None): one source transition
Step = tuple[list[int], list[int], "Mapping[str, Any] | None"]


def new_mirror(schema: Mapping[str, State | Mapping[str, Any]], id: str, parent: str | None,
               tags: Iterable[str]) -> Machine:
    """A machine to hold a mirror's schema and clock (built like any machine; only these functions change it)."""
    from .machine import Machine

    return Machine(schema, id=id, parent=parent, tags=tags)


# ``persistence.set_clock`` itself, not a wrapper around it: it runs for every push each mirror gets. It shows the
# source's clock: ends the contexts of the states whose tick changed, resolves waiters (``changed``: the indexes
# a diff changed). ``notify=False`` leaves the waiters for ``notify_waiters``: a mirror replays the transition's
# final handlers first, so a waiter sees their effects, as on the source.
set_clock = _set_clock


def notify_waiters(m: Machine) -> None:
    """Resolve the waiters the mirror's clock satisfies now (after ``set_clock(..., notify=False)``)."""
    _notify_waiters(m)


def clock_view(m: Machine) -> list[int]:
    """The ticks, not copied: a machine replaces its list on each change and never changes it in place, so the
    caller holds a consistent snapshot. Do not modify it."""
    return m._time


def is_busy(m: Machine) -> bool:
    """True while a transition of ``m`` runs (on some thread)."""
    return m._processing


def follow_schema(m: Machine, schema: Mapping[str, State | Mapping[str, Any]], owner: object) -> None:
    """Take the source's larger schema (``Machine.set_schema``'s rules and errors); tracers' ``schema_change``
    gets ``owner`` (the mirror object users hold) as the machine."""
    set_schema(m, schema, owner)


def set_loop(m: Machine, loop: asyncio.AbstractEventLoop) -> None:
    """Run the mirror's async final handlers on ``loop`` (a local machine uses the loop it was created in)."""
    m._loop = loop


def set_err(m: Machine, err: BaseException) -> None:
    """Record the error the mirror's owner sent to the source as ``err``."""
    m._err = err


def close(m: Machine) -> None:
    """Dispose the mirror's machine locally: no ``Start`` removal, which is the source's business."""
    m._dispose(1.0, stop_start=False)


def check_called(m: Machine, states: tuple[str, ...]) -> tuple[str, ...]:
    """The called states without repeats; raises StateError for an unknown one (as a mutation does)."""
    return called_names(m, states)


def check_states(m: Machine, states: Iterable[str]) -> None:
    """Raise StateError for an unknown state (as the checks do)."""
    check_names(m, states)


def check_args(args: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A mutation's args as a dict (None for none); raises TypeError for something else (as a mutation does)."""
    return args_dict(args)


def pending_waiter(on_end: Callable[[Waiter], None], ctx: Ctx | None) -> Waiter:
    """A waiter its owner resolves with ``resolve_waiter``: ``on_end(w)`` is called once it ends, for any
    reason (it is also cancelled when ``ctx`` ends)."""
    w = Waiter()
    w._on_cancel = on_end
    w._end_with(ctx)
    return w


def cancel_with(w: Waiter, ctx: Ctx | None) -> None:
    """Cancel ``w`` when ``ctx`` ends (at once if it has); the waiter's end removes that callback again."""
    w._end_with(ctx)


def resolve_waiter(w: Waiter, ok: bool) -> None:
    """End a waiter made by ``pending_waiter``: True when its condition held."""
    w._resolve(ok)


# ---------------------------------------------------------------------- replaying the source's transitions


def negotiation_handlers(m: Machine, obj: object) -> list[str]:
    """The names of ``obj``'s negotiation handlers (Enter, Exit, self, pair, AnyEnter) for ``m``'s schema:
    those can only run on the source, where they can still cancel the transition."""
    names = list(obj) if isinstance(obj, Mapping) else [a for a in dir(obj) if not a.startswith("_")]
    index = m._c.index
    return [n for n in names if isinstance(n, str) and handler_kind(n, index) == "negotiation"]


def has_replay_listeners(m: Machine) -> bool:
    """True when a replayed transition would reach someone (handlers bound, or a tracer with a transition hook)."""
    hooks = m._hooks
    return bool(m._bindings) or (bool(hooks) and any(h in hooks for h in _REPLAY_HOOKS))


def replay(m: Machine, owner: object, step: Step) -> None:
    """Run the final handlers (``<S>End``, ``<S>State``, ``AnyState``) and the tracers' transition hooks of
    ``m`` for one transition of the source, whose clock ``m`` already shows (``set_clock``).

    ``owner`` is what ``event.machine`` and ``tx.machine`` return (the mirror object users hold). A handler or
    hook that raises is logged: it never stops the mirror, nor the handlers after it.
    """
    before_t, after_t, rec = step
    c = m._c
    names, index = c.names, c.index
    if len(after_t) != len(names) or m.disposed:
        return  # a step queued before a schema change (its clock is shown anyway), or a closed mirror
    added, removed, ticked = tick_changes(list(names), before_t, after_t)
    # a multi state entered again (ticked and active): State again; one on and off within a summed step: neither
    enters = tuple(added + [s for s in ticked if after_t[index[s]] & 1])
    exits = tuple(sort_states(c, removed))
    if rec is not None:
        called = tuple(s for s in rec.get("called") or () if isinstance(s, str) and s in index)
        raw = rec.get("args")
        mut = new_mutation(_TYPES.get(str(rec.get("type")), MutationType.ADD), called,
                           dict(raw) if isinstance(raw, Mapping) else {})
    else:  # a change no record explains (a resync, records past the push's cap): an auto transition, no args
        mut = new_mutation(MutationType.ADD, (), {}, is_auto=True)
    p = Plan()
    p.target = p.final_target = tuple(n for i, n in enumerate(names) if after_t[i] & 1)
    p.accepted, p.health = True, False
    p.enters = p.final_enters = enters
    p.exits = p.final_exits = exits
    p.deltas = p.final_deltas = ()
    p.neg, p.log, p.auto = (), (), None
    p.fin = final_handlers(exits, enters)
    before = p.before = tuple(n for i, n in enumerate(names) if before_t[i] & 1)
    with m._lock:
        m._tx_seq += 1
        seq = m._tx_seq
    tx = Transition(owner, seq, mut, p, before, before_t)  # type: ignore[arg-type]  # the mirror, not a Machine
    tx._time_after = after_t
    hooks = m._hooks
    m._tx = tx
    try:
        for hook in ("transition_init", "transition_start", "transition_finals"):
            if hook in hooks:
                m._emit(hook, tx)
        _run_finals(m, tx, p.fin)
        tx.is_completed = True
        if "transition_end" in m._hooks:
            m._emit("transition_end", tx)
    finally:
        m._tx = None


def _run_finals(m: Machine, tx: Transition, fin: tuple[tuple[str, str, int], ...]) -> None:
    bindings = m._bindings
    if not bindings:
        return
    # nothing can cut a mirror's handler short (it runs on the thread that serves every mirror of its client), so
    # one that runs past the machine's handler_timeout is only reported: that thread, and those mirrors, waited
    timeout = m._handler_timeout
    todo = [*fin, ("AnyState", "", -1)]
    for name, state, _ in todo:
        for b in bindings:
            fn = b.handlers.get(name)
            if fn is None:
                continue
            e = new_event(name, tx, state or None)
            if name in b.async_names:
                _spawn(m, fn, e)
                continue
            if "handler_start" in m._hooks:
                m._emit("handler_start", tx, b.name, name)
            t0 = time.monotonic()
            try:
                fn(e)
            except Exception:
                m._logger.exception("%s[mirror] handler %s of %s raised (machine %s)", m._log_prefix, name, b.name,
                                    m.id)
            took = time.monotonic() - t0
            if timeout is not None and took > timeout:
                m._logger.warning("%s[mirror] handler %s of %s took %.3gs, over handler_timeout %.3gs (machine %s): "
                                  "every mirror of its client waited", m._log_prefix, name, b.name, took, timeout,
                                  m.id)
            if "handler_end" in m._hooks:
                m._emit("handler_end", tx, b.name, name)


def _spawn(m: Machine, fn: Callable[..., Any], e: Event) -> None:
    """An async final handler: a task on the mirror's loop (or the background loop); its error is logged."""
    import asyncio

    loop = m._loop
    if loop is None or loop.is_closed():
        from .aio import background_loop

        loop = background_loop()
    fut = asyncio.run_coroutine_threadsafe(fn(e), loop)

    def done(f: Any) -> None:
        if not f.cancelled() and f.exception() is not None:
            _log.error("mirror %s: async handler %s raised: %r", m.id, e.name, f.exception())

    fut.add_done_callback(done)
