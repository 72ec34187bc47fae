"""The client side: one DEALER socket per ``Client``.

The socket belongs to whoever holds ``_io``: a caller sends its request and reads until its reply is there
(handling pushes on the way), so a round trip involves no thread hand-off. Between calls, the process's one
client I/O thread (``reactor.Reactor``) waits on the fds of every client's socket at once and reads pushes. A
call not answered within a second is sent again with the same sequence number (the server knows every seq it
has seen, so it is never applied twice). Silence for a few seconds marks the link down; the client then says
hello until the server answers, and subscribes its mirrors again. Callbacks (``on_status``, ``on_update``,
waiters) run on the thread that read the message.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from machine import SchemaError, StateError
from machine.log import LazyLogger

from . import protocol as P
from .addr import normalize
from .errors import TransportError
from .reactor import reactor

if TYPE_CHECKING:
    from .remote import RemoteMachine

log = LazyLogger("transport.client")  # logging is imported on first use

_POLLIN = int(zmq.POLLIN)  # plain ints: an IntFlag operand makes every `&` build an enum member
_NB = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
# pyzmq's compiled send, without the Python wrapper zmq.Socket puts around it (as costly as the send itself)
_raw_send = zmq.backend.Socket.send
RESEND = 1.0  # seconds before an unanswered call is sent again
WAIT_SLICE = 50  # ms: the longest single blocking recv of a caller (then it looks at its deadline again)


class _Call:
    __slots__ = ("seq", "frame", "done", "result", "error", "next_try", "on_reply", "kind", "sync")

    def __init__(self, seq: int, kind: str, frame: bytes, on_reply: Callable[[Any], None] | None,
                 sync: bool = True) -> None:
        self.seq = seq
        self.sync = sync  # a caller waits on it (else it came from the I/O thread)
        self.kind = kind
        self.frame = frame
        # set by whoever reads the reply: the caller itself, since it holds the socket until then
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.next_try = 0.0 if sync else time.monotonic() + RESEND  # when to send it again, if unanswered
        self.on_reply = on_reply


def _error_from(body: Any) -> BaseException:
    if not isinstance(body, dict):
        return TransportError(f"malformed error reply: {body!r}", code=P.INTERNAL)
    msg, type_name, code = str(body.get("msg", "")), body.get("type"), str(body.get("code", "remote"))
    if type_name == "StateError" and isinstance(body.get("states"), list):
        return StateError(body["states"], str(body.get("machine", "")))
    if type_name == "SchemaError":
        return SchemaError(msg)
    return TransportError(msg, code=code)


def _peer(hello: Any) -> tuple[Any, Any]:
    """The server's boot id and session name from a hello or ping reply."""
    if not isinstance(hello, dict):
        return None, None
    return hello.get("boot"), hello.get("session")


class Client:
    """A connection to one endpoint. Use ``connect()``.

    ``machines()`` lists what the endpoint serves; ``machine(id)`` gives a ``RemoteMachine`` mirror. Every call
    either returns or raises ``TransportError`` within the client's timeout.
    """

    def __init__(self, addr: str, *, timeout: float = 3.0, server_key: Any = None, client_keys: Any = None,
                 name: str | None = None) -> None:
        self.address = normalize(addr)
        if self.address.endswith(":*"):
            raise ValueError(f"cannot connect to a wildcard port: {addr}")
        self.timeout = float(timeout)
        self.id = f"rc-{name + '-' if name else ''}{random.getrandbits(32):08x}"
        self._zctx: zmq.Context[Any] = zmq.Context.instance()
        sock = self._sock = self._zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, self.id.encode())
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, P.MAX_MSG)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.SNDHWM, P.MAX_PENDING)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.SNDTIMEO, max(1, int(self.timeout * 1000)))
        if server_key is not None or client_keys is not None:
            from .security import setup_client_curve

            setup_client_curve(sock, server_key, client_keys)
        sock.connect(self.address)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()  # guards _mirrors
        self._io = threading.RLock()  # whoever holds it owns the socket (re-entrant: callbacks may call)
        self._pending: dict[int, _Call] = {}
        self._mirrors: dict[str, RemoteMachine] = {}
        self._subscribing: dict[str, threading.Event] = {}  # ids whose first mirror is on its way (in machine())
        self._status_cbs: list[Callable[[bool], Any]] = []
        self._payload_cbs: list[Callable[[dict[str, Any]], Any]] = []
        self._connected = False
        self._closed = False
        self._last_rx = time.monotonic()
        self._rcvtimeo = -1  # the RCVTIMEO last set on the socket
        # the server process's boot id and its name for our session: a new one means the server knows nothing
        # of our subscriptions (it restarted, or dropped our session), so subscribe again
        self._boot: Any = None
        self._session: Any = None
        # watched by the process's one I/O thread (see reactor.Reactor)
        self._fd: int = sock.getsockopt(zmq.FD)
        self._missed = False  # its fd is disarmed while a caller holds the socket
        self._next_beat = time.monotonic() + P.HEARTBEAT
        self._reactor = reactor()
        self._reactor.add(self)
        try:
            hello = self._call(P.HELLO, None, {"id": self.id, "proto": P.PROTO}, timeout=self.timeout)
            self._boot, self._session = _peer(hello)
        except TransportError as exc:
            self.close()
            raise TransportError(f"cannot connect to {self.address}: {exc}", code="connect") from None
        except BaseException:
            self.close()
            raise
        self._set_connected(True)

    # ------------------------------------------------------------------ public

    @property
    def connected(self) -> bool:
        """True while the server answers."""
        return self._connected and not self._closed

    def machines(self) -> list[dict[str, Any]]:
        """The machines behind the address: dicts with ``id``, ``parent_id``, ``tags``, ``time``, ``states``."""
        out = self._call(P.MACHS, None, {})
        if not isinstance(out, list):
            raise TransportError("malformed machs reply", code=P.INTERNAL)
        return out

    def machine(self, mach_id: str, *, mutations: bool = False) -> RemoteMachine:
        """A mirror of the machine ``mach_id`` (the same object for the same id while it is open).

        With ``mutations=True`` pushes also carry the source's mutations (type, states, args), for watchers.
        Raises TransportError (a LookupError) for an unknown id.
        """
        from .remote import RemoteMachine

        deadline = time.monotonic() + self.timeout
        while True:
            # one mirror per id: a thread asking while another subscribes waits for that one's mirror
            with self._lock:
                rm = self._mirrors.get(mach_id)
                if rm is not None and rm.disposed:
                    rm = None
                busy = self._subscribing.get(mach_id) if rm is None else None
                if rm is None and busy is None:
                    mine = self._subscribing[mach_id] = threading.Event()
            if rm is not None:
                if mutations and not rm._muts:
                    rm._muts = True
                    rm._resubscribe()
                return rm
            if busy is None:
                break
            if not busy.wait(max(0.0, deadline - time.monotonic())):
                raise self._timeout(P.SUB, self.timeout)
        try:
            info = self._call(P.SUB, mach_id, {"muts": mutations})
            rm = RemoteMachine(self, info, mutations)
            with self._lock:
                self._mirrors[mach_id] = rm
        finally:
            with self._lock:
                del self._subscribing[mach_id]
            mine.set()
        if self._closed:  # closed meanwhile: close() did not see this mirror
            rm._local_dispose()
        return rm

    def on_payload(self, fn: Callable[[dict[str, Any]], Any]) -> None:
        """Call ``fn(payload)`` for each payload the server sends (``Endpoint.send_payload``):
        ``{"name", "data", "token", "machine"}``, on the thread that read it."""
        self._payload_cbs.append(fn)

    def on_status(self, fn: Callable[[bool], Any]) -> None:
        """Call ``fn(connected)`` (on the I/O thread) whenever the link goes down or comes back."""
        self._status_cbs.append(fn)

    def close(self) -> None:
        """Say bye, stop the I/O thread, close the socket (LINGER 0) and dispose the mirrors. Idempotent."""
        if self._closed:
            return
        try:
            if self._connected:
                self._notify(P.BYE, None, {})
        except TransportError:
            pass
        self._closed = True
        self._reactor.remove(self)
        # after any read in progress (the I/O thread's or a caller's), bounded: two clients closing each other
        # from their callbacks must not wait on each other for ever (then the socket is left to the collector)
        if self._io.acquire(timeout=2.0):
            try:
                self._sock.close(0)
            finally:
                self._io.release()
        else:
            log.warning("client %s: socket busy at close, left to be collected", self.id)
        with self._lock:
            mirrors = list(self._mirrors.values())
            self._mirrors.clear()
        pending = list(self._pending.values())
        self._pending.clear()
        for call in pending:
            call.error = TransportError("client closed", code="closed")
            call.done = True
        for rm in mirrors:
            rm._local_dispose()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.id} -> {self.address} {'connected' if self.connected else 'disconnected'}>"

    # ------------------------------------------------------------------ calls (any thread)

    def _call(self, kind: str, mach: str | None, body: Any, *, timeout: float | None = None,
              on_reply: Callable[[Any], None] | None = None) -> Any:
        """Send a request and wait for its reply; raises TransportError, or the server's StateError etc.

        The calling thread does the I/O itself while it holds the socket (no hand-off to another thread on the
        round trip); whatever else arrives meanwhile (pushes, other replies) is handled on the way.
        """
        call = self._new_call(kind, mach, body, on_reply)
        self._run_calls([call], self.timeout if timeout is None else timeout)
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

    def _new_call(self, kind: str, mach: str | None, body: Any,
                  on_reply: Callable[[Any], None] | None = None) -> _Call:
        if self._closed:
            raise TransportError(f"client for {self.address} is closed", code="closed")
        seq = next(self._seq)
        try:
            frame = P.pack(kind, seq, mach, body)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"cannot send {kind}: a value is not msgpack-serializable ({exc})") from None
        if len(frame) > P.MAX_MSG:
            raise ValueError(f"message too large: {len(frame)} bytes > {P.MAX_MSG}")
        return _Call(seq, kind, frame, on_reply)

    def _run_calls(self, calls: list[_Call], t: float) -> None:
        """Send ``calls`` (pipelined) and read until each has its reply; TransportError on timeout.

        Calls go out in order, as many as the socket takes (a batch larger than the high-water mark is sent as
        replies make room); a call sent and unanswered for RESEND is sent again with its seq (the server never
        applies a seq twice). A call is never sent again just because a later one did not fit."""
        deadline = time.monotonic() + t
        pending = self._pending
        for c in calls:
            pending[c.seq] = c
        io = self._io
        n = len(calls)
        try:
            # the uncontended case without a timed wait
            if not io.acquire(False) and not io.acquire(timeout=max(t, 0.001)):
                raise self._timeout(calls[0].kind, t)
            try:
                sent = 0  # calls[:sent] went out at least once
                first = 0  # calls[:first] are answered (replies come mostly in order: one pass overall)
                now = time.monotonic()  # after the wait for the socket, which may have been long
                resend = now + RESEND  # no sent call is due again before this
                while True:
                    while first < n and calls[first].done:
                        first += 1
                    if first == n:
                        break
                    if sent < n:  # not sent yet (no connection, or the socket is full): as many as fit now
                        while sent < n and self._send(calls[sent].frame):
                            calls[sent].next_try = now + RESEND
                            sent += 1
                    if now >= resend:
                        # sent, unanswered for a while: again with the same seq
                        resend = now + RESEND
                        for c in calls[first:sent]:
                            if not c.done and now >= c.next_try:
                                if not self._send(c.frame):
                                    resend = now + 0.01  # the socket is full or the link down: soon again
                                    break
                                c.next_try = now + RESEND
                            if not c.done:
                                resend = min(resend, c.next_try)
                    if now >= deadline:
                        raise self._timeout(calls[first].kind, t)
                    until = min(deadline, resend, now + 0.01) if sent < n else min(deadline, resend)
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
            for c in calls:
                pending.pop(c.seq, None)

    def mutate_many(self, ops: list[tuple[str, str, tuple[str, ...] | list[str], dict[str, Any] | None]], *,
                    timeout: float | None = None) -> list[int | BaseException]:
        """Apply mutations to several machines at once: ``ops`` = ``[(machine id, "add"|"remove"|"set",
        states, args or None), ...]``, sent pipelined (not one round trip each) and without subscribing.

        Returns, in order, each result (a ``Result`` or a queue tick) or the exception it raised on the server
        (``StateError``, ``TransportError`` ...). Raises TransportError when the replies don't come in time.
        Mirrors of these machines that this client holds are updated before it returns, others by pushes.
        """
        from machine import Result

        kinds = {"add": P.ADD, "remove": P.REMOVE, "set": P.SET}
        calls = []
        for mach_id, kind, states, args in ops:
            if kind not in kinds:
                raise ValueError(f"unknown mutation {kind!r} (add, remove or set)")
            body: dict[str, Any] = {"s": list(states)}
            if args:
                body["a"] = dict(args)
            # a reply carries the update for a mirror this client holds: apply it, as a mirror's own call would
            with self._lock:
                rm = self._mirrors.get(mach_id)
            calls.append(self._new_call(kinds[kind], mach_id, body, rm._on_mut_reply if rm is not None else None))
        if calls:
            self._run_calls(calls, self.timeout if timeout is None else timeout)
        out: list[int | BaseException] = []
        for c in calls:
            if c.error is not None:
                out.append(c.error)
            else:
                r = int(c.result[0])
                out.append(Result(r) if r < Result.QUEUED else r)
        return out

    def _timeout(self, kind: str, t: float) -> TransportError:
        return TransportError(f"timeout: {self.address} did not answer {kind} within {t:g}s", code="timeout")

    def _release(self) -> None:
        """Give the socket back; wake the I/O thread when messages wait. Asking for the socket's events also
        lets libzmq process its command mailbox, which re-arms the edge-triggered fd the I/O thread watches:
        without it, calls see millisecond stalls at the 99th percentile."""
        if self._missed:
            # the I/O thread found the socket busy and looks at it again within 2 ms (see reactor.Reactor): a message
            # left waiting is read then or by the next call, and a caller making calls back to back pays no
            # syscall here. _missed only turns False on the I/O thread while it holds the socket, so it is stable
            self._io.release()
            return
        try:
            more = bool(self._sock.getsockopt(zmq.EVENTS) & _POLLIN)
        except zmq.ZMQError:
            more = False
        self._io.release()
        if more:
            self._wake()

    def _send(self, frame: bytes) -> bool:
        try:
            _raw_send(self._sock, frame, _NB)
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
        try:
            frame = P.pack(kind, 0, mach, body)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"cannot send {kind}: a value is not msgpack-serializable ({exc})") from None
        if not self._io.acquire(timeout=self.timeout):
            raise self._timeout(kind, self.timeout)
        try:
            # blocking (SNDTIMEO = the timeout): backpressure when the server's queue for this client is full;
            # an error, never a silent drop, when it stays full or there is no connection
            self._sock.send(frame, 0 if block else _NB)
        except zmq.Again:
            if not block:
                return
            raise TransportError(
                f"cannot send {kind} to {self.address}: not connected, or too many requests pending "
                f"(the server queues at most {P.MAX_PENDING} per client)", code=P.LIMIT) from None
        finally:
            self._release()

    def _call_async(self, kind: str, mach: str | None, body: Any, on_reply: Callable[[Any], None]) -> None:
        """Send a request without waiting; ``on_reply`` runs with the reply body on the thread that reads it."""
        seq = next(self._seq)
        call = _Call(seq, kind, P.pack(kind, seq, mach, body), on_reply, sync=False)
        self._pending[seq] = call
        self._io.acquire()
        try:
            self._send(call.frame)
        finally:
            self._release()  # a send may take the fd's edge for a message that arrived meanwhile

    def _wake(self) -> None:
        """Have the I/O thread look at this client's socket soon."""
        self._reactor.kick(self)

    def _pump(self) -> bool:
        """Read and handle every message waiting on the socket (the caller holds ``_io``); False when it stopped
        at its bound with messages left."""
        sock = self._sock
        get, recv = sock.getsockopt, sock.recv
        for _ in range(100_000):
            try:
                # a syscall each (libzmq reads its command pipe), still cheaper than catching Again
                if not get(_EVENTS) & _POLLIN:
                    return True
                data = recv(_NB, copy=True)
            except zmq.ZMQError:
                return True
            self._last_rx = time.monotonic()
            self._handle(data)
        return False

    # ------------------------------------------------------------------ the I/O thread

    def _service(self, now: float) -> None:
        """One look at the socket, on the I/O thread: read what waits, keep the link alive.

        The fd is watched edge-triggered: while a caller holds the socket it reads everything itself, so the I/O
        thread does not wake per round trip; it looks again every few milliseconds until the caller is done.
        """
        if self._closed:
            return
        checked = False
        if not self._io.acquire(blocking=False):
            if not self._missed:
                self._missed = True
                self._reactor.arm(self, False)
            return
        try:
            if self._closed:
                return
            if self._missed:
                self._missed = False
                self._reactor.arm(self, True)  # re-arming reports a fd that is ready already
            # read first: after a stall, pongs already waiting must count before the beat judges the link
            checked = self._pump()
            if now >= self._next_beat and not self._closed:
                now = time.monotonic()  # the pump may have taken a while
                self._next_beat = now + P.HEARTBEAT
                self._beat(now)
                # and again after the beat's send: a send handles the socket's pending commands, which can take
                # the fd's edge for a message that arrived meanwhile
                checked = self._closed or self._pump()
            # the last thing done with the socket was asking its events and nothing waits (unless the pump
            # stopped at its bound): the release need not ask again
        finally:
            if checked:
                self._io.release()
            else:
                self._release()

    def _beat(self, now: float) -> None:
        """Ping while connected; say hello while not (holding ``_io``)."""
        for seq, c in list(self._pending.items()):
            if not c.sync and c.kind in (P.PING, P.HELLO) and now >= c.next_try:
                self._pending.pop(seq, None)  # heartbeats are not resent: a new one goes out each beat
        if self._connected and now - self._last_rx > P.PEER_TIMEOUT:
            self._set_connected(False)
        if self._connected:
            self._call_async(P.PING, None, {}, self._on_pong)
        else:
            self._call_async(P.HELLO, None, {"id": self.id, "proto": P.PROTO}, self._on_rehello)

    def _on_pong(self, body: Any) -> None:
        boot, session = _peer(body)
        if boot != self._boot or session != self._session:
            # a new server process, or one that dropped our session (stalled past the peer timeout, say, while
            # our pongs still came in time): it knows nothing of our subscriptions
            self._session_lost("restarted" if boot != self._boot else "forgot our session")

    def _session_lost(self, why: str) -> None:
        """The server no longer has our session: report the link down, say hello, subscribe everything again."""
        log.info("%s: %s %s, subscribing again", self.id, self.address, why)
        self._set_connected(False)
        self._call_async(P.HELLO, None, {"id": self.id, "proto": P.PROTO}, self._on_rehello)

    def _on_rehello(self, body: Any) -> None:
        if isinstance(body, dict):
            self._boot, self._session = _peer(body)
        if self._connected:
            return
        with self._lock:
            mirrors = list(self._mirrors.values())
        for rm in mirrors:
            rm._resubscribe()
        self._set_connected(True)

    def _set_connected(self, up: bool) -> None:
        if up == self._connected:
            return
        self._connected = up
        log.info("%s %s %s", self.id, "connected to" if up else "lost", self.address)
        for fn in list(self._status_cbs):
            try:
                fn(up)
            except Exception:
                log.exception("status callback failed")

    def _handle(self, data: bytes) -> None:
        try:
            kind, seq, mach, body = P.unpack(data)
        except P.FrameError as exc:
            log.warning("bad frame from %s: %s", self.address, exc)
            return
        if kind in (P.OK, P.ERR):
            call = self._pending.pop(seq, None)
            if call is None:
                return  # a late or duplicate reply
            if kind == P.ERR:
                call.error = _error_from(body)
                if not call.sync:
                    log.warning("%s %s failed: %s", self.id, call.kind, call.error)
            elif call.on_reply is not None:
                try:
                    call.on_reply(body)
                except Exception as exc:
                    log.exception("reply handler for %s failed", call.kind)
                    call.error = TransportError(f"malformed {call.kind} reply: {exc}", code=P.INTERNAL)
            call.result = body
            call.done = True
            return
        if kind == P.PAY:
            if isinstance(body, dict):
                for fn in list(self._payload_cbs):
                    try:
                        fn(body)
                    except Exception:
                        log.exception("payload callback failed")
            return
        if mach is None:
            return
        with self._lock:
            rm = self._mirrors.get(mach)
        if rm is None:
            return
        try:
            if kind == P.CLK:
                rm._on_clk(body)
            elif kind == P.SCHEMA:
                rm._on_schema(body)
            elif kind == P.ARGS_OK:
                rm._on_args_ok(body)
        except Exception:
            log.exception("push %s for %s failed", kind, mach)


def connect(addr: str, *, timeout: float = 3.0, server_key: Any = None, client_keys: Any = None,
            name: str | None = None) -> Client:
    """Connect to an endpoint; raises TransportError when nothing answers within ``timeout`` seconds."""
    return Client(addr, timeout=timeout, server_key=server_key, client_keys=client_keys, name=name)
