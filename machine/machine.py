"""``Machine``, the facade: constructor, getters and public entry points. The checks and getters of the clock are
in its base, ``queries.StateQueries``. The work is done in modules that each write their own slots of the machine
(grouped in ``__slots__``): ``mutation_queue`` (the queue, dispose), ``execution`` (one transition),
``subscriptions`` (waiters), ``persistence`` (export, import, schema, mirror clock).
"""

from __future__ import annotations

import random as _random
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import persistence
from .ctx_waiter import Ctx, Waiter
from .diagram import inspect_text, string_all
from .errors import SchemaError
from .execution import NO_BOUND, NO_CTXS, state_ctx, zero_clock
from .handlers import NO_BINDINGS, Binding, bind_handlers, detach_handlers
from .history import History, find_history, keep_history
from .log import LogLevel, machine_logger, parse_level
from .mutation import NO_QUEUE, Mutation, MutationType
from .mutation_queue import NO_CALLBACKS, add_err, check, eval_fn, will_be
from .mutation_queue import dispose as dispose_machine
from .plain import drain_plain, is_plain, refresh_plain
from .queries import StateQueries
from .resolver import Plan
from .schema import EXCEPTION, State, called_names, check_names, compiled_for, unknown_names
from .subscriptions import NO_SUBS, Clock, new_waiter, when_args, when_query, when_queue, when_time
from .tracer import NO_HOOKS, NO_TRACERS, NO_TX_HOOKS, Tracer, bind_tracer, detach_tracer, emit, hooks_of, tx_hooks_of
from .transition import Transition
from .worker import HandlerWorker

ADD, REMOVE, SET = MutationType.ADD, MutationType.REMOVE, MutationType.SET

if TYPE_CHECKING:
    import asyncio
    import logging

    from .resolver import BoundFin, BoundNeg


class Machine(StateQueries):
    """A state machine: states that may be active together, linked by relations, with per-state clocks.

    Every public method is safe to call from any thread. Mutations made while a transition runs (from a
    handler or another thread) are queued and return their queue tick; the thread that holds the queue drains
    it in order.
    """

    __slots__ = (
        # this facade: identity, options, logging, contexts, bindings and tracers
        "_id", "_parent_id", "_tags", "_log_level", "_logger_obj", "_loop", "_ctx_obj",
        "_state_ctxs", "_disposed_waiter_obj", "_dispose_cbs", "_bindings", "_bind_seq",
        "_tracers", "_hooks", "_tx_hooks", "_plain", "_subs", "_lock", "_queue_limit", "_handler_timeout",
        "_handler_deadline", "_handler_backoff",
        # execution (one transition), and persistence outside transitions: the schema and the clock
        "_c", "_time", "_active", "_machine_tick", "_tx", "_tx_seq", "_bound", "_err", "_worker",
        "_internal_errors", "_backoff_until",
        # mutation_queue: the queue, who holds it, its ticks, dispose
        "_queue", "_processing", "_runner", "_appended", "_queue_tick", "_done_tick", "_disposing", "_disposed",
        "__weakref__",
    )

    def __init__(
        self,
        schema: Mapping[str, State | Mapping[str, Any]],
        *,
        id: str | None = None,
        handlers: object | None = None,
        parent: Machine | str | None = None,
        tags: Iterable[str] = (),
        log_level: int | str | LogLevel | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        queue_limit: int = 1000,
        handler_timeout: float | None = 1.0,
        handler_thread: bool = False,
        handler_deadline: float = 10.0,
        handler_backoff: float = 3.0,
        tracers: Iterable[Tracer] = (),
    ) -> None:
        self._c = compiled_for(schema)
        self._id = str(id) if id is not None else f"{_random.getrandbits(32):08x}"
        if not self._id:
            raise ValueError("machine id must not be empty")
        self._parent_id = parent.id if isinstance(parent, Machine) else (str(parent) if parent else None)
        self._tags = tuple(dict.fromkeys(tags)) if tags else ()
        self._log_level = parse_level(log_level)
        self._logger_obj: logging.Logger | None = None
        # async handlers run on the loop the machine was created in (get_running_loop without raising)
        # asyncio is imported lazily (it is slow to import): without it loaded, no loop can be running
        aio = sys.modules.get("asyncio")
        self._loop: asyncio.AbstractEventLoop | None = loop or (aio.events._get_running_loop() if aio else None)
        self._queue_limit = queue_limit
        self._handler_timeout = handler_timeout
        self._handler_deadline = handler_deadline
        self._handler_backoff = handler_backoff
        self._backoff_until = 0.0  # while monotonic() is below it, mutations are canceled
        # handler_thread: handlers run on a worker thread, so one that hangs can be timed out and abandoned
        self._worker: HandlerWorker | None = HandlerWorker(f"am-handlers {self._id}") if handler_thread else None
        # what most machines never use starts as a shared empty object, replaced by the machine's own on first
        # write (a clock is always replaced, never written in place): 100k machines cost 1 KiB less each
        self._time: list[int] = zero_clock(len(self._c.names))
        self._active: tuple[str, ...] = ()
        self._lock = threading.RLock()
        self._queue: deque[Mutation] | tuple[()] = NO_QUEUE  # see mutation_queue.own_queue
        self._processing = False
        self._runner: int | None = None
        self._appended = 0  # appended mutations so far; the k-th gets queue tick k + 1
        self._queue_tick = 1
        self._done_tick = 1  # queue tick of the last appended mutation processed
        self._machine_tick = 0
        self._tx: Transition | None = None
        self._tx_seq = 0
        # handlers of the bound objects per plan: plan -> (negotiation, finals); emptied when the bindings change
        self._bound: dict[Plan, tuple[BoundNeg, BoundFin]] = NO_BOUND
        self._err: BaseException | None = None
        self._internal_errors: deque[BaseException] | None = None
        self._disposing = False
        self._disposed = False
        self._bindings: list[Binding] = NO_BINDINGS  # replaced, never appended to (see handlers.bind_handlers)
        self._bind_seq = 0
        self._tracers: list[Tracer] = list(tracers) if tracers else NO_TRACERS
        # the tracer methods that are overridden, by hook name: empty when no tracer wants anything
        self._hooks: dict[str, list[Callable[..., Any]]] = hooks_of(self._tracers) if tracers else NO_HOOKS
        self._tx_hooks = tx_hooks_of(self._hooks) if tracers else NO_TX_HOOKS  # by position (see tx_hooks_of)
        self._subs = NO_SUBS  # its own while a waiter is pending (most machines never get one)
        self._state_ctxs: dict[str, Ctx] = NO_CTXS
        self._ctx_obj: Ctx | None = None  # created on first use, like the rest below
        self._dispose_cbs: list[Callable[[], Any]] = NO_CALLBACKS
        self._disposed_waiter_obj: Waiter | None = None
        self._plain = is_plain(self)  # True while no feature a transition checks is on (see machine.plain)
        if self._hooks:
            self._emit("machine_init", self)
        if handlers is not None:
            objs = handlers if isinstance(handlers, (list, tuple)) else [handlers]
            for obj in objs:
                self.bind_handlers(obj)
        if self._c.errors:
            # a relation conflict does not stop the machine being built: it starts in Exception
            Machine.add_err_state(self, EXCEPTION, SchemaError("; ".join(self._c.errors)))
        if self._c.cycle is not None:
            self._log(LogLevel.OPS, f"[resolver] relation error: state {self._c.cycle} has a Require cycle")

    # ------------------------------------------------------------------ identity and plain getters

    @property
    def id(self) -> str:
        """The machine's id."""
        return self._id

    @property
    def parent_id(self) -> str | None:
        """The parent machine's id, or None."""
        return self._parent_id

    @property
    def tags(self) -> list[str]:
        """The machine's tags (a copy)."""
        return list(self._tags)

    @property
    def state_names(self) -> list[str]:
        """The schema's names in index order (Exception included)."""
        return [] if self._disposed else list(self._c.names)

    @property
    def schema(self) -> dict[str, State]:
        """A copy of the parsed schema."""
        return dict(self._c.schema)

    @property
    def err(self) -> BaseException | None:
        """The last error from ``add_err*`` or a raising handler; never cleared."""
        return self._err

    @property
    def machine_tick(self) -> int:
        """0, or the imported machine tick + 1."""
        return self._machine_tick

    @property
    def queue_tick(self) -> int:
        """Starts at 1; +1 each time an appended mutation is taken from the queue."""
        return self._queue_tick

    @property
    def queue_len(self) -> int:
        """Mutations waiting in the queue."""
        return len(self._queue)

    @property
    def disposed(self) -> bool:
        """True once ``dispose()`` finished."""
        return self._disposed

    @property
    def ctx(self) -> Ctx:
        """The machine's context: done when the machine is disposed."""
        return self._ctx

    @property
    def _ctx(self) -> Ctx:
        c = self._ctx_obj
        return c if c is not None else self._lazy("_ctx_obj", Ctx, Ctx.cancel)

    @property
    def _disposed_waiter(self) -> Waiter:
        w = self._disposed_waiter_obj
        return w if w is not None else self._lazy("_disposed_waiter_obj", Waiter, lambda w: w._resolve(True))

    def _lazy(self, slot: str, make: Callable[[], Any], end: Callable[[Any], Any]) -> Any:
        """The object in ``slot``, made on first use (ended at once when the machine is already disposed)."""
        with self._lock:
            obj = getattr(self, slot)
            if obj is None:
                obj = make()
                setattr(self, slot, obj)
                if self._disposed:
                    end(obj)
        return obj

    @property
    def _log_prefix(self) -> str:
        return f"[{self._id[:5]}] "

    @property
    def log_level(self) -> LogLevel:
        """The current log level."""
        return self._log_level

    @log_level.setter
    def log_level(self, value: int | str | LogLevel) -> None:
        with self._lock:
            self._log_level = parse_level(value)
            self._logger_obj = machine_logger(self._id, self._log_level)
            refresh_plain(self)

    @property
    def _logger(self) -> logging.Logger:
        # created on first use: a stdlib logger per machine id lives forever in logging's registry
        lg = self._logger_obj
        if lg is None:
            lg = self._logger_obj = machine_logger(self._id, self._log_level)
        return lg

    @property
    def internal_errors(self) -> list[BaseException]:
        """The last 10 internal errors (handler timeouts), oldest first."""
        return list(self._internal_errors or ())

    @property
    def transition(self) -> Transition | None:
        """The transition being applied, or None when idle."""
        return self._tx

    # ------------------------------------------------------------------ name checks, and ``will_be`` (it reads the
    # queue; the checks and getters of the clock are in ``StateQueries``)

    _called = called_names
    _unknown = unknown_names
    _check_names = check_names

    def will_be(self, *states: str) -> bool:
        """True when a queued add or set names all of ``states``."""
        self._check_names(states)
        return will_be(self, states)

    def __repr__(self) -> str:
        return f"<Machine {self._id} {self}>"

    def string_all(self) -> str:
        """``(Foo:1) [Bar:0 Baz:2]``: active states, then the inactive ones, with ticks, in index order."""
        return "" if self._disposed else string_all(self)

    def inspect(self, *states: str) -> str:
        """A block per state: active flag and name, tick, then the flags and relations that are set."""
        self._check_names(states)
        return "" if self._disposed else inspect_text(self, states)

    # ------------------------------------------------------------------ mutations

    def add(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Activate ``states`` (and what they add), keeping the other active states when relations allow.

        Returns EXECUTED, CANCELED, or a queue tick (>= QUEUED) when the mutation was queued.
        Raises StateError for an unknown state, before anything changes.
        """
        return drain_plain(self, None, ADD, states, args)

    def remove(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Deactivate ``states`` (and what requires them). Returns as ``add``."""
        return drain_plain(self, None, REMOVE, states, args)

    def set(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Make ``states`` (and what they add) the only active states. Returns as ``add``."""
        return drain_plain(self, None, SET, states, args)

    def toggle(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """``remove`` when all of ``states`` are active, otherwise ``add``."""
        self._called(states)
        if states and self.is_active(*states):
            return drain_plain(self, None, REMOVE, states, args)
        return drain_plain(self, None, ADD, states, args)

    def add_err(self, err: BaseException | None, args: Mapping[str, Any] | None = None) -> int:
        """Record ``err`` and add Exception with ``err`` and ``err_trace`` in the args."""
        return self.add_err_state(EXCEPTION, err, args)

    def add_err_state(self, state: str, err: BaseException | None,
                      args: Mapping[str, Any] | None = None) -> int:
        """Record ``err`` and add ``state`` together with Exception.

        CANCELED when disposing, when the queue is full, when ``err`` is None or a cancellation.
        """
        return add_err(self, state, err, args, False)

    def can_add(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Dry run of ``add``: resolves relations and runs negotiation handlers, applies nothing."""
        return check(self, ADD, states, args)

    def can_remove(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Dry run of ``remove``."""
        return check(self, REMOVE, states, args)

    def eval(self, fn: Callable[[], Any], timeout: float = 1.0) -> bool:
        """Run ``fn()`` serialised with transitions.

        True when it ran; False when it could not: called from a handler of this machine, disposed, timeout.
        ``fn``'s return value is discarded; an exception it raises goes to ``add_err``.
        """
        return eval_fn(self, fn, timeout)

    # ------------------------------------------------------------------ subscriptions

    def when(self, *states: str, ctx: Ctx | None = None) -> Waiter:
        """Resolves when all of ``states`` are active together (at once if they are)."""
        self._check_names(states)
        names = tuple(dict.fromkeys(states))
        return new_waiter(self, "when", (frozenset(names), ctx), lambda w: (w, names),
                          lambda: self.is_active(*names), ctx)

    def when_not(self, *states: str, ctx: Ctx | None = None) -> Waiter:
        """Resolves when all of ``states`` are inactive (at once if they are)."""
        self._check_names(states)
        names = tuple(dict.fromkeys(states))
        return new_waiter(self, "when_not", (frozenset(names), ctx), lambda w: (w, names),
                          lambda: not self.any_active(*names), ctx)

    def when_err(self, ctx: Ctx | None = None) -> Waiter:
        """Resolves when Exception is active."""
        return self.when(EXCEPTION, ctx=ctx)

    def when_time(self, states: Iterable[str], times: Iterable[int], ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``tick(states[i]) >= times[i]`` for every i.

        Raises ValueError when the lengths differ or are 0, StateError for an unknown state.
        """
        return when_time(self, states, times, ctx)

    def when_ticks(self, state: str, n: int, ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``state`` ticked ``n`` more times."""
        self._check_names((state,))
        return self.when_time((state,), (self.tick(state) + n,), ctx)

    def when_query(self, fn: Callable[[Clock], bool], ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``fn(clock)`` returns True after an accepted transition (not checked at once)."""
        return when_query(self, fn, ctx)

    def when_args(self, state: str, args: Mapping[str, Any], ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``state`` is entered by a mutation whose args include ``args`` (compared with ==)."""
        self._check_names((state,))
        return when_args(self, state, args, ctx)

    def when_queue(self, tick: int) -> Waiter:
        """Resolves when the mutation with queue tick ``tick`` was processed (at once for 0, 1 or past ticks)."""
        return when_queue(self, tick)

    def when_disposed(self) -> Waiter:
        """Resolves when the machine is disposed."""
        return self._disposed_waiter

    # ------------------------------------------------------------------ contexts

    def state_ctx(self, state: str) -> Ctx:
        """A context that ends at the state's next tick change (activation, deactivation, multi re-entry)."""
        self._check_names((state,))
        return state_ctx(self, state)

    # ------------------------------------------------------------------ handlers and tracers

    def bind_handlers(self, obj: object) -> None:
        """Bind an object (or a dict of name -> callable) whose handler methods run on transitions.

        Several objects may be bound; they run in bind order for each handler name.
        """
        bind_handlers(self, obj)

    def detach_handlers(self, obj: object) -> None:
        """Unbind a previously bound object. Raises ValueError if it is not bound."""
        detach_handlers(self, obj)

    def bind_tracer(self, tracer: Tracer) -> None:
        """Add a tracer; its hooks are called synchronously."""
        bind_tracer(self, tracer)

    def detach_tracer(self, tracer: Tracer) -> None:
        """Remove a tracer. Raises ValueError if it is not bound."""
        detach_tracer(self, tracer)

    _emit = emit  # call the tracers' ``hook``; one that raises is logged
    _refresh_plain = refresh_plain  # after turning a feature on or off (see machine.plain)

    @property
    def history(self) -> History | None:
        """The transition history kept since ``keep_history``, or None (off by default)."""
        return find_history(self._tracers)

    def keep_history(self, size: int = 1000) -> History:
        """Keep the last ``size`` transitions and the last errors (``machine.history.History``); idempotent."""
        return keep_history(self, size)

    # ------------------------------------------------------------------ logging

    def _log(self, level: int, msg: str) -> None:
        if level <= self._log_level:
            self._logger.info("%s%s", self._log_prefix, msg)

    def log(self, msg: str, *args: Any) -> None:
        """Log ``[exter] msg`` (``%``-formatted with ``args``) at level EXTERNAL."""
        if self._log_level >= LogLevel.EXTERNAL:
            text = (msg % args) if args else msg
            self._log(LogLevel.EXTERNAL, "[exter] " + text.replace("\n", " "))

    # ------------------------------------------------------------------ dispose

    def on_dispose(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` when the machine is disposed (at once if it is)."""
        with self._lock:
            if not self._disposed:
                if self._dispose_cbs is NO_CALLBACKS:
                    self._dispose_cbs = []
                self._dispose_cbs.append(fn)
                return
        fn()

    def dispose(self, timeout: float = 1.0) -> None:
        """Stop the machine: later mutations are canceled, waiters end, contexts end. Idempotent.

        Removes ``Start`` first when the schema has it and it is active (so its End handler can clean up).
        Waits up to ``timeout`` for a transition running on another thread to finish.
        """
        self._dispose(timeout, stop_start=True)

    def _dispose(self, timeout: float, stop_start: bool) -> None:
        dispose_machine(self, timeout, stop_start)

    # ------------------------------------------------------------------ clocks, export, import, schema

    def export(self) -> dict[str, Any]:
        """``{"id", "state_names", "time", "queue_tick", "machine_tick"}``: msgpack- and JSON-safe."""
        return persistence.export(self)

    def import_data(self, data: Mapping[str, Any]) -> None:
        """Restore clocks from ``export()`` output of a machine with the same id and schema.

        Sets ``machine_tick`` to the exported one + 1 and adds ``MachineRestored`` when the schema has it.
        Raises SchemaError on an id or schema mismatch, or when called during a transition.
        """
        persistence.import_data(self, data)

    @classmethod
    def from_export(cls, data: Mapping[str, Any], schema: Mapping[str, State | Mapping[str, Any]],
                    **kwargs: Any) -> Machine:
        """A new machine with ``data["id"]`` and the exported clocks."""
        mach = cls(schema, id=data["id"], **kwargs)
        mach.import_data(data)
        return mach

    def set_schema(self, schema: Mapping[str, State | Mapping[str, Any]]) -> None:
        """Replace the schema with a larger one that keeps every current state.

        Existing states keep their ticks, new states start at 0, Exception is not added, pending waiters stay.
        Raises SchemaError during a transition, when the new schema is not larger, or on parse errors.
        """
        persistence.set_schema(self, schema)
