"""Tracers: synchronous hooks into a machine's life. Subclass ``Tracer`` and override what you need.

Also how a machine binds tracers and calls their hooks (``emit``, a hook that raises is logged)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .machine import Machine
    from .mutation import Mutation
    from .transition import Transition


class Tracer:
    """No-op hooks, called synchronously on the thread that runs the machine's queue.

    A hook must be quick and must not block; an exception raised by a hook is logged and ignored.
    ``sees_rejected_autos``: when True (the default), the machine runs an auto transition that its relations
    would reject anyway, so the tracer sees it canceled; a tracer that sets it False spares the machine that work.
    """

    sees_rejected_autos = True

    def machine_init(self, mach: Machine) -> None:
        """The machine was built (tracers given to the constructor only; ``bind_tracer`` does not call it)."""

    def mutation_queued(self, mach: Machine, mutation: Mutation) -> None:
        """A mutation was appended or prepended to the queue."""

    def transition_init(self, tx: Transition) -> None:
        """A transition was resolved (target known), before any handler."""

    def transition_start(self, tx: Transition) -> None:
        """Handlers of the transition are about to run."""

    def handler_start(self, tx: Transition, binding: str, handler: str) -> None:
        """A handler found on a binding is about to be called."""

    def handler_end(self, tx: Transition, binding: str, handler: str) -> None:
        """That handler returned (or raised)."""

    def transition_finals(self, tx: Transition) -> None:
        """An accepted transition was applied; final handlers are next."""

    def transition_end(self, tx: Transition) -> None:
        """The transition ended, accepted or not."""

    def queue_end(self, mach: Machine) -> None:
        """The queue drained."""

    def schema_change(self, mach: Machine, old_schema: dict[str, Any]) -> None:
        """``set_schema`` replaced the schema."""

    def machine_dispose(self, mach_id: str) -> None:
        """The machine was disposed."""


NO_TRACERS: list[Tracer] = []  # shared while a machine has none; binding replaces the list
NO_HOOKS: dict[str, list[Callable[..., Any]]] = {}
_HOOK_NAMES = tuple(n for n, v in vars(Tracer).items() if not n.startswith("_") and callable(v))
REJECTED_AUTOS = " rejected autos"  # a key of the hooks table, not a hook: some tracer wants to see them


def hooks_of(tracers: list[Tracer]) -> dict[str, list[Callable[..., Any]]]:
    """Bound tracer methods by hook name, only those a subclass overrides (the rest are no-ops), so the machine
    checks one dict lookup per hook instead of calling every tracer."""
    hooks: dict[str, list[Callable[..., Any]]] = {}
    for t in tracers:
        if t.sees_rejected_autos:
            hooks.setdefault(REJECTED_AUTOS, [])
        for name in _overridden(type(t)):
            hooks.setdefault(name, []).append(getattr(t, name))
    return hooks


# hook names a Tracer subclass overrides, by class: one tracer class is bound to thousands of machines (a served
# fleet's history, change and watch tracers), and comparing its eleven methods with Tracer's on each bind was most
# of starting a fleet watch (3 tracers: 4.3 us a bind before, 1.6 us after). Weak keys: a class made at run time
# is not kept alive by this table.
_OVERRIDES: weakref.WeakKeyDictionary[type, tuple[str, ...]] = weakref.WeakKeyDictionary()


def _overridden(cls: type) -> tuple[str, ...]:
    names = _OVERRIDES.get(cls)
    if names is None:
        names = _OVERRIDES[cls] = tuple(n for n in _HOOK_NAMES if getattr(cls, n, None) is not getattr(Tracer, n))
    return names


# the four transition hooks, by position in a machine's ``_tx_hooks`` (see ``tx_hooks_of``)
TX_INIT, TX_START, TX_FINALS, TX_END = range(4)
_TX_HOOK_NAMES = ("transition_init", "transition_start", "transition_finals", "transition_end")
NO_TX_HOOKS: tuple[list[Callable[..., Any]] | None, ...] = (None, None, None, None)


def tx_hooks_of(hooks: dict[str, list[Callable[..., Any]]]) -> tuple[list[Callable[..., Any]] | None, ...]:
    """The transition hooks of ``hooks`` (a list, or None when no tracer overrides it), by position (``TX_INIT``
    ...). Kept beside ``_hooks`` because every transition asks for all four and a tracer overrides one or two:
    a dict lookup that misses cost each transition of a traced machine about 1.5%."""
    return tuple(hooks.get(n) for n in _TX_HOOK_NAMES) if hooks else NO_TX_HOOKS


def bind_tracer(mach: Machine, tracer: Tracer) -> None:
    """See ``Machine.bind_tracer``."""
    with mach._lock:
        mach._tracers = [*mach._tracers, tracer]
        mach._hooks = hooks_of(mach._tracers)
        mach._tx_hooks = tx_hooks_of(mach._hooks)
        mach._refresh_plain()


def detach_tracer(mach: Machine, tracer: Tracer) -> None:
    """See ``Machine.detach_tracer``."""
    with mach._lock:
        if tracer not in mach._tracers:
            raise ValueError(f"tracer not bound (machine {mach._id})")
        mach._tracers = [t for t in mach._tracers if t is not tracer]
        mach._hooks = hooks_of(mach._tracers)
        mach._tx_hooks = tx_hooks_of(mach._hooks)
        mach._refresh_plain()


def emit(mach: Machine, hook: str, *args: Any) -> None:
    """Call each tracer's ``hook(*args)`` (the method ``Machine._emit``); one that raises is logged, not raised."""
    fns = mach._hooks.get(hook)
    if fns:
        call_hooks(mach, fns, *args)


def call_hooks(mach: Machine, fns: list[Callable[..., Any]], *args: Any) -> None:
    """Call ``fns`` (one hook's methods, from ``mach._hooks``); one that raises is logged, not raised.

    The transition's hot path looks the hook up itself and calls this: a dict lookup and a bound method fewer
    than ``emit``, about a third of an empty hook's cost."""
    for fn in fns:
        try:
            fn(*args)
        except Exception:
            hook_raised(mach, fn)


def hook_raised(mach: Machine, fn: Callable[..., Any]) -> None:
    """Log the exception a tracer's hook ``fn`` raised (call from its ``except``)."""
    mach._logger.exception("%stracer %s raised", mach._log_prefix, getattr(fn, "__qualname__", fn))
