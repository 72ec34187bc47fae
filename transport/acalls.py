"""Requests for asyncio callers, native to the client's I/O: no thread waits for a reply.

A call alone in flight is packed and sent on the event loop's thread when the socket is free (``start``). A
mutation started while others are in flight (a burst: up to 1000 in one loop turn) costs the loop only its
future and one append to the client's intake (``queue``); the client I/O thread, woken once per loop turn, makes
the call and its request (checks, body, record) and queues it for sending (``intake``), handing the GIL over
between slices. The reply is read by that thread, which runs the reply handler (a mirror's update) and hands the
call to the loop's ``Sink``. A sink wakes its loop once for all the replies read meanwhile
(``call_soon_threadsafe``) and completes at most ``BATCH`` futures per loop callback, so 1000 replies neither
wake the loop 1000 times nor hold it for one long turn.

Resends (same seq, after ``calls.RESEND``) and timeouts of these calls are the I/O thread's, on its turns
(every ``reactor.SWEEP`` at most): a call not answered within its timeout fails with ``TransportError``
(``timeout``). Cancelling the awaiting task gives up a call that was not sent yet (nothing reaches the server);
one already sent is left to complete: it is applied once, its reply still updates the mirror, and its resends
are answered from the server's reply cache.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from . import protocol as P
from .calls import YIELD_FOR, _Call, _Queued
from .errors import TransportError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .calls import Caller

BATCH = 64  # futures completed per loop turn: about 1 ms of the loop's time, whatever the burst
_monotonic = time.monotonic  # a global, not an attribute lookup: queue() runs 1000 times in a turn
SLICE = 64  # burst calls the I/O thread makes between two hand-overs of the GIL (intake)


class Sink:
    """The replies for one event loop's calls, read on other threads and completed on the loop."""

    __slots__ = ("_loop", "_cl", "_calls", "_lock", "_scheduled")

    def __init__(self, cl: Caller, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the client keeps its sinks by loop, weakly: a loop gone takes its sink
        self._cl = cl
        self._calls: list[_Call] = []
        self._lock = threading.Lock()
        self._scheduled = False  # a flush is scheduled on the loop: a put adds to it without waking the loop

    def put(self, call: _Call) -> None:
        """A call is done (any thread): its future is completed on the loop soon."""
        with self._lock:
            self._calls.append(call)
            if self._scheduled:
                return
            self._scheduled = True
        loop = self._loop()
        try:
            if loop is None:
                raise RuntimeError("loop gone")
            loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # the loop is closed: nobody awaits these any more
            with self._lock:
                self._calls.clear()
                self._scheduled = False

    def _flush(self) -> None:
        with self._lock:
            calls = self._calls[:BATCH]
            del self._calls[:BATCH]
            more = bool(self._calls)
            if not more:
                self._scheduled = False
        acalls = self._cl._acalls
        for c in calls:
            acalls.discard(c)
            fut = c.fut
            if fut is None or fut.done():  # cancelled meanwhile
                continue
            c.fut = None  # a done call may stay in the caller's resend window a while: not with its future
            if c.error is not None:
                fut.set_exception(c.error)
            else:
                fut.set_result(c.result)
        loop = self._loop()
        if more and loop is not None:  # the rest on the next turn, after the tasks these woke and any timer due
            loop.call_soon(self._flush)


def _sink(cl: Caller, loop: asyncio.AbstractEventLoop) -> Sink:
    sink: Sink | None = cl._sinks.get(loop)
    if sink is None:
        sink = cl._sinks.setdefault(loop, Sink(cl, loop))
    return sink


def _prepare(cl: Caller, call: _Call, sink: Sink, limit: float, deadline: float) -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = sink_loop(sink).create_future()
    call.sink, call.fut, call.limit, call.deadline = sink, fut, limit, deadline
    cl._acalls.add(call)
    return fut


def sink_loop(sink: Sink) -> asyncio.AbstractEventLoop:
    loop = sink._loop()
    assert loop is not None  # the running loop: it is alive
    return loop


def start(cl: Caller, loop: asyncio.AbstractEventLoop, kind: str, mach: str | None, body: Any,
          on_reply: Callable[[Any], None] | None = None,
          timeout: float | None = None) -> tuple[_Call, asyncio.Future[Any]]:
    """What ``acall`` does before it awaits (on the loop's thread): the call made and submitted, and the future
    its reply completes; the caller awaits it and calls ``abandon`` when cancelled. Kept flat: it runs once per
    call, 1000 times in one loop turn when a burst starts."""
    if cl._intake:
        flush(cl)
    last = cl._last_sink  # one loop per client, nearly always: no weak-dict lookup per call
    sink = last if last is not None and last._loop() is loop else _last_sink(cl, loop)
    alone = not cl._acalls
    if alone:  # sent at once: packed here (a value msgpack can't carry raises here, as in the sync client)
        call = cl._new_call(kind, mach, body, on_reply, cl._next_seq)
    else:
        # in a burst the thread that sends it packs it (it would pack it again anyway: the seq it gets is known
        # only then); a bad value fails its await with the sync client's error, and nothing is sent for it
        cl._raise_if_closed()
        call = _Call(-1, kind, mach, body, b"", on_reply)
    limit = cl.timeout if timeout is None else timeout
    fut: asyncio.Future[Any] = loop.create_future()
    call.sink, call.fut, call.limit, call.deadline = sink, fut, limit, time.monotonic() + limit
    cl._acalls.add(call)
    # alone, it is sent at once (a round trip with one thread hand-off); with others in flight it is left to the
    # I/O thread, woken once the loop's turn is over: a burst costs the loop no syscall per call (each one gives
    # the GIL away, for up to 5 ms) and the I/O thread does not compete for the GIL while the burst starts
    cl._submit_many([call], now=alone, later=loop.call_soon)
    return call, fut


def queue(cl: Caller, loop: asyncio.AbstractEventLoop, kind: str, mach: str | None,
          make: tuple[Any, ...]) -> tuple[list[Any], asyncio.Future[Any]]:
    """``start`` for a call started while others are in flight (a burst): on the loop's thread only the call's
    future and one append to the client's intake (the entry returned, for ``abandon``); the I/O thread makes the
    call (``intake``): ``make`` = ``(fn, *args)``, and ``fn(*args)`` returns the request's ``(body, on_reply)``,
    or raises the caller's error (its await fails with it, nothing is sent), or returns anything else: the
    call's result, nothing sent. The I/O thread is woken once per loop turn however many calls the turn starts;
    the call's timeout counts from when it makes the call."""
    if cl._closed:
        cl._raise_if_closed()
    last = cl._last_sink
    sink = last if last is not None and last._loop() is loop else _last_sink(cl, loop)
    fut: asyncio.Future[Any] = loop.create_future()
    entry = [fut, sink, kind, mach, make]  # + the call, once made; fut None: given up before (see abandon)
    cl._intake.append(entry)
    if not cl._kicked:
        cl._kicked = True
        loop.call_soon(cl._wake)  # after the turn: the I/O thread does not compete for the GIL while it runs
    return entry, fut


def _made(cl: Caller, entry: list[Any], now: float) -> _Call | None:
    """The call of an intake entry (under ``_box_lock``: its caller may give it up at the same time); None when
    it was given up before."""
    with cl._box_lock:
        fut, sink, kind, mach, make = entry
        if fut is None:
            return None
        call = _Call(-1, kind, mach, make, b"", None)
        limit = cl.timeout
        call.sink, call.fut, call.limit, call.deadline = sink, fut, limit, now + limit
        entry.append(call)
    cl._acalls.add(call)  # from here on a timeout or the client's close fails it
    return call


def intake(cl: Caller) -> None:
    """Make the calls ``queue`` left and their requests (on the I/O thread), in order, into the outbox; a call
    given up meanwhile is skipped. The GIL is handed over every ``SLICE`` calls, so the loop waits for it at most
    a slice's time, never a whole switch interval."""
    with cl._intake_lock:
        _intake(cl)


def flush(cl: Caller) -> None:
    """Before an asyncio request that does not go through the intake (on the loop's thread): the burst calls
    started before it are made and queued first, so it can't overtake them (rare: a burst of add/remove/set
    still being made when another kind of request starts)."""
    if cl._intake:
        intake(cl)


def _intake(cl: Caller) -> None:
    q = cl._intake
    made = 0
    now = _monotonic()
    while q:
        try:
            entry = q.popleft()
        except IndexError:  # the client's close took the last one
            break
        call = _made(cl, entry, now)
        if call is None:
            continue
        if cl._closed:  # closed meanwhile: close() may have failed the calls in flight before this one was made
            call.error = TransportError(f"client for {cl.address} is closed", code="closed")
            call.done = True
            call.sink.put(call)
            continue
        try:
            fn, *args = call.body
            out = fn(*args)
        except Exception as exc:  # the caller's error (a bad state name or value): its await raises it
            out = exc
        if type(out) is tuple:
            call.body, call.on_reply = out
            call.queued = True
            cl._outbox.append(_Queued([call]))  # one entry a call, as a caller's own: sent in the order made
        else:
            if isinstance(out, Exception):
                call.error = out
            else:
                call.result = out
            call.done = True
            call.sink.put(call)
        made += 1
        if made % SLICE == 0 and q:
            time.sleep(YIELD_FOR)  # a sleep hands the GIL over; sleep(0) rarely does
            now = _monotonic()


def _last_sink(cl: Caller, loop: asyncio.AbstractEventLoop) -> Sink:
    sink = cl._last_sink = _sink(cl, loop)
    return sink


async def acall(cl: Caller, kind: str, mach: str | None, body: Any, *,
                on_reply: Callable[[Any], None] | None = None, timeout: float | None = None) -> Any:
    """Send a request and await its reply (or the server's error, re-raised as the sync ``_call`` does)."""
    call, fut = start(cl, asyncio.get_running_loop(), kind, mach, body, on_reply, timeout)
    try:
        return await fut
    except asyncio.CancelledError:
        abandon(cl, call)
        raise


async def anotify(cl: Caller, kind: str, mach: str | None, body: Any, *, timeout: float | None = None) -> None:
    """Send a notification (no seq, no reply) and await its send: as the sync ``_notify(block=True)``, it waits
    for room while the server's queue for us is full or the link is down, and fails with ``TransportError``
    (``limit``) when none comes within the timeout."""
    flush(cl)
    sink = _sink(cl, asyncio.get_running_loop())
    call = cl._new_call(kind, mach, body, None, 0)
    limit = cl.timeout if timeout is None else timeout
    fut = _prepare(cl, call, sink, limit, time.monotonic() + limit)
    cl._submit_many([call], now=len(cl._acalls) == 1, later=asyncio.get_running_loop().call_soon)
    try:
        await fut
    except asyncio.CancelledError:
        abandon(cl, call)
        raise


async def acall_many(cl: Caller, calls: list[_Call], timeout: float | None = None) -> None:
    """Send ``calls`` pipelined, in order, and wait until each is done (its ``result`` or ``error`` set)."""
    flush(cl)
    sink = _sink(cl, asyncio.get_running_loop())
    limit = cl.timeout if timeout is None else timeout
    deadline = time.monotonic() + limit
    futs = [_prepare(cl, c, sink, limit, deadline) for c in calls]
    cl._submit_many(calls, now=False, later=asyncio.get_running_loop().call_soon)
    try:
        await asyncio.gather(*futs, return_exceptions=True)
    except asyncio.CancelledError:
        for c in calls:
            abandon(cl, c)
        raise


def post(cl: Caller, kind: str, mach: str | None, body: Any) -> None:
    """Send a best-effort notification (unsub, bye, a cancel) from any thread without waiting for the socket:
    sent now when it is free, else by its holder on its turn; nothing for a closed client."""
    if cl._closed:
        return
    cl._submit(_Call(0, kind, mach, body, P.pack(kind, 0, mach, body), None, sync=False))


def abandon(cl: Caller, call: _Call | list[Any]) -> None:
    """The awaiting task was cancelled (on the loop's thread): a call not sent yet never will be; a sent one is
    left to complete (applied once, the mirror updated) and dropped at its deadline at the latest. ``call`` may
    be ``queue``'s intake entry: one the I/O thread has not made yet is never made."""
    if type(call) is list:
        with cl._box_lock:
            if len(call) == 5:
                call[0] = None
                return
        call = call[5]
    assert isinstance(call, _Call)
    cl._withdraw([call])  # after this no thread sends it: either it went out already or it never will
    if not call.sent:
        call.done = True
        cl._acalls.discard(call)


def expire(cl: Caller, now: float) -> None:
    """Fail the asyncio calls past their deadline (on the thread holding ``_io``)."""
    for c in list(cl._acalls):
        if c.done:  # normally its sink forgets it; not if its loop is gone
            cl._acalls.discard(c)
            continue
        if now >= c.deadline:
            cl._acalls.discard(c)
            cl._withdraw([c])
            if c.sent:
                cl._pending.pop(c.seq, None)
            c.error = cl._timeout(c.kind, c.limit) if c.seq else cl._full(c.kind)
            c.done = True
            if c.sink is not None:
                c.sink.put(c)


def fail_all(cl: Caller, error: TransportError) -> None:
    """The client closed: every asyncio call still waiting fails with ``error``."""
    q = cl._intake
    now = _monotonic()
    while q:
        try:
            entry = q.popleft()
        except IndexError:  # the I/O thread took the last one
            break
        _made(cl, entry, now)  # registered with the others, failed below; never sent
    for c in list(cl._acalls):
        if not c.done:
            c.error = error
            c.done = True
            if c.sink is not None:
                c.sink.put(c)
    cl._acalls.clear()
