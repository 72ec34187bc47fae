"""The queue of mutations: claiming it, appending and prepending, draining it in order, its limits and ticks,
and dispose (which claims the queue to stop it).

One thread at a time holds the queue (``_processing``, ``_runner``) and runs its mutations as transitions
(``execution.run_transition``); a mutation made meanwhile, from a handler or another thread, is appended and
returns its queue tick. Writes ``_queue``, ``_processing``, ``_runner``, ``_appended``, ``_queue_tick``,
``_done_tick``, ``_err`` (for ``add_err``), ``_backoff_until`` (reset), ``_disposing`` and ``_disposed``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import is_cancel, trace_text
from .execution import run_transition
from .log import LogLevel, fmt_args, release_logger, safe_repr
from .mutation import NO_QUEUE, Mutation, MutationType, Result, args_dict, in_backoff, new_mutation, own_queue
from .plain import drain_plain, refresh_plain
from .schema import EXCEPTION
from .subscriptions import resolve_queue_waiters

if TYPE_CHECKING:
    from .machine import Machine

ADD, REMOVE, SET, EVAL = MutationType.ADD, MutationType.REMOVE, MutationType.SET, MutationType.EVAL
EXECUTED, CANCELED, QUEUED = Result.EXECUTED, Result.CANCELED, Result.QUEUED
OPS = LogLevel.OPS  # a module global: read through the enum class it costs about 100 ns
NO_CALLBACKS: list[Callable[[], Any]] = []  # a new machine's dispose callbacks: shared, never written to
_get_ident = threading.get_ident
_new = object.__new__


def mutate_general(mach: Machine, mtype: MutationType, called: tuple[str, ...], a: dict[str, Any] | None) -> int:
    """An add, remove or set whose states and args ``plain.drain_plain`` has checked (see ``Machine.add``), on a
    machine that is not plain or not idle, or whose tracer is told of each queued mutation: run now when the queue
    is idle, else appended."""
    c = mach._c
    index = c.index
    queued = None
    lock = mach._lock
    lock.acquire()  # on the hot path acquire/release cost half of a ``with`` block
    try:
        q = mach._queue
        running = mach._processing
        if not running and not q:
            # idle: this thread runs the mutation at once (it counts as appended and dequeued)
            mach._processing = True
            mach._runner = _get_ident()
            mach._appended += 1
            mach._queue_tick += 1
            tick = mach._appended + 1
        else:
            if len(q) >= mach._queue_limit:
                # while Exception can still change, a mutation that names it gets through a full queue
                exc_on = bool(mach._time[index[EXCEPTION]] & 1) if EXCEPTION in index else False
                if not (EXCEPTION in called and (
                        (mtype == ADD and not exc_on) or (mtype == REMOVE and exc_on))):
                    mach._log(OPS, f"[queue:full] [{mtype}] {' '.join(called)}")
                    return CANCELED
            if mtype == REMOVE and running and not q and not mach.any_active(*called):
                return EXECUTED
            if q and not a and not any(s in c.multi for s in called):
                for qm in q:
                    if (qm.type == mtype and not qm.is_check and len(qm.called) == len(called)
                            and all(s in qm.called for s in called)):
                        mach._log(OPS, f"[queue:skipped] Duplicate detected for [{mtype}] "
                                                f"{' '.join(called)}")
                        return EXECUTED
            mach._appended += 1
            tick = mach._appended + 1
            queued = new_mutation(mtype, called, a, tick)
            own_queue(mach).append(queued)
            _queued(mach, queued)
            if running:
                if mach._log_level >= OPS:
                    n = len(q)
                    mach._log(OPS, f"[postpone] queue running ({n} item{'s' if n != 1 else ''})")
                return tick
            # idle with a queue left over (an exception escaped a drain): this thread drains it, after
            # releasing the lock, so that other threads' mutations are queued meanwhile, not blocked
            mach._processing = True
            mach._runner = _get_ident()
    finally:
        lock.release()
    if queued is not None:
        drain(mach)
        return queued.result  # its own result, not that of the leftover mutation drained first
    m = new_mutation(mtype, called, a, tick)
    if mach._plain and "mutation_queued" not in mach._hooks:
        return drain_plain(mach, m)
    if mach._log_level or "mutation_queued" in mach._hooks:
        _queued(mach, m)  # a hook may turn a feature on: the path is chosen after it
    return drain_plain(mach, m) if mach._plain else drain(mach, m)


def _queued(mach: Machine, m: Mutation) -> None:
    if mach._log_level >= OPS:
        mach._log(OPS, f"[queue:{m.type}] {' '.join(m.called)}{fmt_args(m.args)}")
    mach._emit("mutation_queued", mach, m)


def add_err(mach: Machine, state: str, err: BaseException | None, args: Mapping[str, Any] | None,
             force: bool) -> int:
    """See ``Machine.add_err_state``; ``force`` gets through the backoff after a deadlined handler."""
    mach._called((state,))
    a = args_dict(args) or {}
    if mach._disposing or (not force and mach._backoff_until and in_backoff(mach)) or err is None or is_cancel(
            err):
        return CANCELED
    if not isinstance(err, BaseException):
        raise TypeError(f"err must be an exception, got {type(err).__name__}")
    called = (state,) if state == EXCEPTION else (state, EXCEPTION)
    if EXCEPTION not in mach._c.index:
        called = (state,)
    a.setdefault("err", err)
    a.setdefault("err_trace", trace_text(err))
    with mach._lock:
        if len(mach._queue) >= mach._queue_limit:
            return CANCELED
        mach._err = err
        mach._appended += 1
        tick = mach._appended + 1
        m = Mutation(ADD, called, a, queue_tick=tick)
        own_queue(mach).append(m)
        if "mutation_queued" in mach._hooks:
            mach._emit("mutation_queued", mach, m)
        if mach._processing:
            return tick
        mach._processing = True
        mach._runner = _get_ident()
    drain(mach)
    return m.result  # a leftover queue ran first: its own result all the same


def check(mach: Machine, mtype: MutationType, states: tuple[str, ...], args: Mapping[str, Any] | None,
          timed_out: int = CANCELED) -> int:
    """A dry run (``can_add``/``can_remove``): prepended, waited for up to 1 s; ``timed_out`` is returned when the
    machine stayed busy that long (``can_*`` answer CANCELED; the transport tells a timeout apart)."""
    called = mach._called(states)
    a = args_dict(args)
    if mach._disposing:
        return CANCELED
    m = Mutation(mtype, called, a, is_check=True)
    return run_prepended(mach, m, 1.0, timed_out)


def run_prepended(mach: Machine, m: Mutation, timeout: float, timed_out: int = CANCELED) -> int:
    """Prepend ``m``; run it now when idle, wait for it when another thread runs the queue."""
    with mach._lock:
        if mach._processing:
            if on_runner(mach):
                # from a handler: it runs after the current transition; the caller can't wait for it
                own_queue(mach).appendleft(m)
                return QUEUED
            m.done = threading.Event()
            own_queue(mach).appendleft(m)
            claimed = False
        else:
            own_queue(mach).appendleft(m)
            mach._processing = True
            mach._runner = _get_ident()
            claimed = True
    if claimed:
        drain(mach)
        return m.result
    assert m.done is not None
    if not m.done.wait(timeout):
        with mach._lock:
            try:
                own_queue(mach).remove(m)
            except ValueError:
                pass
        return timed_out
    return m.result


def will_be(mach: Machine, states: tuple[str, ...]) -> bool:
    """See ``Machine.will_be``."""
    with mach._lock:
        for m in mach._queue:
            if m.type in (ADD, SET) and not m.is_check and all(s in m.called for s in states):
                return True
    return False


def eval_fn(mach: Machine, fn: Callable[[], Any], timeout: float) -> bool:
    """See ``Machine.eval``."""
    if mach._disposing:
        return False
    if on_runner(mach):
        mach._log(OPS, "[eval] nested eval refused (called from a handler)")
        return False
    m = Mutation(EVAL, (), None, fn=fn)
    return run_prepended(mach, m, timeout) == EXECUTED


def drain(mach: Machine, m: Mutation | None = None) -> int:
    """Run ``m`` (already counted as dequeued), then the queue until it is empty.

    The calling thread holds the processing flag; it is released here, under the lock, once the queue is
    empty, so a mutation appended meanwhile is never left behind.
    """
    first: int | None = None
    lock = mach._lock
    try:
        while True:
            if m is None:
                lock.acquire()  # not ``with``: see mutate_general
                try:
                    if not mach._queue or mach._disposing:
                        if mach._disposing:
                            cancel_queue(mach)  # its waiters are cancelled by the dispose
                        mach._processing = False
                        mach._runner = None
                        mach._tx = None
                        break
                    m = own_queue(mach).popleft()
                    if m.queue_tick:
                        mach._queue_tick += 1
                finally:
                    lock.release()
            r = run_transition(mach, m) if m.type is not EVAL else _run_eval(mach, m)
            m.result = r
            if m.done is not None:
                m.done.set()
            if first is None:
                first = r
            if m.queue_tick:
                mach._done_tick = m.queue_tick
                if mach._subs.queue:  # read each time: the first waiter replaces the shared empty one
                    resolve_queue_waiters(mach)
            m = None
    except BaseException:
        with lock:
            mach._processing = False
            mach._runner = None
            mach._tx = None
        raise
    drain_end(mach)
    return CANCELED if first is None else first


def drain_end(mach: Machine) -> None:
    """The queue was drained and released: ``queue_end``, and the end of a dispose begun meanwhile."""
    if "queue_end" in mach._hooks:
        mach._emit("queue_end", mach)
    if mach._disposing and not mach._disposed:
        finish_dispose(mach)


def cancel_queue(mach: Machine) -> bool:
    """Drop the queue (the lock held). Each dropped mutation counts as dequeued, so queue ticks stay in step
    with the ticks already handed out; returns True when queue waiters may be due (resolve them unlocked)."""
    ticked = False
    for m in mach._queue:
        m.result = CANCELED
        if m.queue_tick:
            mach._queue_tick += 1
            mach._done_tick = m.queue_tick
            ticked = True
        if m.done is not None:
            m.done.set()
    mach._queue = NO_QUEUE
    return ticked


def _run_eval(mach: Machine, m: Mutation) -> int:
    """Run an eval's function; what it raises goes to ``add_err``."""
    assert m.fn is not None
    try:
        m.fn()
    except Exception as exc:
        mach._log(OPS, f"[eval] raised {safe_repr(exc)}")
        mach.add_err(exc)
    return EXECUTED


def on_runner(mach: Machine) -> bool:
    """True on the thread that runs the queue, or on its handler thread."""
    ident = _get_ident()
    w = mach._worker
    return ident == mach._runner or (w is not None and ident == w.ident)


def dispose(mach: Machine, timeout: float, stop_start: bool) -> None:
    """See ``Machine.dispose``; ``stop_start`` False skips removing Start (a mirror must not change its source)."""
    if mach._disposing:
        return
    if stop_start and "Start" in mach._c.index and mach.is_active("Start") and not on_runner(mach):
        mach.remove("Start")
    with mach._lock:
        if mach._disposing:
            return
        mach._disposing = True
        refresh_plain(mach)
        if mach._processing:
            runs_it: bool | None = on_runner(mach)
        else:
            mach._processing = True
            mach._runner = _get_ident()
            runs_it = None
    if runs_it is None:
        # idle: this thread finishes it
        with mach._lock:
            cancel_queue(mach)  # its waiters are cancelled by the dispose
        finish_dispose(mach)
        with mach._lock:
            mach._processing = False
            mach._runner = None
    elif not runs_it:
        # the runner finishes it when its transition ends
        if not mach._disposed_waiter.wait(timeout):
            finish_dispose(mach)
    # on the runner (from a handler): drain finishes it


def finish_dispose(mach: Machine) -> None:
    """Tear down (once): cancel waiters and contexts, unbind handlers, zero the clock, run on_dispose callbacks."""
    with mach._lock:
        if mach._disposed:
            return
        mach._disposed = True
        waiters = mach._subs.all_waiters()
        ctxs = list(mach._state_ctxs.values())
        mach._state_ctxs.clear()
        cbs, mach._dispose_cbs = mach._dispose_cbs, []
        mach._bindings = []
        mach._bound = {}  # execution._bound_for's cache goes with the bindings
        mach._time = [0] * len(mach._c.names)
        mach._active = ()
    mach._emit("machine_dispose", mach._id)
    for w in waiters:
        w.cancel()
    for c in ctxs:
        c.cancel()
    for fn in cbs:
        try:
            fn()
        except Exception:
            mach._logger.exception("%son_dispose callback raised", mach._log_prefix)
    if mach._worker is not None:
        mach._worker.stop()
    if mach._ctx_obj is not None:
        mach._ctx_obj.cancel()
    if mach._disposed_waiter_obj is not None:
        mach._disposed_waiter_obj._resolve(True)
    if mach._logger_obj is not None:
        release_logger(mach._logger_obj)

