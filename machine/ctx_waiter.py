"""Contexts and waiters: ``Ctx`` (a cancel token) and ``Waiter`` (a subscription's result), both one-shot signals.

Both can be blocked on from any thread and awaited from any asyncio loop; neither ever polls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from .log import LazyLogger

if TYPE_CHECKING:
    import asyncio

_log = LazyLogger("machine")


# what a fired signal's callback and future lists become: never appended to (every append checks ``_fired`` under
# the lock first), so each firing need not make two new lists
_SPENT: list[Any] = []


def _set_future(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


class _Signal:
    """Fires once; wakes blocked threads, awaiting coroutines and callbacks."""

    __slots__ = ("_event", "_fired", "_value", "_futures", "_callbacks", "_lock")

    def __init__(self) -> None:
        self._event: threading.Event | None = None
        self._fired = False
        self._value = False
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []
        self._callbacks: list[Callable[[], Any]] = []
        self._lock = threading.Lock()

    def _fire(self, value: bool) -> bool:
        """Fire with ``value``; False when it had fired already."""
        # acquire and release, not ``with`` (here and in _add_callback): half the cost, and a mirror's re-armed
        # waiter takes this lock twice a push
        lock = self._lock
        lock.acquire()
        try:
            if self._fired:
                return False
            self._fired = True
            self._value = value
            event, futures, callbacks = self._event, self._futures, self._callbacks
            self._futures = self._callbacks = _SPENT
        finally:
            lock.release()
        if event is not None:
            event.set()
        if futures:
            for loop, fut in futures:
                if loop.is_closed():
                    continue
                try:
                    loop.call_soon_threadsafe(_set_future, fut, value)
                except RuntimeError:  # the loop closed meanwhile
                    pass
        for cb in callbacks:
            try:
                cb()
            except Exception:  # a user's callback must not stop the others, nor the transition that fired it
                _log.exception("on_done callback %s raised", getattr(cb, "__qualname__", cb))
        return True

    def _wait(self, timeout: float | None) -> bool:
        if self._fired:
            return self._value
        with self._lock:
            if self._fired:
                return self._value
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        if not event.wait(timeout):
            return False
        return self._value

    def on_done(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` once ended (a ``Ctx`` cancelled; a ``Waiter`` ended for any reason: check its
        ``cancelled`` in ``fn``); at once if it has (an error of ``fn`` then raises to the caller)."""
        lock = self._lock
        lock.acquire()
        try:
            if not self._fired:
                self._callbacks.append(fn)
                return
        finally:
            lock.release()
        fn()

    _add_callback = on_done  # the internal name (one function: a mirror's user calls on_done per push)

    def _remove_callback(self, fn: Callable[[], Any]) -> None:
        with self._lock:
            try:
                self._callbacks.remove(fn)
            except ValueError:
                pass

    def __await__(self) -> Generator[Any, None, bool]:
        if self._fired:
            return self._value
        import asyncio  # only awaiting needs it; imported here to keep the package quick to import

        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            if self._fired:
                return self._value
            self._futures.append(entry)
        try:
            return (yield from fut.__await__())
        finally:
            if not fut.done() or fut.cancelled():
                # the await was cancelled (a timeout): forget its future, a long-lived signal would keep them all
                with self._lock:
                    try:
                        self._futures.remove(entry)
                    except ValueError:  # fired meanwhile: the list was handed over
                        pass


class Ctx(_Signal):
    """A cancel token: done once cancelled, by its owner or because its parent ended.

    ``wait(timeout)`` blocks until done (True) or the timeout (False); ``await ctx`` returns True when done;
    ``on_done(fn)`` runs ``fn()`` once done (at once if already done).
    """

    __slots__ = ("_parent", "__weakref__")

    def __init__(self, parent: Ctx | None = None) -> None:
        super().__init__()
        self._parent = parent
        if parent is not None:
            parent._add_callback(self.cancel)

    @property
    def done(self) -> bool:
        """True once cancelled."""
        return self._fired

    def cancel(self) -> None:
        """End the context; runs its callbacks and wakes its waiters. Idempotent."""
        if self._fire(True):
            parent, self._parent = self._parent, None
            if parent is not None:  # an ended child leaves nothing on a parent that lives on
                parent._remove_callback(self.cancel)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done; False on timeout."""
        return self._wait(timeout)

    def __repr__(self) -> str:
        return f"<Ctx {'done' if self._fired else 'live'}>"


class Waiter(_Signal):
    """The result of a ``when*`` subscription: one shared, one-shot signal.

    ``wait(timeout)`` and ``await waiter`` return True when the condition held and False when the waiter ended
    otherwise (its ctx ended, ``cancel()``, dispose) or, for ``wait``, on timeout. ``done`` is True once ended for
    any reason; ``cancelled`` is True when it ended without the condition.
    """

    __slots__ = ("_on_cancel", "_ctx_cb", "_ctx")

    def __init__(self) -> None:
        # _Signal's fields set here, not by calling its __init__: one of these per when() call, and per push a
        # mirror waits on
        self._event: threading.Event | None = None
        self._fired = False
        self._value = False
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []
        self._callbacks: list[Callable[[], Any]] = []
        self._lock = threading.Lock()
        self._on_cancel: Callable[[Waiter], None] | None = None
        self._ctx_cb: Callable[[], Any] | None = None
        self._ctx: Ctx | None = None

    @property
    def done(self) -> bool:
        """True once the waiter ended, for any reason."""
        return self._fired

    @property
    def cancelled(self) -> bool:
        """True when the waiter ended without its condition holding."""
        return self._fired and not self._value

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the waiter ends; True only when the condition held."""
        return self._wait(timeout)

    def cancel(self) -> None:
        """End the waiter (for every holder of it) without the condition."""
        if self._fire(False):
            self._detach()

    def _resolve(self, ok: bool = True) -> None:
        # no _detach call when nothing is attached (a waiter taken out of its table, no ctx): the usual push
        if self._fire(ok) and (self._on_cancel is not None or self._ctx is not None):
            self._detach()

    def _end_with(self, ctx: Ctx | None) -> None:
        """Cancel this waiter when ``ctx`` ends; the waiter's end removes the callback from ``ctx`` again (so a
        long-lived ctx does not collect one callback per waiter)."""
        if ctx is None:
            return
        self._ctx, self._ctx_cb = ctx, self.cancel
        ctx._add_callback(self.cancel)

    def _detach(self) -> None:
        cb, self._on_cancel = self._on_cancel, None
        if cb is not None:
            cb(self)
        ctx, ctx_cb = self._ctx, self._ctx_cb
        self._ctx = self._ctx_cb = None
        if ctx is not None and ctx_cb is not None:
            ctx._remove_callback(ctx_cb)

    def __repr__(self) -> str:
        status = "pending" if not self._fired else ("ok" if self._value else "cancelled")
        return f"<Waiter {status}>"


def resolved_waiter(ok: bool = True) -> Waiter:
    """A waiter that has already ended."""
    w = Waiter()
    w._fire(ok)
    return w
