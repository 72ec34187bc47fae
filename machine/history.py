"""Transition history: a bounded ring of what happened to a machine, and its last errors.

``History`` is a tracer. ``Machine.keep_history(n)`` binds one (``expose`` does it for served machines); records
are plain data (JSON- and msgpack-safe), made on the machine's thread when a transition ends.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .errors import trace_text
from .tracer import Tracer
from .transition import tick_changes

_perf, _wall = time.perf_counter, time.time  # (module globals: one lookup each on the hot path)

if TYPE_CHECKING:
    from .machine import Machine
    from .transition import Transition

#: Limits that keep one record small whatever the args hold.
MAX_STR = 200
MAX_ITEMS = 20
MAX_DEPTH = 3
MAX_TRACE = 4000
MAX_ERRORS = 20
MAX_BYTES = 2000  # about how much of a record the args may take

#: Who is mutating, for the ``source`` of history records: a transport sets it (e.g. ``session rc-1a2b``) while
#: it calls a machine; None (the default) means local code.
SOURCE: ContextVar[str | None] = ContextVar("am_history_source", default=None)
_MAX_SOURCES = 1024  # queued mutations whose source is held until they run


def clip(text: str, limit: int = MAX_STR) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how much was cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more)"


def plain(value: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
    """A small, JSON- and msgpack-safe copy of ``value``: strings clipped, containers cut to ``MAX_ITEMS``,
    nesting to ``MAX_DEPTH``, anything else as its (clipped) repr, about ``MAX_BYTES`` in all. Never raises."""
    if budget is None:
        budget = [MAX_BYTES]
    if budget[0] <= 0:
        return "..."
    if value is None or isinstance(value, bool | int | float):
        budget[0] -= 8
        return value
    if isinstance(value, str | bytes):
        out = clip(value if isinstance(value, str) else repr(value), min(MAX_STR, max(budget[0], 16)))
        budget[0] -= len(out)
        return out
    if depth < MAX_DEPTH:
        try:
            if isinstance(value, Mapping):
                return {clip(str(k), 60): plain(v, depth + 1, budget) for k, v in list(value.items())[:MAX_ITEMS]}
            if isinstance(value, list | tuple | set | frozenset):
                return [plain(v, depth + 1, budget) for v in list(value)[:MAX_ITEMS]]
        except Exception:
            pass
    try:
        out = clip(repr(value), min(MAX_STR, max(budget[0], 16)))
    except Exception:
        out = f"<{type(value).__name__}: repr failed>"
    budget[0] -= len(out)
    return out


def error_record(err: BaseException, trace: str | None, handler: str | None, when: float) -> dict[str, Any]:
    """One error as kept by ``History.errors``."""
    return {"time": when, "type": type(err).__name__, "message": clip(str(err), 1000),
            "trace": clip(trace or "", MAX_TRACE), "handler": handler}


class History(Tracer):
    """The last ``size`` transitions of one machine (oldest first) and its last ``errors_size`` errors.

    Each record is a dict: ``time`` (wall clock, s), ``tick`` (machine time after: the sum of the ticks),
    ``mutation`` (add, remove, set), ``called``, ``args`` (clipped), ``auto``, ``result``
    (``executed``/``canceled``), ``added``, ``removed``, ``reason`` (why it was canceled: a handler, a
    relation), ``error`` (when a handler raised), ``duration`` (seconds) and ``source`` (``None`` for local,
    else who sent it). Safe to read from any thread.
    """

    sees_rejected_autos = False  # an auto transition its relations turn down is not history

    def __init__(self, size: int = 1000, errors_size: int = MAX_ERRORS) -> None:
        if size < 1 or errors_size < 0:
            raise ValueError("history size must be >= 1 (errors_size >= 0)")
        self.size = size
        self._records: deque[Any] = deque(maxlen=size)  # raw facts (tuples; canceled: lists): see _record
        self._errors: deque[dict[str, Any]] = deque(maxlen=max(errors_size, 1))
        self._keep_errors = errors_size > 0
        self._lock = threading.Lock()
        self._t0 = 0.0          # the running transition's start: one machine runs one transition at a time
        self._seq = 0           # records made, ever: a reader's cursor survives the ring's wrap
        # mutation -> source, from queueing to its transition
        self._sources: dict[Any, str] = {}
        self._last_err: BaseException | None = None
        self._listeners: list[Callable[[dict[str, Any]], Any]] = []

    # -- hooks (the machine's thread) --------------------------------------------------------------------------

    def mutation_queued(self, mach: Machine, mutation: Any) -> None:
        src = SOURCE.get()
        if src is not None:
            sources = self._sources
            if len(sources) >= _MAX_SOURCES:   # mutations dropped from the queue never ran: forget them
                sources.clear()
            sources[mutation] = src   # (a Mutation hashes by identity: the key holds it, its id can't be reused)

    def transition_init(self, tx: Transition) -> None:
        self._t0 = _perf()

    def transition_end(self, tx: Transition) -> None:
        # on the machine's hot path (a served machine's every request): the raw facts in one tuple, built once;
        # the record (a dict) is made when read. Fields read straight from the slots, not through properties
        m = tx.mutation
        if m.is_check:
            self._t0 = 0.0
            return                  # a dry run changes nothing: not history
        t0 = self._t0
        self._t0 = 0.0
        accepted = tx.is_accepted
        cancel = tx._cancel         # (reason, handler, error) when a handler canceled it
        if cancel is None:
            if not accepted and m.is_auto:
                return              # auto states the relations turned down: nothing happened, not history
            err = None
        else:
            if not accepted and m.is_auto and cancel[1] is None:
                return
            err = cancel[2]
        took = _perf() - t0 if t0 else 0.0
        now = _wall()
        args = m.args
        plain_args = None
        if args:
            plain_args = plain(args)
            if err is None and accepted and "Exception" in m.called:
                # the error arrives as Exception's args: add_err from code, a raising async handler, or the
                # Exception that follows a raising handler (the same object, recorded once in the errors)
                e = args.get("err")
                if isinstance(e, BaseException):
                    err = e
        err_rec = None
        if err is not None:
            err_rec = error_record(err, trace_text(err), cancel[1] if cancel is not None else None, now)
        after: tuple[int, ...] | None = None
        reason: Any = None
        if accepted:
            if tx.is_completed:
                ta = tx._time_after
                after = tuple(ta if ta is not None else tx.time_after)
        else:
            # a canceled transition's reason: a handler's is known; a relation's is worked out when read (from tx)
            reason = cancel[0] if cancel is not None else tx
        sources = self._sources
        source = sources.pop(m, None) if sources else None
        called = m.called
        lock = self._lock
        lock.acquire()  # (not ``with``: half the cost on this path; nothing below raises)
        self._seq = seq = self._seq + 1
        # a tuple of tuples, strings and numbers, which the garbage collector stops tracking: a daemon's rings of
        # a million records would otherwise make every full collection scan them (over 100 ms). A canceled record
        # by a relation stays a list: its reason (the transition) is replaced by the text when read
        raw: Any = (seq, now, took, tx._mach._c.names, tuple(tx.time_before), after, accepted, int(m.type),
                    called if type(called) is tuple else tuple(called), plain_args, m.is_auto, reason, err_rec,
                    source)
        if reason is not None and not isinstance(reason, str):
            raw = list(raw)
        self._records.append(raw)
        if err_rec is not None and self._keep_errors and err is not self._last_err:
            self._errors.append(err_rec)
            self._last_err = err
        listeners = self._listeners
        lock.release()
        if listeners:    # a copy-on-write list: registration replaces it
            rec = _record(raw)
            for fn in listeners:
                try:
                    fn(rec)
                except Exception:
                    tx._mach._logger.exception("history listener %r raised", fn)

    # -- reading (any thread) --------------------------------------------------------------------------------

    def records(self, *, since_tick: int | None = None, since_time: float | None = None,
                since_seq: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Records oldest first, after the given tick / wall time / record seq; ``limit`` keeps the newest."""
        with self._lock:
            raw = list(self._records)
        if since_seq is not None:
            raw = [r for r in raw if r[0] > since_seq]
        if since_time is not None:
            raw = [r for r in raw if r[1] >= since_time]
        if since_tick is not None:
            raw = [r for r in raw if sum(r[5] if r[5] is not None else r[4]) > since_tick]
        if limit is not None:
            raw = raw[-limit:] if limit > 0 else []
        return [_record(r) for r in raw]

    def errors(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The last errors (type, message, trace, handler, time), oldest first; kept after Exception is gone."""
        with self._lock:
            out = list(self._errors) if self._keep_errors else []
        return out[-limit:] if limit else out

    def follow(self, fn: Callable[[dict[str, Any]], Any], since_seq: int = 0,
               limit: int | None = None) -> tuple[list[dict[str, Any]], Callable[[], None]]:
        """The records after ``since_seq`` (the newest ``limit``), and from then on ``fn(record)`` for each new one:
        no gap and no duplicate between the two. ``fn`` runs on the machine's thread and must not block.
        Returns ``(backlog, stop)``."""
        with self._lock:
            raw = [r for r in self._records if r[0] > since_seq]
            self._listeners = [*self._listeners, fn]
        backlog = [_record(r) for r in raw]
        if limit is not None:
            backlog = backlog[-limit:] if limit > 0 else []

        def stop() -> None:
            with self._lock:
                self._listeners = [f for f in self._listeners if f is not fn]

        return backlog, stop

    def resize(self, size: int) -> None:
        """Keep the last ``size`` records from now on (the newest are kept when shrinking)."""
        if size < 1:
            raise ValueError("history size must be >= 1")
        with self._lock:
            self.size = size
            self._records = deque(self._records, maxlen=size)

    @property
    def last_seq(self) -> int:
        """The seq of the newest record (0 before any): read it, then ask ``records(since_seq=...)``."""
        return self._seq

    def __len__(self) -> int:
        return len(self._records)


def find_history(tracers: list[Tracer]) -> History | None:
    """The ``History`` among a machine's tracers, or None."""
    for t in tracers:
        if isinstance(t, History):
            return t
    return None


def keep_history(mach: Machine, size: int = 1000, errors_size: int = MAX_ERRORS) -> History:
    """Bind a ``History`` to ``mach`` (or resize the one it has) and return it."""
    h = find_history(mach._tracers)
    if h is None:
        h = History(size, errors_size)
        mach.bind_tracer(h)
    elif h.size != size:
        h.resize(size)
    return h


_MUTATION = {0: "add", 1: "remove", 2: "set", 3: "eval"}


def _record(raw: Any) -> dict[str, Any]:
    """The record (a plain dict) from the raw facts ``transition_end`` kept."""
    seq, now, took, names, before, after, accepted, mtype, called, args, auto, reason, err_rec, source = raw
    if reason is not None and not isinstance(reason, str):
        reason = raw[11] = reason.reason   # a relation's reason: worked out on first read (it resolves again)
    added: list[str] = []
    removed: list[str] = []
    if after is not None:
        added, removed, _ = tick_changes(list(names), before, after)
    clock = after if after is not None else before
    return {"seq": seq, "time": now, "tick": sum(clock), "ticks": list(clock),
            "mutation": _MUTATION.get(int(mtype), str(mtype)), "called": list(called), "args": args or {},
            "auto": auto, "result": "executed" if accepted else "canceled", "added": added, "removed": removed,
            "reason": reason, "error": err_rec, "duration": took, "source": source}
