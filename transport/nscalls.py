"""Pipelined ``add_ns`` on a client: mutations made in a burst go out together, as one ``ns_many`` frame.

An ``add_ns`` made a while (``NS_GAP``) after the last batch went out goes out at once (a batch of one). One made sooner
joins the batch on its way out: the batch is sent when it holds ``NS_BATCH`` mutations (or ``NS_BYTES``), before
any later request of this client (a ``sync``, an ``add``, a notification: whatever thread makes it, the batch is
sent first, so the client's order is kept), or on the I/O thread's next turn, which the batch's first mutation
asks for. The endpoint applies a batch in order, each mutation as its own ``add_ns`` would be (see
``server/nsbatch.py``), without reading, decoding and dispatching one message per mutation: that was half of a
pipelined mutation's cost on the endpoint.

A batch that could not be sent (no link, or the server's queue for us full) holds the batches back until a hello
is answered (``_ns_ask``): the server may have restarted meanwhile as one that does not read ``ns_many``, which would
refuse them whole. When the hello offers no batches, the batches not sent yet go as one ``add_ns`` frame each, in
order. The hello goes ahead of them; every other request still waits behind them.

Back-pressure as before: with one batch waiting to be sent (the link is down, or the server has ``MAX_PENDING``
of this client's messages queued) and the next one full, ``add_ns`` waits up to the client's timeout for the
first to go, then raises ``TransportError`` (``limit``); that mutation was not queued. Mutations queued are never
dropped silently: they wait for the link (the I/O thread tries again on each of its turns), and fail with the
client's other pending calls when it is closed. An ``add_ns`` the server would refuse (``_add_ns`` says which) goes
alone, as a plain ``add_ns`` frame: a malformed entry has its whole batch refused.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import msgpack
import zmq

from . import protocol as P
from .errors import TransportError
from .zmqio import NB, raw_send

NS_BATCH = 256  # add_ns in one ns_many frame, at most
NS_BYTES = 256 * 1024  # about this many bytes of them, at most (a single one may be larger)
NS_GAP = 0.001  # s: an add_ns this long after the last batch went out is sent at once, alone
NS_AHEAD = 2  # batches queued and not sent, at most: then add_ns waits (back-pressure)


def batches_offered(hello: Any) -> bool:
    """True when the server's hello says it reads ``ns_many`` batches: an older one would answer each with an
    error nobody waits for, and its ``add_ns`` would be lost, so they go to it one a frame."""
    return isinstance(hello, dict) and hello.get(P.NS_MANY) is True


class NsCall:
    """A batch of ``add_ns`` on its way out: open (taking more) until a thread holding the socket seals it."""

    __slots__ = ("entries", "size", "open", "frames", "many", "next", "sent", "done", "queued", "seq", "sync",
                 "sink", "error")

    def __init__(self, entry: bytes) -> None:
        self.entries = [entry]
        self.size = len(entry)
        self.open = True
        # once sealed: the ns_many frame, or (to a server without batches) one add_ns frame per entry; frames[:next]
        # are sent
        self.frames: list[bytes] = []
        self.many = False  # frames is the one ns_many frame
        self.next = 0
        # what the outbox (calls._send_queued) and close() look at, as on a calls._Call
        self.sent = self.done = False
        self.queued = True
        self.seq = 0
        self.sync = True
        self.sink: Any = None
        self.error: BaseException | None = None


class NsQueue:
    """The ``add_ns`` batches of a ``calls.Caller`` (a mixin: the socket, ``_io`` and the outbox are the caller's)."""

    _sock: Any
    _io: Any
    _outbox: deque[Any]
    _closed: bool
    _kicked: bool
    timeout: float
    address: str

    def _ns_init(self) -> None:
        self._ns_q: deque[NsCall] = deque()  # batches not sent yet, oldest first (the last one may be open)
        self._ns_lock = threading.Lock()  # appending to the open batch, sealing it
        self._ns_last = 0.0  # when the last batch went out (monotonic)
        self._ns_ok = False  # the server reads ns_many (its hello says so); until then add_ns go one a frame
        # a batch could not be sent: none goes until a hello is answered (the server may be another one now), and
        # the hello asked for that (None: none asked, or it is to be asked again)
        self._ns_hold = False
        self._ns_asked: Any = None

    def _wake(self) -> None:
        raise NotImplementedError

    def _release(self, outbox: bool = True) -> None:
        raise NotImplementedError

    def _full(self, kind: str) -> TransportError:
        raise NotImplementedError

    def _hello_body(self) -> dict[str, Any]:
        raise NotImplementedError

    def _on_pong(self, body: Any) -> None:
        raise NotImplementedError

    def _send_now(self, kind: str, body: Any, on_reply: Any) -> Any:
        raise NotImplementedError

    def _recv_wait(self, ms: int) -> bytes:
        raise NotImplementedError

    def _handle(self, data: bytes) -> None:
        raise NotImplementedError

    _last_rx: float

    def _add_ns(self, mach: str, states: list[str], args: dict[str, Any] | None) -> bool:
        """Queue one ``add_ns`` (see the module doc); raises TypeError for what can't be packed, and
        TransportError (``limit``) when the batches ahead of it could not go out within the timeout. False (not
        queued) for one the server would refuse, which must go alone (``_notify``): the server refuses a batch
        with a malformed entry whole, and one caller's mistake must not cost others their mutations."""
        if self._closed:
            raise TransportError(f"client for {self.address} is closed", code="closed")
        if not 0 < len(mach) <= 256 or not self._ns_ok:
            return False
        try:
            entry = P.pack_entry(mach, states, args)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"cannot send add_ns: a value is not msgpack-serializable ({exc})") from None
        if args and (len(entry) > P.MAX_ARGS_BYTES or not P.readable(entry)):
            return False  # args too large, or what the server can't read (a map key that is not a string)
        q = self._ns_q
        while True:
            with self._ns_lock:
                last = q[-1] if q else None
                if last is not None and last.open and len(last.entries) < NS_BATCH \
                        and last.size + len(entry) <= NS_BYTES:
                    last.entries.append(entry)
                    last.size += len(entry)
                    if len(last.entries) < NS_BATCH:
                        return True  # on its way: the batch's first add_ns saw to that
                    c = last
                    break
                if len(q) < NS_AHEAD:
                    c = NsCall(entry)
                    q.append(c)
                    self._outbox.append(_Single(c))  # what a thread holding the socket sends for others
                    break
                oldest = q[0]
            self._ns_wait(oldest)  # back-pressure: the oldest batch must go before this one is queued
        if c.entries[0] is entry and time.monotonic() - self._ns_last < NS_GAP and not self._closed:
            # a burst: more may join this batch before it goes; the I/O thread sends it on its next turn (or a
            # full batch, or any request sent meanwhile, sends it sooner)
            if not self._kicked:
                self._kicked = True
                self._wake()
            return True
        # alone (the first add_ns in a while), or a full batch: now, unless another thread holds the socket (it
        # sends the batch on its next turn, the outbox's)
        if self._io.acquire(False):
            try:
                self._ns_send(c)
            finally:
                self._release()
        else:
            self._wake()  # the holder may be the I/O thread past its look at the outbox: it looks again
        return True

    def _ns_wait(self, c: NsCall) -> None:
        """Wait until the batch ``c`` is sent, sending it (blocking, up to the timeout) when the socket is free."""
        deadline = time.monotonic() + self.timeout
        while not c.sent:
            if self._closed:
                raise TransportError(f"client for {self.address} is closed", code="closed")
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._full(P.ADD_NS)
            if self._io.acquire(timeout=min(left, 0.002)):
                try:
                    self._ns_send(c, block=True)
                finally:
                    self._release()

    def _ns_send(self, upto: NsCall | None, block: bool = False) -> bool:
        """Send the queued batches, oldest first, up to ``upto`` (None: all); the caller holds ``_io``. True when
        ``upto`` (or every batch) went out. ``block``: a blocking send (up to the socket's SNDTIMEO), and while
        the batches are held, waiting (up to the timeout) for the hello's reply."""
        q = self._ns_q
        while q:
            if self._ns_hold:
                if not block:
                    self._ns_ask()
                    return False
                if not self._ns_unheld():
                    return False
            c = q[0]
            if not c.frames:
                with self._ns_lock:
                    c.open = False  # sealed: later add_ns start the next batch
                c.many = self._ns_ok
                c.frames = [P.pack_many(c.entries)] if c.many else _singles(c.entries)
            try:
                while c.next < len(c.frames):
                    raw_send(self._sock, c.frames[c.next], 0 if block else NB)
                    c.next += 1
            except zmq.ZMQError:  # Again: no link (IMMEDIATE) or the server's queue for us is full; tried again
                self._ns_hold = True  # after a hello: the server that takes them may be another one
                self._ns_ask()
                return False
            with self._ns_lock:
                q.popleft()
            c.sent = c.done = True
            self._ns_last = time.monotonic()
            if c is upto:
                return True
        return upto is None or upto.sent


    def _ns_ask(self) -> None:
        """While the batches are held (the caller holds ``_io``): say hello, unless one is on its way. It alone
        goes ahead of the batches; a reply to an earlier one, late, counts as well."""
        c = self._ns_asked
        if c is None or c.done or time.monotonic() >= c.next_try:
            self._ns_asked = self._send_now(P.HELLO, self._hello_body(), self._ns_hello)

    def _ns_unheld(self) -> bool:
        """Read replies (holding ``_io``) until the hello asked for releases the batches, or the timeout: True
        when it did."""
        deadline = time.monotonic() + self.timeout
        while self._ns_hold:
            self._ns_ask()
            left = deadline - time.monotonic()
            if left <= 0 or self._closed:
                return False
            try:
                data = self._recv_wait(max(1, min(50, int(left * 1000))))
            except zmq.Again:
                continue
            self._last_rx = time.monotonic()
            self._handle(data)
        return True

    def _ns_hello(self, body: Any) -> None:
        """The hello asked for while the batches were held: release them (as single frames to a server that
        does not read batches); a new server (or session) is then reported as a ping reply would (``_on_pong``)."""
        self._ns_greeted(body)
        self._on_pong(body)

    def _ns_greeted(self, hello: Any) -> None:
        """A hello's reply: whether the server reads batches; the held ones go (the ones sealed but not sent yet
        as one ``add_ns`` frame each, when it does not)."""
        self._ns_ok = batches_offered(hello)
        if not self._ns_ok:
            for c in list(self._ns_q):
                if c.many and c.next == 0:
                    c.frames, c.many = _singles(c.entries), False
        self._ns_hold = False
        self._ns_asked = None


def _singles(entries: list[bytes]) -> list[bytes]:
    """The ``add_ns`` frames of a batch's entries, one each (for a server that reads no batches)."""
    out = []
    for e in entries:
        mach, states, *rest = msgpack.unpackb(e, raw=False)  # packed here (pack_entry), and readable
        body: dict[str, Any] = {"s": states}
        if rest:
            body["a"] = rest[0]
        out.append(P.pack(P.ADD_NS, 0, mach, body))
    return out


class _Single:
    """An outbox entry (``calls._Queued``'s shape) for one batch."""

    __slots__ = ("calls", "next")

    def __init__(self, c: NsCall) -> None:
        self.calls = [c]
        self.next = 0
