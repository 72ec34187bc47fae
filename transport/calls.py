"""Requests and replies over a client's one DEALER socket, for any number of threads.

A caller holding the socket (``_io``) sends its requests and reads until its replies are there (handling pushes
on the way), so a round trip involves no thread hand-off. A request takes its seq when it is first sent, so
seqs reach the server in order whichever thread made it; a call not answered within a second is sent again with
the same seq (the server knows the seqs it has seen, so it is never applied twice). A thread that finds the
socket taken queues its requests for the holder, which sends them on its next turn and reads their replies.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from machine import SchemaError, StateError
from machine.log import LazyLogger

from . import protocol as P
from .errors import TransportError
from .nscalls import NsCall, NsQueue
from .zmqio import EVENTS, NB, POLLIN, raw_send

log = LazyLogger("transport.client")  # logging is imported on first use

RESEND = 1.0  # seconds before an unanswered call is sent again
# seqs sent past the oldest call still unanswered, at most: a call resent later is within the last MAX_AHEAD seqs
# the server saw, so its record of seen seqs (exact for the last 10,000) never takes a lost call for a retry, and
# another thread's call waits behind at most this many of a batch's (a larger window made batches no faster)
MAX_AHEAD = 1000
# once MAX_AHEAD is reached, sending goes on when this many are answered: a burst of sends costs libzmq one wake-up
# of its I/O thread, where one send per reply cost one each (twice the client's CPU per call in a batch)
REFILL = 256
WAIT_SLICE = 50  # ms: the longest single blocking recv of a caller (then it looks at its deadline again)
# the I/O thread's pump, while asyncio callers wait: a short sleep every so many messages (about 1 ms of work)
YIELD_EVERY = 32
YIELD_FOR = 0.00005


class _Call:
    """One request and, once read, its reply. Its seq is the one in ``frame``; it is final once ``sent``."""

    __slots__ = ("seq", "frame", "kind", "mach", "body", "sent", "done", "queued", "result", "error", "next_try",
                 "on_reply", "sync", "sink", "fut", "limit", "deadline")

    def __init__(self, seq: int, kind: str, mach: str | None, body: Any, frame: bytes,
                 on_reply: Callable[[Any], None] | None, sync: bool = True) -> None:
        self.seq = seq
        self.sync = sync  # a caller waits for it: resent, or kept queued, until it goes out (else best effort)
        self.kind = kind
        self.mach = mach
        self.body = body
        self.frame = frame
        self.sent = False
        self.queued = False  # in the outbox, for the thread holding the socket to send
        # set by whoever reads the reply: whichever thread holds the socket then
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.next_try = 0.0  # when to send it again, if unanswered
        self.on_reply = on_reply
        # an asyncio caller's call (see acalls.py): its completions queue, and when the I/O thread gives it up
        self.sink: Any = None
        self.fut: Any = None
        self.limit = 0.0  # its timeout (s)
        self.deadline = 0.0


class _Queued:
    """One caller's calls waiting in the outbox, and how far the holder got with them."""

    __slots__ = ("calls", "next")

    def __init__(self, calls: list[_Call]) -> None:
        self.calls = calls
        self.next = 0


def _error_from(body: Any) -> BaseException:
    if not isinstance(body, dict):
        return TransportError(f"malformed error reply: {body!r}", code=P.INTERNAL)
    msg, type_name, code = str(body.get("msg", "")), body.get("type"), str(body.get("code", "remote"))
    if type_name == "StateError" and isinstance(body.get("states"), list):
        return StateError(body["states"], str(body.get("machine", "")))
    if type_name == "SchemaError":
        return SchemaError(msg)
    return TransportError(msg, code=code)


def _pack(kind: str, seq: int, mach: str | None, body: Any) -> bytes:
    """A request's frame; TypeError for a value msgpack can't carry, ValueError for a message too large."""
    try:
        frame = P.pack(kind, seq, mach, body)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot send {kind}: a value is not msgpack-serializable ({exc})") from None
    if len(frame) > P.MAX_MSG:
        raise ValueError(f"message too large: {len(frame)} bytes > {P.MAX_MSG}")
    return frame


class Caller(NsQueue):
    """The request engine of a ``Client``: its socket, seqs, pending calls, resends, and the hand-off between
    threads. The socket belongs to whoever holds ``_io``; the thread holding it also sends the requests other
    threads queued meanwhile (``_outbox``) and reads every reply, whoever waits for it."""

    def __init__(self, sock: zmq.Socket[Any], address: str, timeout: float) -> None:
        self._sock: Any = sock  # as Context.socket() types it: the options used here are plain ints
        self.address = address
        self.timeout = timeout
        # the seq of the next request sent: taken when it is sent (holding _io), so seqs reach the server in
        # order whatever thread made the request (see _first_send)
        self._next_seq = 1
        self._io = threading.RLock()  # whoever holds it owns the socket (re-entrant: callbacks may call)
        self._pending: dict[int, _Call] = {}  # sent, waiting for their reply, by seq
        # calls made while another thread held the socket, one entry per caller: the holder sends them
        self._outbox: deque[_Queued] = deque()
        self._box_lock = threading.Lock()  # an outbox call is sent by the holder or withdrawn by its caller
        self._inflight: deque[_Call] = deque()  # sent calls that are resent when unanswered, oldest first
        self._full_window = False  # MAX_AHEAD was reached: no new call goes out until REFILL are answered
        self._closed = False
        self._last_rx = time.monotonic()
        self._rcvtimeo = -1  # the RCVTIMEO last set on the socket
        self._missed = False  # the I/O thread found the socket busy: it looks again within 2 ms (reactor.py)
        # asyncio callers' calls (acalls.py): the futures' sinks by loop, and the calls not given up yet
        self._sinks: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._acalls: set[_Call] = set()
        self._last_sink: Any = None  # the sink of the loop that made the last asyncio call
        self._resend_at = 0.0  # when the I/O thread next resends the asyncio callers' unanswered calls
        self._kicked = False  # the I/O thread was woken for the outbox and has not looked yet
        self._ns_init()  # add_ns batches (nscalls.py)
        # asyncio callers' calls started in a burst, their requests not made yet: the I/O thread makes and queues them
        self._intake: deque[list[Any]] = deque()
        # held while entries move from the intake to the outbox: the I/O thread, or a loop's thread flushing the
        # intake before a request that must not overtake them (acalls.flush), keep their order
        self._intake_lock = threading.Lock()

    def _handle(self, data: bytes) -> None:
        """Handle one message read from the socket (the client's dispatch)."""
        raise NotImplementedError

    def _wake(self) -> None:
        """Have the I/O thread look at this socket soon."""
        raise NotImplementedError

    def _reply(self, kind: str, seq: int, body: Any) -> None:
        """A reply (``ok`` or ``err``): complete its call (a late or duplicate one is dropped)."""
        call = self._pending.pop(seq, None)
        if call is None:
            return
        if kind == P.ERR:
            call.error = _error_from(body)
            if not call.sync:
                log.warning("%s %s failed: %s", self.address, call.kind, call.error)
        elif call.on_reply is not None:
            try:
                call.on_reply(body)
            except Exception as exc:
                log.exception("reply handler for %s failed", call.kind)
                call.error = TransportError(f"malformed {call.kind} reply: {exc}", code=P.INTERNAL)
        call.result = body
        call.done = True
        if call.sink is not None:
            call.sink.put(call)

    def _call(self, kind: str, mach: str | None, body: Any, *, timeout: float | None = None,
              on_reply: Callable[[Any], None] | None = None) -> Any:
        """Send a request and wait for its reply; raises TransportError, or the server's StateError etc.

        The calling thread does the I/O itself while it holds the socket (no hand-off to another thread on the
        round trip); whatever else arrives meanwhile (pushes, other replies) is handled on the way.
        """
        call = self._new_call(kind, mach, body, on_reply, self._next_seq)
        t = self.timeout if timeout is None else timeout
        if not self._outbox and self._io.acquire(False):
            self._run_one(call, t)  # the common case: one call, the socket free, nothing queued by others
        else:
            self._run_calls([call], t)
        if call.error is not None:
            raise call.error
        return call.result

    def _recv_wait(self, ms: int) -> bytes:
        """A blocking recv for at most ``ms`` milliseconds (the caller holds ``_io``); raises zmq.Again.

        RCVTIMEO is set only when it changes: waits are capped at WAIT_SLICE, so nearly every call uses the
        same value and pays no setsockopt."""
        if ms != self._rcvtimeo:
            self._sock.setsockopt(zmq.RCVTIMEO, ms)
            self._rcvtimeo = ms
        return self._sock.recv(copy=True)  # type: ignore[no-any-return]

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise TransportError(f"client for {self.address} is closed", code="closed")

    def _new_call(self, kind: str, mach: str | None, body: Any, on_reply: Callable[[Any], None] | None,
                  seq: int) -> _Call:
        """A request packed with the seq it will most likely get (packed again if not): packing here raises
        for a value msgpack can't carry, or a message too large, before anything is sent."""
        self._raise_if_closed()
        return _Call(seq, kind, mach, body, _pack(kind, seq, mach, body), on_reply)

    def _room(self) -> bool:
        """True while fewer than MAX_AHEAD seqs went out past the oldest resendable call still unanswered (once
        that many went out: until REFILL of them are answered)."""
        inflight = self._inflight
        while inflight and inflight[0].done:
            inflight.popleft()
        if not inflight:
            self._full_window = False
            return True
        ahead = self._next_seq - inflight[0].seq
        if ahead >= MAX_AHEAD or (self._full_window and ahead > MAX_AHEAD - REFILL):
            self._full_window = True
            return False
        self._full_window = False
        return True

    def _first_send(self, c: _Call, now: float) -> bool:
        """Send a call for the first time (holding ``_io``) with the next seq: seqs reach the server in the
        order they were taken, whichever thread made each call, and no seq is skipped. False when the socket
        takes nothing now (no link, or full)."""
        if self._ns_q:  # add_ns batches made before this call go first (or this is one of them)
            if isinstance(c, NsCall):
                return self._ns_send(c)
            if not self._ns_send(None):
                return False
        if c.seq == 0:  # a notification: no seq, no reply
            c.sent = c.done = self._send(c.frame)
            if c.sent and c.sink is not None:  # an asyncio caller awaits the send
                c.sink.put(c)
            return c.sent
        seq = self._next_seq
        if c.seq != seq:  # another call took this call's seq first, or it is not packed yet: pack it with its own
            try:
                c.frame = _pack(c.kind, seq, c.mach, c.body)
            except (TypeError, ValueError) as exc:  # an asyncio burst's call, packed here first: its caller's error
                c.error, c.done = exc, True
                if c.sink is not None:
                    c.sink.put(c)
                return True  # done with, as if sent: the caller's turn goes on
            c.seq = seq
        if not self._send(c.frame):
            return False
        self._next_seq = seq + 1
        c.sent = True
        c.next_try = now + RESEND
        self._pending[seq] = c
        if c.sync:
            self._inflight.append(c)
        return True

    def _send_queued(self, now: float) -> bool:
        """Send one call other threads queued while this one held the socket (holding ``_io``); False when none
        is left or it cannot go now. Callers take turns (a queued batch does not hold back a call queued after
        it). A request without a waiting caller is best effort, as when sent at once: dropped if the socket
        takes nothing now."""
        box = self._outbox
        while box:
            q = box[0]
            calls, i, n = q.calls, q.next, len(q.calls)
            with self._box_lock:  # a caller giving up on its calls (see _withdraw) comes first or finds them sent
                while i < n and not (calls[i].queued and not (calls[i].done or calls[i].sent)):
                    i += 1
                if i == n:
                    box.popleft()
                    continue
                c = calls[i]
                if c.seq and not self._room():
                    q.next = i
                    return False
                if not self._first_send(c, now) and c.sync:
                    q.next = i
                    return False  # tried again on the holder's next turn
            q.next = i + 1
            box.rotate(-1)  # the next caller's turn
            return True
        return False

    def _send_outbox(self, now: float, share: bool = False) -> None:
        """Send what other threads queued, as much as goes now (holding ``_io``); ``share`` as in ``_pump``."""
        sent = 0
        while self._send_queued(now):
            sent += 1
            if share and sent % YIELD_EVERY == 0 and self._acalls:
                time.sleep(YIELD_FOR)  # a burst of asyncio calls: the loop gets the GIL between slices

    def _withdraw(self, calls: list[_Call]) -> None:
        """Take queued calls back from the outbox (their caller gives up): no holder sends them after this."""
        with self._box_lock:
            for c in calls:
                c.queued = False

    def _run_calls(self, calls: list[_Call], t: float) -> None:
        """Send ``calls`` (pipelined) and read until each has its reply; TransportError on timeout.

        Calls go out in order, as many as the socket and MAX_AHEAD let through (a larger batch is sent as
        replies make room); a call sent and unanswered for RESEND is sent again with its seq (the server never
        applies a seq twice). A call is never sent again just because a later one did not fit. While another
        thread holds the socket, that thread sends them, reads their replies and resends them."""
        deadline = time.monotonic() + t
        io = self._io
        n = len(calls)
        first = 0  # calls[:first] are answered (replies come mostly in order: one pass overall)
        try:
            # the uncontended case without a timed wait
            if not io.acquire(False):
                # another thread holds the socket: it sends these calls on its next turn and reads their replies;
                # this thread looks every 2 ms whether they are answered, and takes the socket over once it is free
                for c in calls:
                    c.queued = True
                self._outbox.append(_Queued(calls))
                while True:
                    while first < n and calls[first].done:
                        first += 1
                    if first == n:
                        return
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._withdraw(calls)
                        raise self._timeout(calls[first].kind, t)
                    if io.acquire(timeout=min(left, 0.002)):
                        break
                for c in calls:  # this thread sends the rest itself, in its own turn: the outbox skips them
                    c.queued = False
            try:
                sent = 0  # calls[:sent] went out at least once
                theirs = False  # a call another thread queued goes out next
                now = time.monotonic()  # after the wait for the socket, which may have been long
                resend = now + RESEND  # no sent call is due again before this
                while True:
                    while first < n and calls[first].done:
                        first += 1
                    if first == n:
                        break
                    # as many as go now (no link, a full socket or MAX_AHEAD stop them), this thread's calls and
                    # those other threads queued taking turns, also for the one slot a reply frees: neither a
                    # batch here nor one queued there holds the other back
                    while True:
                        if theirs and self._outbox and self._send_queued(now):
                            theirs = False
                        elif sent < n and (calls[sent].sent or (self._room() and self._first_send(calls[sent], now))):
                            sent += 1
                            theirs = bool(self._outbox)
                        elif not (self._outbox and self._send_queued(now)):
                            break
                    if now >= resend:
                        resend = self._resend(now)
                    if now >= deadline:
                        raise self._timeout(calls[first].kind, t)
                    until = min(deadline, resend, now + 0.01) if sent < n else min(deadline, resend)
                    if self._closed:  # by a callback run on this thread, say
                        raise TransportError(f"client for {self.address} is closed", code="closed")
                    # a blocking recv with a timeout: the cheapest wait pyzmq offers (no poller per call)
                    try:
                        data = self._recv_wait(min(WAIT_SLICE, max(1, int((until - now) * 1000))))
                    except zmq.Again:
                        now = time.monotonic()
                        continue
                    self._last_rx = time.monotonic()
                    self._handle(data)
                    now = self._last_rx
            finally:
                self._release()
        finally:
            pending = self._pending
            for c in calls:
                if c.sent and pending.get(c.seq) is c:
                    del pending[c.seq]
                c.done = True  # answered, or given up: no holder sends it any more

    def _run_one(self, call: _Call, t: float, sent: bool = False) -> None:
        """``_run_calls`` for one call, the caller holding ``_io`` (which this gives back): the same steps
        without a batch's bookkeeping (a round trip's client Python is what keeps it above the floor). ``sent``:
        the call went out already (``plaincall``), pending and resendable."""
        try:
            now = time.monotonic()
            deadline = now + t
            resend = min(now + RESEND, call.next_try) if sent else now + RESEND
            while True:
                if not sent:
                    sent = self._room() and self._first_send(call, now)
                if call.done:
                    break
                if self._outbox:  # other threads' calls, queued meanwhile: this thread sends them
                    self._send_outbox(now)
                if now >= resend:
                    resend = self._resend(now)
                if now >= deadline:
                    raise self._timeout(call.kind, t)
                if self._closed:  # by a callback run on this thread, say
                    raise TransportError(f"client for {self.address} is closed", code="closed")
                until = min(deadline, resend) if sent else min(deadline, resend, now + 0.01)
                try:
                    data = self._recv_wait(min(WAIT_SLICE, max(1, int((until - now) * 1000))))
                except zmq.Again:
                    now = time.monotonic()
                    continue
                now = self._last_rx = time.monotonic()
                self._handle(data)
        finally:
            if call.sent and self._pending.get(call.seq) is call:
                del self._pending[call.seq]
            call.done = True
            self._release()

    def _send_now(self, kind: str, body: Any, on_reply: Callable[[Any], None]) -> _Call | None:
        """Send a request at once, ahead of anything queued (holding ``_io``): the hello that releases held
        ``add_ns`` batches (nscalls.py). Best effort, as ``_call_async``; None when the socket took nothing."""
        seq = self._next_seq
        c = _Call(seq, kind, None, body, P.pack(kind, seq, None, body), on_reply, sync=False)
        if not self._send(c.frame):
            return None
        self._next_seq = seq + 1
        c.sent = True
        c.next_try = time.monotonic() + RESEND
        self._pending[seq] = c
        return c

    def _resend(self, now: float) -> float:
        """Send again, with the same seq, the calls sent and unanswered for RESEND (this thread's, those it sent
        for others who wait for the socket, asyncio callers'); the caller holds ``_io``. Returns when to look
        again."""
        resend = now + RESEND
        for c in self._inflight:
            if c.done:
                continue
            if now >= c.next_try:
                if not self._send(c.frame):
                    return now + 0.01  # the socket is full or the link down: soon again
                c.next_try = now + RESEND
            resend = min(resend, c.next_try)
        return resend

    def _timeout(self, kind: str, t: float) -> TransportError:
        return TransportError(f"timeout: {self.address} did not answer {kind} within {t:g}s", code="timeout")

    def _release(self, outbox: bool = True) -> None:
        """Give the socket back; wake the I/O thread when messages wait (or, with ``outbox``, calls another
        thread queued for the holder). Asking for the socket's events also lets libzmq process its command
        mailbox, which re-arms the edge-triggered fd the I/O thread watches: without it, calls see millisecond
        stalls at the 99th percentile."""
        if self._missed:
            # the I/O thread found the socket busy and looks at it again within 2 ms (see reactor.Reactor): a message
            # left waiting is read then or by the next call, and a caller making calls back to back pays no
            # syscall here. _missed only turns False on the I/O thread while it holds the socket, so it is stable
            self._io.release()
            return
        try:
            more = bool(self._sock.getsockopt(EVENTS) & POLLIN)
        except zmq.ZMQError:
            more = False
        self._io.release()
        if more or (outbox and self._outbox):
            self._wake()

    def _send(self, frame: bytes) -> bool:
        try:
            raw_send(self._sock, frame, NB)
            return True
        except zmq.Again:
            return False  # no connection (IMMEDIATE): a call is resent, a notification to a dead peer is lost
        except zmq.ZMQError:
            log.debug("send failed", exc_info=True)
            return False

    def _notify(self, kind: str, mach: str | None, body: Any, *, block: bool = False) -> None:
        """Send without waiting for a reply (seq 0).

        ``block``: wait (up to the timeout) for room when the server's queue for us is full, and raise if it
        stays full or there is no link (mutations); otherwise best effort (bye, unsub, cancels).
        """
        if self._closed:
            raise TransportError(f"client for {self.address} is closed", code="closed")
        if kind == P.ADD_NS and block and mach and type(body) is dict and self._add_ns(mach, body["s"], body.get("a")):
            return  # pipelined mutations: batched (nscalls.py)
        try:
            frame = P.pack(kind, 0, mach, body)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"cannot send {kind}: a value is not msgpack-serializable ({exc})") from None
        io = self._io
        if not io.acquire(False):
            # another thread holds the socket: it sends this on its next turn (in order with other threads'
            # requests); this thread takes the socket over if it is free before that
            c = _Call(0, kind, mach, body, frame, None, sync=block)
            c.queued = True
            self._outbox.append(_Queued([c]))
            deadline = time.monotonic() + self.timeout
            while True:
                if c.sent:
                    return
                left = deadline - time.monotonic()
                if left <= 0 or c.done:  # out of time, or the client closed
                    self._withdraw([c])
                    if c.error is not None:
                        raise c.error
                    if block and not c.sent:
                        raise self._full(kind)
                    return
                if io.acquire(timeout=min(left, 0.002)):
                    break
            if c.sent:  # by the thread that just gave the socket up
                io.release()
                return
            c.queued = False  # sent below, by this thread: the outbox skips it
        try:
            # add_ns batches made before it go first; while one can't go (no link, the server's queue for us
            # full), this can't either: it would overtake them
            if self._ns_q and not self._ns_send(None, block=block):
                if not block:
                    return
                raise self._full(kind)
            # blocking (SNDTIMEO = the timeout): backpressure when the server's queue for this client is full;
            # an error, never a silent drop, when it stays full or there is no connection
            self._sock.send(frame, 0 if block else NB)
        except zmq.Again:
            if not block:
                return
            raise self._full(kind) from None
        finally:
            self._release()

    def _full(self, kind: str) -> TransportError:
        return TransportError(
            f"cannot send {kind} to {self.address}: not connected, or too many requests pending "
            f"(the server queues at most {P.MAX_PENDING} per client)", code=P.LIMIT)

    def _call_async(self, kind: str, mach: str | None, body: Any, on_reply: Callable[[Any], None]) -> None:
        """Send a request without waiting; ``on_reply`` runs with the reply body on the thread that reads it.

        Best effort: not resent, and dropped when the socket takes nothing. Sent in order with what other
        threads queued; while another thread holds the socket, that one sends it."""
        seq = self._next_seq
        self._submit(_Call(seq, kind, mach, body, P.pack(kind, seq, mach, body), on_reply, sync=False))

    def _submit(self, call: _Call) -> None:
        """Queue a call for the socket's holder, and send it now if the socket is free (never waits for it)."""
        self._submit_many([call])

    def _submit_many(self, calls: list[_Call], now: bool = True,
                     later: Callable[[Callable[[], None]], Any] | None = None) -> None:
        """``_submit`` for calls sent in order; without ``now`` they are left to the I/O thread, woken once for
        however many are queued before it looks (through ``later``, e.g. an event loop's ``call_soon``: after
        every call made in this turn of the loop is queued)."""
        for call in calls:
            call.queued = True
        self._outbox.append(_Queued(calls))
        if not now:
            if not self._kicked:
                self._kicked = True
                if later is None:
                    self._wake()
                else:
                    later(self._wake)
            return
        if self._io.acquire(False):
            try:
                self._send_outbox(time.monotonic())
            finally:
                self._release()  # a send may take the fd's edge for a message that arrived meanwhile

    def _pump(self, share: bool = False) -> bool:
        """Read and handle every message waiting on the socket (the caller holds ``_io``); False when it stopped
        at its bound with messages left.

        ``share`` (the I/O thread): while asyncio callers wait, give the GIL away for a moment every YIELD_EVERY
        messages, so an event loop never waits for it for a whole switch interval (5 ms) behind a long pump."""
        sock = self._sock
        get, recv = sock.getsockopt, sock.recv
        for i in range(100_000):
            try:
                # a syscall each (libzmq reads its command pipe), still cheaper than catching Again
                if not get(EVENTS) & POLLIN:
                    return True
                data = recv(NB, copy=True)
            except zmq.ZMQError:
                return True
            self._last_rx = time.monotonic()
            self._handle(data)
            if share and i % YIELD_EVERY == YIELD_EVERY - 1 and self._acalls:
                time.sleep(YIELD_FOR)  # a sleep hands the GIL over; sleep(0) rarely does
        return False
