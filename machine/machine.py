"""``Machine``: a relational, multi-state, clock-based state machine with a queue of mutations."""

from __future__ import annotations

import random as _random
import sys
import threading
import time as _time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import HandlerTimeoutError, SchemaError, StateError
from .handlers import Binding
from .log import LogLevel, machine_logger, parse_level
from .mutation import Mutation, MutationType, Result
from .resolver import (
    STATE,
    BoundFin,
    BoundNeg,
    Plan,
    _enters_exits,
    auto_states,
    final_handlers,
    make_plan,
    resolve,
)
from .schema import EXCEPTION, Compiled, State, compiled_for, normalize
from .signals import Ctx, Waiter, resolved_waiter
from .subscriptions import Clock, Subscriptions
from .tracer import Tracer
from .transition import Event, Transition
from .worker import HandlerWorker, Job

ADD, REMOVE, SET, EVAL = MutationType.ADD, MutationType.REMOVE, MutationType.SET, MutationType.EVAL
EXECUTED, CANCELED, QUEUED = Result.EXECUTED, Result.CANCELED, Result.QUEUED
_PLAN_CACHE_MAX = 4096
_get_ident = threading.get_ident


class _Panic:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_TIMEOUT = object()

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures
    import logging


def _trace_text(err: BaseException) -> str:
    """The formatted traceback of ``err`` (traceback is imported on first use: only errors need it)."""
    import traceback

    return "".join(traceback.format_exception(err))


def _is_cancel(err: BaseException) -> bool:
    """True for exactly a cancellation (asyncio's or concurrent.futures'), without importing either."""
    for mod, name in (("asyncio", "CancelledError"), ("concurrent.futures", "CancelledError")):
        m = sys.modules.get(mod)
        if m is not None and type(err) is getattr(m, name):
            return True
    return False
_NO_FINALS: list[Any] = []
_NO_TRACERS: list[Tracer] = []  # shared while a machine has none; binding replaces the list
_NO_HOOKS: dict[str, list[Callable[..., Any]]] = {}
_HOOK_NAMES = tuple(n for n in vars(Tracer) if not n.startswith("_"))


def _hooks_of(tracers: list[Tracer]) -> dict[str, list[Callable[..., Any]]]:
    """Bound tracer methods by hook name, only those a subclass overrides (the rest are no-ops)."""
    hooks: dict[str, list[Callable[..., Any]]] = {}
    for t in tracers:
        for name in _HOOK_NAMES:
            if getattr(type(t), name, None) is not getattr(Tracer, name):
                hooks.setdefault(name, []).append(getattr(t, name))
    return hooks


def _fmt_args(args: Mapping[str, Any] | None, max_len: int = 20) -> str:
    if not args:
        return ""
    parts = []
    for k in sorted(args):
        if k in ("err_trace",):
            continue
        v = str(args[k])
        if len(v) > max_len:
            v = v[: max_len - 3] + "..." if max_len >= 5 else v[:max_len]
        parts.append(f"{k}={v}")
    return f" ({' '.join(parts)})" if parts else ""


class Machine:
    """A state machine: states that may be active together, linked by relations, with per-state clocks.

    Every public method is safe to call from any thread. Mutations made while a transition runs (from a
    handler or another thread) are queued and return their queue tick; the thread that holds the queue drains
    it in order.
    """

    __slots__ = (
        "_active",
        "_appended",
        "_bind_seq",
        "_bind_version",
        "_bindings",
        "_bound",
        "_c",
        "_ctx_obj",
        "_dispose_cbs",
        "_disposed",
        "_disposed_waiter_obj",
        "_disposing",
        "_done_tick",
        "_err",
        "_handler_timeout",
        "_handler_deadline",
        "_handler_backoff",
        "_backoff_until",
        "_worker",
        "_id",
        "_internal_errors",
        "_lock",
        "_log_level",
        "_log_prefix",
        "_logger_obj",
        "_loop",
        "_machine_tick",
        "_parent_id",
        "_processing",
        "_queue",
        "_queue_limit",
        "_queue_tick",
        "_runner",
        "_state_ctxs",
        "_subs",
        "_tags",
        "_time",
        "_tracers",
        "_hooks",
        "_tx",
        "_tx_seq",
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
        self._tags = list(dict.fromkeys(tags)) if tags else []
        self._log_level = parse_level(log_level)
        self._logger_obj: logging.Logger | None = None
        self._log_prefix = f"[{self._id[:5]}] "
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
        n = len(self._c.names)
        self._time: list[int] = [0] * n
        self._active: tuple[str, ...] = ()
        self._lock = threading.RLock()
        self._queue: deque[Mutation] = deque()
        self._processing = False
        self._runner: int | None = None
        self._appended = 0  # appended mutations so far; the k-th gets queue tick k + 1
        self._queue_tick = 1
        self._done_tick = 1  # queue tick of the last appended mutation processed
        self._machine_tick = 0
        self._tx: Transition | None = None
        self._tx_seq = 0
        # handlers of the bound objects per plan: plan -> (bind version, negotiation, finals)
        self._bound: dict[Plan, tuple[int, BoundNeg, BoundFin]] = {}
        self._bindings: list[Binding] = []
        self._bind_seq = 0
        self._bind_version = 0
        self._tracers: list[Tracer] = list(tracers) if tracers else _NO_TRACERS
        # the tracer methods that are overridden, by hook name: empty when no tracer wants anything
        self._hooks: dict[str, list[Callable[..., Any]]] = _hooks_of(self._tracers) if tracers else _NO_HOOKS
        self._subs = Subscriptions(self._lock)
        self._state_ctxs: dict[str, Ctx] = {}
        self._ctx_obj: Ctx | None = None  # created on first use, like the rest below
        self._err: BaseException | None = None
        self._internal_errors: deque[BaseException] | None = None
        self._disposing = False
        self._disposed = False
        self._dispose_cbs: list[Callable[[], Any]] = []
        self._disposed_waiter_obj: Waiter | None = None
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
        if c is None:
            with self._lock:
                c = self._ctx_obj
                if c is None:
                    c = self._ctx_obj = Ctx()
                    if self._disposed:
                        c.cancel()
        return c

    @property
    def _disposed_waiter(self) -> Waiter:
        w = self._disposed_waiter_obj
        if w is None:
            with self._lock:
                w = self._disposed_waiter_obj
                if w is None:
                    w = self._disposed_waiter_obj = Waiter()
                    if self._disposed:
                        w._resolve(True)
        return w

    @property
    def log_level(self) -> LogLevel:
        """The current log level."""
        return self._log_level

    @log_level.setter
    def log_level(self, value: int | str | LogLevel) -> None:
        self._log_level = parse_level(value)
        self._logger_obj = machine_logger(self._id, self._log_level)

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

    # ------------------------------------------------------------------ name checks

    def _called(self, states: tuple[Any, ...]) -> tuple[str, ...]:
        index = self._c.index
        for s in states:
            if s not in index:
                self._unknown(states)
        if len(states) > 1 and len(set(states)) != len(states):
            return tuple(dict.fromkeys(states))
        return states

    def _unknown(self, states: Iterable[Any]) -> None:
        index = self._c.index
        bad = []
        for s in states:
            if not isinstance(s, str):
                raise TypeError(f"state names are str, got {type(s).__name__} (machine {self._id})")
            if s not in index:
                bad.append(s)
        raise StateError(dict.fromkeys(bad), self._id)

    def _check_names(self, states: Iterable[str]) -> None:
        index = self._c.index
        for s in states:
            if s not in index:
                self._unknown(states)

    # ------------------------------------------------------------------ checks

    def is_active(self, *states: str) -> bool:
        """True when all of ``states`` are active (lenient: an unknown state is inactive)."""
        index, t = self._c.index, self._time
        for s in states:
            i = index.get(s)
            if i is None:
                self._log(LogLevel.EVERYTHING, f"[is] state {s} not found")
                return False
            if not t[i] & 1:
                return False
        return True

    def any_active(self, *states: str) -> bool:
        """True when at least one of ``states`` is active."""
        index, t = self._c.index, self._time
        for s in states:
            i = index.get(s)
            if i is not None and t[i] & 1:
                return True
        return False

    def not_active(self, *states: str) -> bool:
        """True when none of ``states`` is active. Raises StateError for unknown states."""
        self._check_names(states)
        index, t = self._c.index, self._time
        return not any(t[index[s]] & 1 for s in states)

    def has(self, *states: str) -> bool:
        """True when all of ``states`` are in the schema."""
        return all(s in self._c.index for s in states)

    def is_err(self) -> bool:
        """True while Exception is active."""
        return self.is_active(EXCEPTION)

    def is_time(self, time: Iterable[int], states: Iterable[str] | None = None) -> bool:
        """True when the ticks of ``states`` (default: all, in index order) equal ``time``."""
        return self._cmp_time(time, states, exact=True)

    def was_time(self, time: Iterable[int], states: Iterable[str] | None = None) -> bool:
        """True when each tick of ``states`` is >= the matching value of ``time``."""
        return self._cmp_time(time, states, exact=False)

    def _cmp_time(self, time: Iterable[int], states: Iterable[str] | None, exact: bool) -> bool:
        names = list(states) if states is not None else list(self._c.names)
        self._check_names(names)
        want = list(time)
        if len(want) != len(names):
            return False
        have = self.time(*names)
        if exact:
            return have == want
        return all(h >= w for h, w in zip(have, want, strict=True))

    def is_clock(self, clock: Mapping[str, int]) -> bool:
        """True when every state's tick equals ``clock[state]``."""
        return all(self.tick(s) == v for s, v in clock.items())

    def was_clock(self, clock: Mapping[str, int]) -> bool:
        """True when every state's tick is >= ``clock[state]``."""
        return all(self.tick(s) >= v for s, v in clock.items())

    def will_be(self, *states: str) -> bool:
        """True when a queued add or set names all of ``states``."""
        self._check_names(states)
        with self._lock:
            for m in self._queue:
                if m.type in (ADD, SET) and not m.is_check and all(s in m.called for s in states):
                    return True
        return False

    # ------------------------------------------------------------------ getters

    def active_states(self, *states: str) -> list[str]:
        """Active states in index order, optionally only those among ``states``."""
        self._check_names(states)
        t, names = self._time, self._c.names
        if states:
            index = self._c.index
            return [s for s in sorted(set(states), key=index.__getitem__) if t[index[s]] & 1]
        return [n for i, n in enumerate(names) if t[i] & 1]

    def tick(self, state: str) -> int:
        """The state's tick (odd = active); 0 for an unknown state."""
        i = self._c.index.get(state)
        return 0 if i is None else self._time[i]

    def time(self, *states: str) -> list[int]:
        """Ticks of ``states`` (default: all, in index order)."""
        if self._disposed:
            return []
        t = self._time
        if not states:
            return list(t)
        self._check_names(states)
        index = self._c.index
        return [t[index[s]] for s in states]

    def clock(self, *states: str) -> dict[str, int]:
        """``{state: tick}`` for ``states`` (default: all)."""
        if self._disposed:
            return {}
        names = states or self._c.names
        self._check_names(names)
        t, index = self._time, self._c.index
        return {s: t[index[s]] for s in names}

    def index(self, state: str) -> int:
        """The state's position in the schema; -1 when unknown."""
        return self._c.index.get(state, -1)

    def switch(self, *states: str) -> str | None:
        """The first of ``states`` that is active, or None."""
        self._check_names(states)
        t, index = self._time, self._c.index
        for s in states:
            if t[index[s]] & 1:
                return s
        return None

    def __str__(self) -> str:
        if self._disposed:
            return ""
        t = self._time
        return "(" + " ".join(f"{n}:{t[i]}" for i, n in enumerate(self._c.names) if t[i] & 1) + ")"

    def __repr__(self) -> str:
        return f"<Machine {self._id} {self}>"

    def string_all(self) -> str:
        """``(Foo:1) [Bar:0 Baz:2]``: active states, then the inactive ones, with ticks, in index order."""
        if self._disposed:
            return ""
        t, names = self._time, self._c.names
        on = " ".join(f"{n}:{t[i]}" for i, n in enumerate(names) if t[i] & 1)
        off = " ".join(f"{n}:{t[i]}" for i, n in enumerate(names) if not t[i] & 1)
        return f"({on}) [{off}]"

    def inspect(self, *states: str) -> str:
        """A block per state: active flag and name, tick, then the flags and relations that are set."""
        self._check_names(states)
        if self._disposed:
            return ""
        out = []
        t, index, schema = self._time, self._c.index, self._c.schema
        for name in states or self._c.names:
            st = schema[name]
            tick = t[index[name]]
            out.append(f"{tick & 1} {name}\n")
            out.append(f"    |{'Tick':<9}{tick}\n")
            if st.auto:
                out.append(f"    |{'Auto':<9}true\n")
            if st.multi:
                out.append(f"    |{'Multi':<9}true\n")
            for label, rel in (("Add", st.add), ("Require", st.require), ("Remove", st.remove),
                               ("After", st.after)):
                if rel:
                    out.append(f"    |{label:<9}{' '.join(rel)}\n")
        return "".join(out)

    # ------------------------------------------------------------------ mutations

    def add(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Activate ``states`` (and what they add), keeping the other active states when relations allow.

        Returns EXECUTED, CANCELED, or a queue tick (>= QUEUED) when the mutation was queued.
        Raises StateError for an unknown state, before anything changes.
        """
        return self._mutate(ADD, states, args)

    def remove(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Deactivate ``states`` (and what requires them). Returns as ``add``."""
        return self._mutate(REMOVE, states, args)

    def set(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Make ``states`` (and what they add) the only active states. Returns as ``add``."""
        return self._mutate(SET, states, args)

    def toggle(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """``remove`` when all of ``states`` are active, otherwise ``add``."""
        self._called(states)
        if states and self.is_active(*states):
            return self._mutate(REMOVE, states, args)
        return self._mutate(ADD, states, args)

    def _mutate(self, mtype: MutationType, states: tuple[str, ...], args: Mapping[str, Any] | None) -> int:
        c = self._c
        index = c.index
        for s in states:
            if s not in index:
                self._unknown(states)
        called = states if len(states) < 2 or len(set(states)) == len(states) else tuple(dict.fromkeys(states))
        a = None if args is None else self._args(args)
        if self._disposing or (self._backoff_until and self._in_backoff()):
            return CANCELED
        with self._lock:
            q = self._queue
            running = self._processing
            if not running and not q:
                # idle: this thread runs the mutation at once (it counts as appended and dequeued)
                self._processing = True
                self._runner = _get_ident()
                self._appended += 1
                self._queue_tick += 1
                m = Mutation(mtype, called, a, queue_tick=self._appended + 1)
            else:
                if len(q) >= self._queue_limit:
                    # while Exception can still change, a mutation that names it gets through a full queue
                    exc_on = bool(self._time[index[EXCEPTION]] & 1) if EXCEPTION in index else False
                    if not (EXCEPTION in called and (
                            (mtype == ADD and not exc_on) or (mtype == REMOVE and exc_on))):
                        self._log(LogLevel.OPS, f"[queue:full] [{mtype}] {' '.join(called)}")
                        return CANCELED
                if mtype == REMOVE and running and not q and not self.any_active(*called):
                    return EXECUTED
                if q and not a and not any(s in c.multi for s in called):
                    for qm in q:
                        if (qm.type == mtype and not qm.is_check and len(qm.called) == len(called)
                                and all(s in qm.called for s in called)):
                            self._log(LogLevel.OPS, f"[queue:skipped] Duplicate detected for [{mtype}] "
                                                    f"{' '.join(called)}")
                            return EXECUTED
                self._appended += 1
                tick = self._appended + 1
                m = Mutation(mtype, called, a, queue_tick=tick)
                q.append(m)
                self._queued(m)
                if running:
                    if self._log_level >= LogLevel.OPS:
                        n = len(q)
                        self._log(LogLevel.OPS, f"[postpone] queue running ({n} item{'s' if n != 1 else ''})")
                    return tick
                self._processing = True
                self._runner = _get_ident()
                return self._drain()
        if self._log_level or "mutation_queued" in self._hooks:
            self._queued(m)
        return self._drain(m)

    def _in_backoff(self) -> bool:
        if _time.monotonic() < self._backoff_until:
            return True
        self._backoff_until = 0.0
        return False

    def _queued(self, m: Mutation) -> None:
        if self._log_level >= LogLevel.OPS:
            self._log(LogLevel.OPS, f"[queue:{m.type}] {' '.join(m.called)}{_fmt_args(m.args)}")
        self._emit("mutation_queued", self, m)

    @staticmethod
    def _args(args: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if not args:
            if args is None or isinstance(args, Mapping):
                return None
            raise TypeError(f"args must be a dict, got {type(args).__name__}")
        if not isinstance(args, Mapping):
            raise TypeError(f"args must be a dict, got {type(args).__name__}")
        return dict(args)

    def add_err(self, err: BaseException | None, args: Mapping[str, Any] | None = None) -> int:
        """Record ``err`` and add Exception with ``err`` and ``err_trace`` in the args."""
        return self.add_err_state(EXCEPTION, err, args)

    def add_err_state(self, state: str, err: BaseException | None,
                      args: Mapping[str, Any] | None = None) -> int:
        """Record ``err`` and add ``state`` together with Exception.

        CANCELED when disposing, when the queue is full, when ``err`` is None or a cancellation.
        """
        return self._add_err(state, err, args, False)

    def _add_err(self, state: str, err: BaseException | None, args: Mapping[str, Any] | None,
                 force: bool) -> int:
        self._called((state,))
        a = self._args(args) or {}
        if self._disposing or (not force and self._backoff_until and self._in_backoff()) or err is None or _is_cancel(
                err):
            return CANCELED
        if not isinstance(err, BaseException):
            raise TypeError(f"err must be an exception, got {type(err).__name__}")
        called = (state,) if state == EXCEPTION else (state, EXCEPTION)
        if EXCEPTION not in self._c.index:
            called = (state,)
        a.setdefault("err", err)
        a.setdefault("err_trace", _trace_text(err))
        with self._lock:
            if len(self._queue) >= self._queue_limit:
                return CANCELED
            self._err = err
            self._appended += 1
            tick = self._appended + 1
            m = Mutation(ADD, called, a, queue_tick=tick)
            self._queue.append(m)
            if "mutation_queued" in self._hooks:
                self._emit("mutation_queued", self, m)
            if self._processing:
                return tick
            self._processing = True
            self._runner = _get_ident()
        return self._drain()

    def can_add(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Dry run of ``add``: resolves relations and runs negotiation handlers, applies nothing."""
        return self._check(ADD, states, args)

    def can_remove(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Dry run of ``remove``."""
        return self._check(REMOVE, states, args)

    def _check(self, mtype: MutationType, states: tuple[str, ...], args: Mapping[str, Any] | None) -> int:
        called = self._called(states)
        a = self._args(args)
        if self._disposing:
            return CANCELED
        m = Mutation(mtype, called, a, is_check=True)
        return self._run_prepended(m, 1.0)

    def _run_prepended(self, m: Mutation, timeout: float) -> int:
        """Prepend ``m``; run it now when idle, wait for it when another thread runs the queue."""
        with self._lock:
            if self._processing:
                if self._on_runner():
                    # from a handler: it runs after the current transition; the caller can't wait for it
                    self._queue.appendleft(m)
                    return QUEUED
                m.done = threading.Event()
                self._queue.appendleft(m)
                claimed = False
            else:
                self._queue.appendleft(m)
                self._processing = True
                self._runner = _get_ident()
                claimed = True
        if claimed:
            self._drain()
            return m.result
        assert m.done is not None
        if not m.done.wait(timeout):
            with self._lock:
                try:
                    self._queue.remove(m)
                except ValueError:
                    pass
            return CANCELED
        return m.result

    def eval(self, fn: Callable[[], Any], timeout: float = 1.0) -> bool:
        """Run ``fn()`` serialised with transitions.

        True when it ran; False when it could not: called from a handler of this machine, disposed, timeout.
        ``fn``'s return value is discarded; an exception it raises goes to ``add_err``.
        """
        if self._disposing:
            return False
        if self._on_runner():
            self._log(LogLevel.OPS, "[eval] nested eval refused (called from a handler)")
            return False
        m = Mutation(EVAL, (), None, fn=fn)
        return self._run_prepended(m, timeout) == EXECUTED

    # ------------------------------------------------------------------ the queue runner

    def _drain(self, m: Mutation | None = None) -> int:
        """Run ``m`` (already counted as dequeued), then the queue until it is empty.

        The calling thread holds the processing flag; it is released here, under the lock, once the queue is
        empty, so a mutation appended meanwhile is never left behind.
        """
        first: int | None = None
        lock, q, subs = self._lock, self._queue, self._subs
        try:
            while True:
                if m is None:
                    with lock:
                        if not q or self._disposing:
                            if self._disposing:
                                self._cancel_queue()  # its waiters are cancelled by the dispose
                            self._processing = False
                            self._runner = None
                            self._tx = None
                            break
                        m = q.popleft()
                        if m.queue_tick:
                            self._queue_tick += 1
                if m.type is not EVAL and (m.ctx is None or not m.ctx.done):
                    r = self._transition(m)
                else:
                    r = self._run_other(m)
                m.result = r
                if m.done is not None:
                    m.done.set()
                if first is None:
                    first = r
                if m.queue_tick:
                    self._done_tick = m.queue_tick
                    if subs.queue:
                        self._resolve_queue_waiters()
                m = None
        except BaseException:
            with lock:
                self._processing = False
                self._runner = None
                self._tx = None
            raise
        if "queue_end" in self._hooks:
            self._emit("queue_end", self)
        if self._disposing and not self._disposed:
            self._finish_dispose()
        return CANCELED if first is None else first

    def _cancel_queue(self) -> bool:
        """Drop the queue (the lock held). Each dropped mutation counts as dequeued, so queue ticks stay in step
        with the ticks already handed out; returns True when queue waiters may be due (resolve them unlocked)."""
        ticked = False
        for m in self._queue:
            m.result = CANCELED
            if m.queue_tick:
                self._queue_tick += 1
                self._done_tick = m.queue_tick
                ticked = True
            if m.done is not None:
                m.done.set()
        self._queue.clear()
        return ticked

    def _run_other(self, m: Mutation) -> int:
        """An eval, or a mutation whose ctx ended (skipped)."""
        if m.ctx is not None and m.ctx.done:
            return CANCELED
        assert m.fn is not None
        try:
            m.fn()
        except Exception as exc:
            self._log(LogLevel.OPS, f"[eval] raised {exc!r}")
            self.add_err(exc)
        return EXECUTED

    def _transition(self, m: Mutation) -> int:
        """Apply one mutation: resolve, negotiate, apply, run final handlers (spec section 6)."""
        before = self._active
        c = self._c
        key = (m.type, m.called, before, m.is_auto, m.is_check)
        plan: Plan | None = c.plans.get(key)
        if plan is None:
            if len(c.plans) >= _PLAN_CACHE_MAX:
                c.plans.clear()
            plan = c.plans[key] = make_plan(c, m.type, m.called, before, m.is_auto, m.is_check)
        self._tx_seq += 1
        tx = Transition(self, self._tx_seq, m, plan, before, self._time)
        self._tx = tx
        if self._log_level >= LogLevel.OPS:
            kind = f"{m.type}:auto" if m.is_auto else (f"{m.type}:check" if m.is_check else str(m.type))
            self._log(LogLevel.OPS, f"[{kind}] {' '.join(m.called)}{_fmt_args(m.args)}")
            for lvl, line in plan.log:
                self._log(lvl, line)
        tracers = self._hooks
        if tracers:  # each hook checked by name: a tracer usually overrides one or two of them
            if "transition_init" in tracers:
                self._emit("transition_init", tx)
            if "transition_start" in tracers:
                self._emit("transition_start", tx)
        accepted = plan.accepted
        if accepted and self._bindings:
            accepted = self._negotiate(tx, plan)
        if m.is_check or not accepted:
            tx.is_accepted = accepted
            tx.is_completed = True
            if "transition_end" in self._hooks:
                self._emit("transition_end", tx)
            self._tx = None
            return EXECUTED if m.is_check and accepted else CANCELED
        changed = self._apply(tx, plan)
        tx.is_completed = True
        if not tx.is_accepted:  # a final handler failed
            if "transition_end" in self._hooks:
                self._emit("transition_end", tx)
            self._tx = None
            return CANCELED
        if changed and c.auto_names and not m.is_auto and not plan.health and not self._disposing:
            active = self._active
            entry = c.autos.get(active)
            if entry is None:
                auto = auto_states(c, active)
                # an auto transition that its relations reject has no effect: nobody needs to run it
                viable = bool(auto) and make_plan(c, ADD, auto, active, True, False).accepted
                entry = c.autos[active] = (auto, viable)
            auto, viable = entry
            if auto and (viable or self._hooks or self._log_level >= LogLevel.OPS):
                self._log(LogLevel.OPS, f"[auto] {' '.join(auto)}")
                self._log(LogLevel.OPS, f"[prepend:add] {' '.join(auto)}")
                am = Mutation(ADD, auto, None, is_auto=True)
                with self._lock:
                    self._queue.appendleft(am)
                if "mutation_queued" in self._hooks:
                    self._emit("mutation_queued", self, am)
        if "transition_end" in self._hooks:
            self._emit("transition_end", tx)
        self._tx = None
        # final handlers only queue, so the target is still active: only auto needs a check (spec 6.7)
        if m.is_auto:
            return EXECUTED if len(tx.target) > len(before) else CANCELED
        return EXECUTED

    def _bound_for(self, plan: Plan) -> tuple[int, BoundNeg, BoundFin]:
        entry = self._bound.get(plan)
        if entry is None or entry[0] != self._bind_version:
            neg: BoundNeg = []
            bindings = self._bindings
            for name, owner in plan.neg:
                calls = [(b, b.handlers[name]) for b in bindings if name in b.handlers]
                if calls:
                    neg.append((name, owner, calls))
            entry = (self._bind_version, neg, self._bind_finals(plan.fin))
            if len(self._bound) >= _PLAN_CACHE_MAX:
                self._bound.clear()
            self._bound[plan] = entry
        return entry

    def _negotiate(self, tx: Transition, plan: Plan) -> bool:
        """Run Exit, Enter, self, pair and AnyEnter handlers; False cancels (spec section 6)."""
        m = tx.mutation
        is_auto = m.is_auto
        rejected = tx._rejected
        for name, owner, calls in self._bound_for(plan)[1]:
            if rejected is not None and owner in rejected:
                continue
            if name == "AnyEnter" and is_auto and rejected is not None:
                # an auto transition whose target emptied is canceled before AnyEnter
                if not [s for s in tx.target if s not in rejected]:
                    self._log(LogLevel.OPS, "[cancel] () by auto")
                    return False
            for binding, fn in calls:
                ret = self._call(tx, binding, name, fn, owner)
                if ret is None or ret is True:
                    continue
                if isinstance(ret, _Panic):
                    self._panic(tx, ret.exc, final=False)
                    return False
                if ret is _TIMEOUT:
                    self._log(LogLevel.OPS, f"[cancel] ({' '.join(tx.target)}) by timeout")
                    return False
                if ret is False:
                    if is_auto and owner is not None and owner in m.called:
                        # partial acceptance: only this auto state leaves the target
                        if rejected is None:
                            rejected = tx._rejected = set()
                        rejected.add(owner)
                        self._log(LogLevel.OPS, f"[cancel] ({' '.join(tx.target)}) by {name}")
                        break
                    self_h = owner is not None and name == owner + owner
                    tag = "cancel:self" if self_h else "cancel"
                    self._log(LogLevel.OPS, f"[{tag}] ({' '.join(tx.target)}) by {name}")
                    return False
        if rejected is not None and not [s for s in tx.target if s not in rejected]:
            return False
        return True

    def _bind_finals(self, fin: tuple[tuple[str, str, int], ...]) -> BoundFin:
        """Final handlers found on the bindings (names without any handler are left out)."""
        out: BoundFin = []
        bindings = self._bindings
        for name, state, kind in fin:
            calls = [(b, b.handlers[name]) for b in bindings if name in b.handlers]
            if calls:
                out.append((name, state, kind, calls))
        calls = [(b, b.handlers["AnyState"]) for b in bindings if "AnyState" in b.handlers]
        if calls:
            out.append(("AnyState", "", -1, calls))
        return out

    def _call(self, tx: Transition, binding: Binding, name: str, fn: Callable[..., Any],
              state: str | None) -> Any:
        """Call one handler; returns its result, a _Panic, or _TIMEOUT."""
        if self._log_level >= LogLevel.OPS:
            self._log(LogLevel.OPS, f"[handler:{binding.seq}] {name}")
        tracers = self._hooks
        if "handler_start" in tracers:
            self._emit("handler_start", tx, binding.name, name)
        e = Event(name, tx, state)
        timeout = self._handler_timeout
        if self._worker is not None:
            ret = self._call_on_worker(fn, e, name, binding)
        else:
            try:
                if timeout:
                    t0 = _time.perf_counter()
                    ret = fn(e)
                    # inline: a timeout is known only once the handler returned; the transition is canceled
                    if _time.perf_counter() - t0 > timeout:
                        self._timed_out(name, binding)
                        ret = _TIMEOUT
                else:
                    ret = fn(e)
            except Exception as exc:
                ret = _Panic(exc)
        if "handler_end" in self._hooks:
            self._emit("handler_end", tx, binding.name, name)
        return ret

    def _timed_out(self, name: str, binding: Binding) -> None:
        err = HandlerTimeoutError(f"handler timeout: {name} from {binding.name}")
        if self._internal_errors is None:
            self._internal_errors = deque(maxlen=10)
        self._internal_errors.append(err)
        self._logger.warning("%s%s", self._log_prefix, err)

    def _call_on_worker(self, fn: Callable[..., Any], e: Event, name: str, binding: Binding) -> Any:
        """Run a handler on the worker thread: time it out, and abandon it past the deadline (spec 10.4)."""
        assert self._worker is not None
        job = self._worker.submit(fn, e)
        timeout = self._handler_timeout
        if job.done.wait(timeout if timeout else None):
            return _Panic(job.exc) if job.exc is not None else job.ret
        self._timed_out(name, binding)
        if not job.done.wait(max(0.0, self._handler_deadline - (timeout or 0.0))):
            self._abandon(job, name)
        return _TIMEOUT

    def _abandon(self, job: Job, name: str) -> None:
        """A handler outlived the deadline: a new worker, an empty queue, an error, then a backoff."""
        job.abandoned = True
        # reported even during the backoff: it is the end of the story the backoff started
        job.on_late = lambda: self._add_err(
            EXCEPTION, RuntimeError(f"deadlined handler finished, theoretical leak: {name}"), None, True)
        self._worker = HandlerWorker(f"am-handlers {self._id}")
        with self._lock:
            dropped = self._cancel_queue()
        if dropped and self._subs.queue:
            self._resolve_queue_waiters()
        self._log(LogLevel.OPS, f"[cancel] handler deadline: {name}, queue cleared")
        state = "ErrHandlerTimeout" if "ErrHandlerTimeout" in self._c.index else EXCEPTION
        self.add_err_state(state, HandlerTimeoutError(f"handler deadline: {name}"))
        self._backoff_until = _time.monotonic() + self._handler_backoff

    def _on_runner(self) -> bool:
        """True on the thread that runs the queue, or on its handler thread."""
        ident = _get_ident()
        w = self._worker
        return ident == self._runner or (w is not None and ident == w.ident)

    def _apply(self, tx: Transition, plan: Plan) -> bool:
        """Set the target and ticks, end state contexts, run final handlers. Returns True if ticks changed."""
        m = tx.mutation
        before = tx._before
        if tx._rejected:
            # re-resolve without the rejected auto states, which drops what they would have added
            clean = tuple(s for s in m.called if s in tx.target and s not in tx._rejected)
            target_l = resolve(self._c, ADD, clean, before, True, None)
            enters, exits, deltas = _enters_exits(self._c, target_l, before, clean)
            target = tuple(target_l)
            fin_bound = self._bind_finals(final_handlers(exits, enters))
            tx.target, tx.enters, tx.exits = target, enters, exits
        else:
            target, enters, exits, deltas = (plan.final_target, plan.final_enters, plan.final_exits,
                                             plan.final_deltas)
            fin_bound = self._bound_for(plan)[2] if self._bindings else _NO_FINALS
            if m.is_auto:
                tx.target, tx.enters, tx.exits = target, enters, exits
        if deltas:
            new_time = self._time[:]
            for i, d in deltas:
                new_time[i] += d
            with self._lock:  # waiters read ticks under the lock: see _waiter
                self._time = new_time
                self._active = target
        else:
            new_time = self._time
            self._active = target
        tx._time_after = new_time
        if deltas:
            if self._log_level >= LogLevel.CHANGES:
                self._log_state(m, enters, exits)
            if self._state_ctxs:
                for s in (*exits, *enters):
                    ctx = self._state_ctxs.pop(s, None)
                    if ctx is not None:
                        ctx.cancel()
        if "transition_finals" in self._hooks:
            self._emit("transition_finals", tx)
        ok = True
        if fin_bound:
            ok = self._finals(tx, fin_bound, enters)
        if self._subs.args_states:
            index, now = self._c.index, self._time
            for s in enters:
                if s in self._subs.args_states and now[index[s]] & 1:
                    self._match_args(s, tx.args)
        if deltas or not ok:
            self._check_subs()
        return bool(deltas)

    def _finals(self, tx: Transition, fin_bound: BoundFin, enters: tuple[str, ...]) -> bool:
        """Run End/State/AnyState handlers. False when one failed (the transition is then canceled)."""
        for name, state, kind, calls in fin_bound:
            for binding, fn in calls:
                if name in binding.async_names:
                    self._spawn(fn, Event(name, tx, state), state, kind)
                    continue
                ret = self._call(tx, binding, name, fn, state)
                if isinstance(ret, _Panic) or ret is _TIMEOUT:
                    self._recover(tx, name, state, kind, enters)
                    if isinstance(ret, _Panic):
                        self._panic(tx, ret.exc, final=True)
                    return False
        return True

    def _recover(self, tx: Transition, name: str, state: str, kind: int, enters: tuple[str, ...]) -> None:
        """A final handler failed: if it was ``<S>State``, S and the states entered after it go back."""
        self._log(LogLevel.OPS, f"[cancel] ({' '.join(tx.target)}) by recover")
        tx.is_accepted = False
        if kind != STATE or state not in enters:
            return
        undo = list(enters[enters.index(state):])
        # and whatever requires a state going back (the spec leaves those active, with a requirement unmet)
        c = self._c
        while True:
            remaining = [s for s in self._active if s not in undo]
            have = set(remaining)
            unmet = [s for s in remaining if any(r not in have for r in c.require[s])]
            if not unmet:
                break
            undo += unmet
        kept = " ".join(s for s in tx.target if s not in undo)
        self._log(LogLevel.OPS, f"[recover] partial final states as ({kept})")
        index = self._c.index
        new_time = list(self._time)
        for s in undo:
            i = index[s]
            if new_time[i] & 1:
                new_time[i] += 1
        with self._lock:
            self._time = new_time
            self._active = tuple(s for s in self._active if s not in undo)
        tx._time_after = new_time
        for s in undo:
            ctx = self._state_ctxs.pop(s, None)
            if ctx is not None:
                ctx.cancel()

    def _panic(self, tx: Transition, exc: BaseException, final: bool) -> None:
        """A handler raised: record the error and prepend Exception, unless the transition called it."""
        m = tx.mutation
        if not final:
            self._log(LogLevel.OPS, f"[cancel] ({' '.join(tx.target)}) by recover")
        if self._log_level > LogLevel.NOTHING:  # the error is in err and in Exception's args either way
            self._logger.error("%s[error:%s] %s (%r)", self._log_prefix, m.type, " ".join(m.called), exc,
                               exc_info=exc)
        if EXCEPTION in m.called or EXCEPTION not in self._c.index or self._disposing:
            return
        self._err = exc
        args = {"err": exc, "err_trace": _trace_text(exc), "panic": True}
        em = Mutation(ADD, (EXCEPTION,), args)
        with self._lock:
            self._queue.appendleft(em)
        if "mutation_queued" in self._hooks:
            self._emit("mutation_queued", self, em)

    def _spawn(self, fn: Callable[..., Any], e: Event, state: str, kind: int) -> None:
        """Run an async final handler as a task; ``<S>State`` tasks end with S's state context."""
        import asyncio

        loop = self._loop
        if loop is None or loop.is_closed():
            from .aio import background_loop

            loop = background_loop()
        fut = asyncio.run_coroutine_threadsafe(fn(e), loop)
        ctx = self.state_ctx(state) if kind == STATE and state else self._ctx
        ctx.on_done(fut.cancel)

        def done(f: concurrent.futures.Future[Any]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None and not self._disposing:
                self.add_err(exc, {"panic": True})

        fut.add_done_callback(done)

    def _log_state(self, m: Mutation, enters: tuple[str, ...], exits: tuple[str, ...]) -> None:
        parts = [f"+{s}" for s in enters] + [f"-{s}" for s in exits]
        tag = "auto_" if m.is_auto else "state"
        self._log(LogLevel.CHANGES, f"[{tag}] {' '.join(parts)}{_fmt_args(m.args)}")

    # ------------------------------------------------------------------ subscriptions

    def _check_subs(self) -> None:
        subs = self._subs
        if not (subs.when or subs.when_not or subs.when_time or subs.query):
            return  # nothing waits on the clock: no lock taken (this runs after every change of the clock)
        due: list[Waiter] = []
        with self._lock:
            if subs.clock_based:
                due = subs.due_by_clock(self._c.index, self._time)
            queries = list(subs.query.items()) if subs.query else []
        if queries:
            clock = self.clock()
            for w, fn in queries:
                try:
                    ok = bool(fn(clock))
                except Exception as exc:
                    self._log(LogLevel.OPS, f"[when_query] raised {exc!r}")
                    ok = False
                if ok:
                    due.append(w)
        for w in due:
            w._resolve(True)

    def _resolve_queue_waiters(self) -> None:
        with self._lock:
            due = self._subs.due_by_queue(self._done_tick)
        for w in due:
            w._resolve(True)

    def _match_args(self, state: str, args: dict[str, Any]) -> None:
        with self._lock:
            try:
                due = self._subs.due_by_args(state, args)
            except Exception:  # a value whose == raises does not match
                due = []
        for w in due:
            w._resolve(True)

    def _waiter(self, table: dict[Any, Any], key: Any, entry_fn: Callable[[Waiter], Any],
                ready: Callable[[], bool], ctx: Ctx | None) -> Waiter:
        if self._disposed or self._disposing:
            return resolved_waiter(False)
        if ctx is not None and ctx.done:
            return resolved_waiter(False)
        with self._lock:
            if ready():
                return resolved_waiter(True)
            existing = table.get(key)
            if existing is not None:
                w: Waiter = existing[0]
                return w
            w = Waiter()
            self._subs.register(table, key, entry_fn(w), w, ctx)
            return w

    def when(self, *states: str, ctx: Ctx | None = None) -> Waiter:
        """Resolves when all of ``states`` are active together (at once if they are)."""
        self._check_names(states)
        names = tuple(dict.fromkeys(states))
        return self._waiter(self._subs.when, (frozenset(names), ctx), lambda w: (w, names),
                            lambda: self.is_active(*names), ctx)

    def when_not(self, *states: str, ctx: Ctx | None = None) -> Waiter:
        """Resolves when all of ``states`` are inactive (at once if they are)."""
        self._check_names(states)
        names = tuple(dict.fromkeys(states))
        return self._waiter(self._subs.when_not, (frozenset(names), ctx), lambda w: (w, names),
                            lambda: not self.any_active(*names), ctx)

    def when_err(self, ctx: Ctx | None = None) -> Waiter:
        """Resolves when Exception is active."""
        return self.when(EXCEPTION, ctx=ctx)

    def when_time(self, states: Iterable[str], times: Iterable[int], ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``tick(states[i]) >= times[i]`` for every i.

        Raises ValueError when the lengths differ or are 0, StateError for an unknown state.
        """
        names, ts = tuple(states), tuple(map(int, times))
        if isinstance(states, str):
            names = (states,)
        self._check_names(names)
        if not names or len(names) != len(ts):
            raise ValueError(f"when_time: states and times must have the same length > 0 "
                             f"({len(names)} != {len(ts)}) (machine {self._id})")
        index = self._c.index

        def ready() -> bool:
            t = self._time
            for s, v in zip(names, ts, strict=True):  # same length, checked above
                if t[index[s]] < v:
                    return False
            return True

        return self._waiter(self._subs.when_time, (names, ts, ctx), lambda w: (w, names, ts), ready, ctx)

    def when_ticks(self, state: str, n: int, ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``state`` ticked ``n`` more times."""
        self._check_names((state,))
        return self.when_time((state,), (self.tick(state) + n,), ctx)

    def when_query(self, fn: Callable[[Clock], bool], ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``fn(clock)`` returns True after an accepted transition (not checked at once)."""
        if self._disposed or self._disposing or (ctx is not None and ctx.done):
            return resolved_waiter(False)
        w = Waiter()
        with self._lock:
            self._subs.query[w] = fn
            w._on_cancel = self._subs._forget
            if ctx is not None:
                w._ctx, w._ctx_cb = ctx, w.cancel
                ctx._add_callback(w.cancel)
        return w

    def when_args(self, state: str, args: Mapping[str, Any], ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``state`` is entered by a mutation whose args include ``args`` (compared with ==)."""
        self._check_names((state,))
        want = dict(args)
        try:
            key: Any = (state, frozenset(want.items()), ctx)
        except TypeError:  # unhashable values: no reuse
            key = (state, id(want), ctx)
        return self._waiter(self._subs.when_args, key, lambda w: (w, state, want), lambda: False, ctx)

    def when_queue(self, tick: int) -> Waiter:
        """Resolves when the mutation with queue tick ``tick`` was processed (at once for 0, 1 or past ticks)."""
        if tick <= self._done_tick or tick < QUEUED:
            return resolved_waiter(True)
        if self._disposed or self._disposing:
            return resolved_waiter(False)
        with self._lock:
            if tick <= self._done_tick:
                return resolved_waiter(True)
            w = Waiter()
            self._subs.queue[w] = tick
            w._on_cancel = self._subs._forget
        return w

    def when_disposed(self) -> Waiter:
        """Resolves when the machine is disposed."""
        return self._disposed_waiter

    # ------------------------------------------------------------------ contexts

    def state_ctx(self, state: str) -> Ctx:
        """A context that ends at the state's next tick change (activation, deactivation, multi re-entry)."""
        self._check_names((state,))
        if self._disposed:
            c = Ctx()
            c.cancel()
            return c
        with self._lock:
            ctx = self._state_ctxs.get(state)
            if ctx is None or ctx.done:
                ctx = self._state_ctxs[state] = Ctx(self._ctx)
            return ctx

    # ------------------------------------------------------------------ handlers and tracers

    def bind_handlers(self, obj: object) -> None:
        """Bind an object (or a dict of name -> callable) whose handler methods run on transitions.

        Several objects may be bound; they run in bind order for each handler name.
        """
        b = Binding(obj, self._bind_seq, self._c.index)
        with self._lock:
            self._bind_seq += 1
            self._bindings = [*self._bindings, b]
            self._bind_version += 1

    def detach_handlers(self, obj: object) -> None:
        """Unbind a previously bound object. Raises ValueError if it is not bound."""
        with self._lock:
            kept = [b for b in self._bindings if b.obj is not obj]
            if len(kept) == len(self._bindings):
                raise ValueError(f"handlers not bound: {obj!r} (machine {self._id})")
            self._bindings = kept
            self._bind_version += 1

    def bind_tracer(self, tracer: Tracer) -> None:
        """Add a tracer; its hooks are called synchronously."""
        with self._lock:
            self._tracers = [*self._tracers, tracer]
            self._hooks = _hooks_of(self._tracers)

    def detach_tracer(self, tracer: Tracer) -> None:
        """Remove a tracer. Raises ValueError if it is not bound."""
        with self._lock:
            if tracer not in self._tracers:
                raise ValueError(f"tracer not bound (machine {self._id})")
            self._tracers = [t for t in self._tracers if t is not tracer]
            self._hooks = _hooks_of(self._tracers)

    def _emit(self, hook: str, *args: Any) -> None:
        for fn in self._hooks.get(hook, ()):
            try:
                fn(*args)
            except Exception:
                self._logger.exception("%stracer %s raised", self._log_prefix, getattr(fn, "__qualname__", fn))

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
        if self._disposing:
            return
        if stop_start and "Start" in self._c.index and self.is_active("Start") and not self._on_runner():
            self.remove("Start")
        with self._lock:
            if self._disposing:
                return
            self._disposing = True
            if self._processing:
                on_runner = self._on_runner()
            else:
                self._processing = True
                self._runner = _get_ident()
                on_runner = None
        if on_runner is None:
            # idle: this thread finishes it
            with self._lock:
                self._cancel_queue()  # its waiters are cancelled by the dispose
            self._finish_dispose()
            with self._lock:
                self._processing = False
                self._runner = None
        elif not on_runner:
            # the runner finishes it when its transition ends
            if not self._disposed_waiter.wait(timeout):
                self._finish_dispose()
        # on the runner (from a handler): _drain finishes it

    def _finish_dispose(self) -> None:
        with self._lock:
            if self._disposed:
                return
            self._disposed = True
            waiters = self._subs.all_waiters()
            ctxs = list(self._state_ctxs.values())
            self._state_ctxs.clear()
            cbs, self._dispose_cbs = self._dispose_cbs, []
            self._bindings = []
            self._bind_version += 1
            self._time = [0] * len(self._c.names)
            self._active = ()
        self._emit("machine_dispose", self._id)
        for w in waiters:
            w.cancel()
        for c in ctxs:
            c.cancel()
        for fn in cbs:
            try:
                fn()
            except Exception:
                self._logger.exception("%son_dispose callback raised", self._log_prefix)
        if self._worker is not None:
            self._worker.stop()
        if self._ctx_obj is not None:
            self._ctx_obj.cancel()
        if self._disposed_waiter_obj is not None:
            self._disposed_waiter_obj._resolve(True)

    # ------------------------------------------------------------------ clocks set from outside

    def _set_clock(self, new_time: list[int], queue_tick: int | None = None,
                   machine_tick: int | None = None, changed: list[int] | None = None) -> None:
        """Replace the ticks (a mirror receiving its source's clock): ends the contexts of the states whose tick
        changed and resolves waiters.

        ``changed``: the indexes whose tick differs, when the caller knows them (a diff), in ascending order and
        without repeats; then ``new_time`` is taken as is, not copied."""
        names = self._c.names
        if len(new_time) != len(names):
            raise SchemaError(f"schema error: clock of {len(new_time)} states for {len(names)} (machine {self._id})")
        with self._lock:
            old = self._time
            if changed is None:
                changed = [i for i in range(len(names)) if old[i] != new_time[i]]
                new_time = list(new_time)
            self._time = new_time
            for i in changed:
                if (old[i] ^ new_time[i]) & 1:  # a state switched (not only a multi state re-entered)
                    self._active = tuple(n for j, n in enumerate(names) if new_time[j] & 1)
                    break
            if queue_tick is not None:
                # the source's queue: what it dequeued is done there, so when_queue can resolve here
                self._queue_tick = self._done_tick = queue_tick
            if machine_tick is not None:
                self._machine_tick = machine_tick
            ctxs = []
            if self._state_ctxs:
                for i in changed:
                    c = self._state_ctxs.pop(names[i], None)
                    if c is not None:
                        ctxs.append(c)
        for c in ctxs:
            c.cancel()
        if changed:
            self._check_subs()
        if self._subs.queue:
            self._resolve_queue_waiters()

    # ------------------------------------------------------------------ export, import, schema

    def export(self) -> dict[str, Any]:
        """``{"id", "state_names", "time", "queue_tick", "machine_tick"}``: msgpack- and JSON-safe."""
        return {
            "id": self._id,
            "state_names": list(self._c.names),
            "time": list(self._time),
            "queue_tick": self._queue_tick,
            "machine_tick": self._machine_tick,
        }

    def import_data(self, data: Mapping[str, Any]) -> None:
        """Restore clocks from ``export()`` output of a machine with the same id and schema.

        Sets ``machine_tick`` to the exported one + 1 and adds ``MachineRestored`` when the schema has it.
        Raises SchemaError on an id or schema mismatch, or when called during a transition.
        """
        if data.get("id") != self._id:
            raise SchemaError(f"import ID mismatch: {data.get('id')!r} != {self._id!r}")
        names = list(data.get("state_names") or [])
        times = list(data.get("time") or [])
        if len(names) != len(self._c.names) or len(times) != len(names):
            raise SchemaError("schema error: importing diff state len")
        for n in names:
            if n not in self._c.index:
                raise SchemaError(f"state unknown: {n}")
        if any(not isinstance(t, int) or t < 0 for t in times):
            raise SchemaError("schema error: ticks must be non-negative ints")
        with self._lock:
            if self._processing:
                raise SchemaError("schema error: cannot import during a transition")
            new_time = [0] * len(self._c.names)
            for n, t in zip(names, times, strict=True):
                new_time[self._c.index[n]] = t
            self._time = new_time
            self._active = tuple(n for i, n in enumerate(self._c.names) if new_time[i] & 1)
            self._machine_tick = int(data.get("machine_tick") or 0) + 1
            ctxs = list(self._state_ctxs.values())
            self._state_ctxs.clear()
        for c in ctxs:
            c.cancel()
        self._check_subs()
        if "MachineRestored" in self._c.index:
            self.add("MachineRestored")

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
        new = normalize(schema, add_exception=False)
        old_names = self._c.names
        if len(new) <= len(old_names):
            raise SchemaError(f"schema error: new schema too short (> {len(old_names)} states)")
        missing = [n for n in old_names if n not in new]
        if missing:
            raise SchemaError(f"schema error: new schema lacks states: {' '.join(missing)}")
        compiled = Compiled(new, self._c.topo)
        if compiled.errors:
            raise SchemaError("; ".join(compiled.errors))
        with self._lock:
            if self._processing:
                raise SchemaError("schema error: cannot set schema during a transition")
            old_schema = dict(self._c.schema)
            old_index = self._c.index
            new_time = [0] * len(compiled.names)
            for n, i in compiled.index.items():
                j = old_index.get(n)
                if j is not None:
                    new_time[i] = self._time[j]
            self._c = compiled
            self._time = new_time
            self._bound = {}
            self._bindings = [Binding(b.obj, b.seq, compiled.index) for b in self._bindings]
            self._bind_version += 1
        self._emit("schema_change", self, old_schema)
