"""``Client``: a connection to one endpoint, its mirrors and the link's liveness.

Requests and replies (seqs, resends, threads sharing the socket) are ``calls.Caller``'s; between calls the
process's one client I/O thread (``reactor.Reactor``) reads pushes and sends heartbeats. Silence for a few
seconds marks the link down, and so does a heartbeat answered for another session than ours (the server dropped
it, or restarted); the client then says hello until the server answers, and subscribes its mirrors again.
Callbacks (``on_status``, ``on_update``, waiters) run on the thread that read the message. ``client.state`` is
the connection as a state machine (see ``conn_state``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from machine.log import LazyLogger

from . import conn_state as CS
from . import protocol as P
from .addr import normalize
from .calls import Caller, _Call
from .errors import TransportError
from .fleet_calls import (
    UNSUPPORTED,
    Watches,
    WatchFn,
    group_calls,
    group_results,
    listing,
    many_ops,
    unknown_kind,
)
from .reactor import reactor

if TYPE_CHECKING:
    from machine import Machine

    from .remote import RemoteMachine

log = LazyLogger("transport.client")  # logging is imported on first use


def _peer(hello: Any) -> tuple[Any, Any]:
    """The server's boot id and session name from a hello or ping reply."""
    if not isinstance(hello, dict):
        return None, None
    return hello.get("boot"), hello.get("session")


_MANY_KINDS = {"add": P.ADD, "remove": P.REMOVE, "set": P.SET}  # mutate_many's kinds, as its callers name them


def many_results(calls: list[_Call]) -> list[int | BaseException]:
    """Each ``mutate_many`` call's result (a ``Result`` or a queue tick), or the exception it failed with."""
    from machine import Result

    out: list[int | BaseException] = []
    for c in calls:
        if c.error is not None:
            out.append(c.error)
        else:
            r = int(c.result[0])
            out.append(Result(r) if r < Result.QUEUED else r)
    return out


class Client(Caller):
    """A connection to one endpoint. Use ``connect()``.

    ``machines()`` lists what the endpoint serves; ``machine(id)`` gives a ``RemoteMachine`` mirror. Every call
    either returns or raises ``TransportError`` within the client's timeout.

    Safe to share between threads: concurrent calls are each answered and each mutation applied once (requests
    take their seq when sent, in order; the thread holding the socket sends and reads for the others), and
    ``machine(id)`` gives one mirror per id however many threads ask at once.
    """

    def __init__(self, addr: str, *, timeout: float = 3.0, server_key: Any = None, client_keys: Any = None,
                 name: str | None = None, listing: bool = False, _hello: bool = True) -> None:
        address = normalize(addr)
        if address.endswith(":*"):
            raise ValueError(f"cannot connect to a wildcard port: {addr}")
        timeout = float(timeout)
        self.id = f"rc-{name + '-' if name else ''}{random.getrandbits(32):08x}"
        self._zctx: zmq.Context[Any] = zmq.Context.instance()
        sock = self._zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, self.id.encode())
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, P.MAX_MSG)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.SNDHWM, P.MAX_PENDING)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.SNDTIMEO, max(1, int(timeout * 1000)))
        if server_key is not None or client_keys is not None:
            from .security import setup_client_curve

            setup_client_curve(sock, server_key, client_keys)
        sock.connect(address)
        super().__init__(sock, address, timeout)
        self._lock = threading.Lock()  # guards _mirrors and _subscribing
        self._mirrors: dict[str, RemoteMachine] = {}
        self._subscribing: dict[str, threading.Event] = {}  # ids whose first mirror is on its way (in machine())
        self._payload_cbs: list[Callable[[dict[str, Any]], Any]] = []
        self._watches: Watches | None = None  # watch_machines (fleet_calls), made on first use
        self._no_group = False  # the server answered group as an unknown kind: one request a machine
        self._connected = False
        self._state = CS.new_state(self.id)
        # the server process's boot id and its name for our session: a new one means the server knows nothing
        # of our subscriptions (it restarted, or dropped our session), so subscribe again
        self._boot: Any = None
        self._session: Any = None
        # watched by the process's one I/O thread (see reactor.Reactor)
        self._fd: int = sock.getsockopt(zmq.FD)
        self._next_beat = time.monotonic() + P.HEARTBEAT
        self._reactor = reactor()
        self._reactor.add(self)
        # the machines listed with the hello (connect(listing=True)): one round trip for both
        self.listing: list[dict[str, Any]] | None = None
        if not _hello:  # the asyncio client says hello itself (aio.py)
            return
        try:
            if listing:
                self._run_calls(calls := self._hello_calls(), self.timeout)
                hello = self._hello_listed(calls)
            else:
                hello = self._call(P.HELLO, None, self._hello_body(), timeout=self.timeout)
        except TransportError as exc:
            raise self._not_connected(exc) from None
        except BaseException:
            self.close()
            raise
        self._hello_answered(hello)

    # ------------------------------------------------------------------ connecting (sync or asyncio)

    def _hello_body(self) -> dict[str, Any]:
        return {"id": self.id, "proto": P.PROTO}

    def _hello_calls(self) -> list[_Call]:
        """A hello and the listing as columns, pipelined: one round trip for both (``connect(listing=True)``)."""
        seq = self._next_seq
        return [self._new_call(P.HELLO, None, self._hello_body(), None, seq),
                self._new_call(P.MACHS, None, {"c": True}, None, seq + 1)]

    def _hello_listed(self, calls: list[_Call]) -> Any:
        """``_hello_calls`` answered: ``listing`` set, the hello's reply returned (or the first error raised)."""
        for c in calls:
            if c.error is not None:
                raise c.error
        self.listing = _listed(calls[1].result)
        return calls[0].result

    def _hello_answered(self, hello: Any) -> None:
        self._boot, self._session = _peer(hello)
        self._ns_greeted(hello)
        self._set_connected(True)

    def _not_connected(self, exc: TransportError) -> TransportError:
        """The first hello failed: close, and the error ``connect()`` raises."""
        self._state.add(CS.DISCONNECTED, CS.ERR_NETWORK)
        self.close()
        return TransportError(f"cannot connect to {self.address}: {exc}", code="connect")

    def _reuse(self, rm: RemoteMachine, mutations: bool) -> RemoteMachine:
        """An open mirror asked for again: it follows the source's mutations too from now on if asked."""
        if mutations and not rm._muts:
            rm._muts = True
            rm._resubscribe()
        return rm

    def _open_mirror(self, mach_id: str, mutations: bool) -> RemoteMachine | None:
        """The open mirror of ``mach_id``, if there is one (for the asyncio client)."""
        with self._lock:
            rm = self._mirrors.get(mach_id)
        return None if rm is None or rm.disposed else self._reuse(rm, mutations)

    def _adopt(self, mach_id: str, info: Any, mutations: bool) -> RemoteMachine:
        """The mirror for a ``sub`` reply the asyncio client got: the one another caller opened meanwhile for
        ``mach_id`` (one mirror per id), else a new one."""
        from .remote import RemoteMachine

        made = RemoteMachine(self, info, mutations)
        with self._lock:
            rm = self._mirrors.get(mach_id)
            if rm is None or rm.disposed:
                rm = self._mirrors[mach_id] = made
        if rm is not made:
            made._local_dispose()
        if self._closed:  # closed meanwhile: close() did not see this mirror
            rm._local_dispose()
        return rm

    # ------------------------------------------------------------------ public

    @property
    def connected(self) -> bool:
        """True while the server answers."""
        return self._connected and not self._closed

    @property
    def state(self) -> Machine:
        """The connection as a state machine: ``Start``, ``Connecting``, ``Connected``, ``Ready``,
        ``Disconnected``, ``RetryingConn``, ``ErrNetwork`` (see ``transport.conn_state``). Read it, wait on it
        (``client.state.when("Ready").wait(5)``, or ``await`` the waiter), bind handlers to it; do not mutate it."""
        return self._state

    def machines(self) -> list[dict[str, Any]]:
        """The machines behind the address: dicts with ``id``, ``parent_id``, ``tags``, ``time``, ``states``, and
        ``args`` for a machine that declares args (``{name: {"type", "help"}}``, see ``P.args_from_wire``)."""
        return _listed(self._call(P.MACHS, None, {"c": True}))

    def info(self) -> dict[str, Any]:
        """The endpoint's figures: ``machines``, ``sessions``, ``uptime`` (s), ``handled``, ``errors``, ``queued``
        (mutations waiting, all machines), ``queues`` (the longest, by id), ``exceptions`` (ids in Exception)."""
        out = self._call(P.INFO, None, {})
        if not isinstance(out, dict):
            raise TransportError("malformed info reply", code=P.INTERNAL)
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
                return self._reuse(rm, mutations)
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
        """Call ``fn(connected)`` (on the I/O thread) whenever the link goes down or comes back: ``fn(True)``
        when ``state`` enters Ready, ``fn(False)`` when it enters RetryingConn."""
        self._state.bind_handlers(CS.StatusHandlers(fn))

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
        pending = list(self._pending.values()) + [c for q in list(self._outbox) for c in q.calls]
        self._pending.clear()
        self._outbox.clear()
        closed = TransportError("client closed", code="closed")
        for call in pending:
            if not call.done:  # an answered call keeps its result (its caller may not have looked yet)
                call.error = closed
                call.done = True
                if call.sink is not None:
                    call.sink.put(call)
        if self._acalls or self._intake:  # the intake's calls are not in _acalls until made
            from .acalls import fail_all  # asyncio callers only: a sync client never imports asyncio

            fail_all(self, closed)
        for rm in mirrors:
            rm._local_dispose()
        self._state.set(CS.DISCONNECTED)  # only Disconnected: RetryingConn (and on_status) is for an open client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.id} -> {self.address} {'connected' if self.connected else 'disconnected'}>"

    # ------------------------------------------------------------------ calls (any thread)

    def mutate_many(self, ops: list[tuple[str, str, tuple[str, ...] | list[str], dict[str, Any] | None]], *,
                    timeout: float | None = None) -> list[int | BaseException]:
        """Apply mutations to several machines at once: ``ops`` = ``[(machine id, "add"|"remove"|"set",
        states, args or None), ...]``, sent pipelined (not one round trip each) and without subscribing.

        Returns, in order, each result (a ``Result`` or a queue tick) or the exception it raised on the server
        (``StateError``, ``TransportError`` ...). Raises TransportError when the replies don't come in time.
        Mirrors of these machines that this client holds are updated before it returns, others by pushes.
        """
        calls = self._many_calls(ops)
        if calls:
            self._run_calls(calls, self.timeout if timeout is None else timeout)
        return many_results(calls)

    def _many_calls(self, ops: list[tuple[str, str, tuple[str, ...] | list[str], dict[str, Any] | None]]
                    ) -> list[_Call]:
        """The calls of ``mutate_many`` (sync and async), with consecutive seqs from the next one."""
        calls: list[_Call] = []
        seq = self._next_seq
        for mach_id, kind, states, args in ops:
            if kind not in _MANY_KINDS:
                raise ValueError(f"unknown mutation {kind!r} (add, remove or set)")
            body: dict[str, Any] = {"s": list(states)}
            if args:
                body["a"] = dict(args)
            # a reply carries the update for a mirror this client holds: apply it, with the mutation's record
            # (its handlers and on_update callbacks get its states and args), as a mirror's own call would
            with self._lock:
                rm = self._mirrors.get(mach_id)
            on_reply = rm._mut_reply_handler(kind, states, args) if rm is not None and not rm.disposed else None
            calls.append(self._new_call(_MANY_KINDS[kind], mach_id, body, on_reply, seq + len(calls)))
        return calls

    def mutate_group(self, kind: str, states: tuple[str, ...] | list[str], ids: list[str],
                     args: dict[str, Any] | None = None, *, timeout: float | None = None) -> list[int | BaseException]:
        """One mutation (``"add"``, ``"remove"`` or ``"set"``) of many machines of this endpoint: one request (per
        ``protocol.MAX_GROUP`` ids) that the server applies to each machine in its own order (a busy one on its
        lane), without subscribing. Returns, in the order of ``ids``, each result (a ``Result`` or a queue tick)
        or the exception of that machine (``TransportError`` ``unknown_machine``, ``StateError``...). Raises
        ``TransportError`` when the reply does not come in time. A server without the request gets the
        mutations as ``mutate_many`` sends them. Mirrors this client holds are current when it returns."""
        t = self.timeout if timeout is None else timeout
        if not ids:
            return []
        if not self._no_group:
            calls = group_calls(self, kind, states, ids, args)
            self._run_calls(calls, t)
            out = group_results(ids, calls)
            if out is not None:
                return out
            self._no_group = True
        return self.mutate_many(many_ops(kind, states, ids, args), timeout=t)

    def watch_machines(self, fn: WatchFn, ids: list[str] | None = None, *, args: bool = True) -> Callable[[], None]:
        """Call ``fn(records, dropped)`` for the transitions of every machine of the endpoint (``ids``: of those
        only), with no mirror: ``records`` is a list of ``TransitionRecord`` (id, clock before and after, time,
        mutation; ``args=False`` leaves its args out), one call per push the server gathers; ``dropped`` counts
        the records the server dropped for this client meanwhile (it did not read fast enough). Runs on the
        thread that read the push. Returns the function that stops it. Raises ``TransportError`` (code
        ``unsupported``) when the server predates watches. Renewed after a reconnect."""
        key, body = self._watch_add(fn, ids, args)
        try:
            self._call(P.WATCH, None, body)
        except TransportError as exc:
            raise self._watch_failed(key, exc) from None
        return lambda: self._unwatch(key)

    def _watch_add(self, fn: WatchFn, ids: list[str] | None, args: bool) -> tuple[int, dict[str, Any]]:
        """Register a watch (sync or asyncio): its key and the ``watch`` request that covers it."""
        watches = self._watches
        if watches is None:
            watches = self._watches = Watches()
        key = watches.add(fn, ids, args)
        body = watches.body()
        assert body is not None
        return key, body

    def _watch_failed(self, key: int, exc: TransportError) -> TransportError:
        """The ``watch`` request failed: forget the watch; the error to raise."""
        self._unwatch(key)
        if unknown_kind(exc):
            return TransportError(f"{self.address} does not serve watches", code=UNSUPPORTED)
        return exc

    def _unwatch(self, key: int) -> None:
        watches = self._watches
        if watches is None or self._closed:
            return
        last = watches.remove(key)
        if not self._connected:
            return  # the server's session ends with the link (and a new one is watched with what is left)
        try:
            if last:
                self._notify(P.UNWATCH, None, {})
            else:
                self._call_async(P.WATCH, None, watches.body(), _ignore)
        except TransportError:
            pass  # the link is down: the server's session, and its watch, end with it

    def _wake(self) -> None:
        """Have the I/O thread look at this client's socket soon."""
        self._reactor.kick(self)

    # ------------------------------------------------------------------ the I/O thread

    def _service(self, now: float) -> None:
        """One look at the socket, on the I/O thread: read what waits, keep the link alive.

        The fd is watched edge-triggered: while a caller holds the socket it reads everything itself, so the I/O
        thread does not wake per round trip; it looks again every few milliseconds until the caller is done.
        """
        if self._closed:
            return
        self._kicked = False  # before the intake is read: a call queued after this wakes this thread again
        if self._intake:  # asyncio calls started in a burst: made here, into the outbox (sent below, or by a holder)
            from .acalls import intake

            intake(self)
        checked = False
        if not self._io.acquire(False):  # positional: a keyword costs a C call more, every push
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
            self._kicked = False  # before the outbox is read: a call queued after this wakes this thread again
            # read first: after a stall, pongs already waiting must count before the beat judges the link
            checked = self._pump(True)  # share
            if self._acalls and now >= self._resend_at:
                # asyncio callers wait on no thread: their resends and timeouts are this thread's (a look at most
                # every 0.1 s: each one goes over every call in flight)
                self._resend_at = min(self._resend(now), now + 0.1)
                from .acalls import expire  # imported once there are asyncio callers (asyncio is slow to import)

                expire(self, now)
            if self._outbox:
                self._send_outbox(now, share=True)
                checked = False  # a send may take the fd's edge for a message that arrived meanwhile
            if now >= self._next_beat and not self._closed:
                now = time.monotonic()  # the pump may have taken a while
                self._next_beat = now + P.HEARTBEAT
                self._beat(now)
                # and again after the beat's send: a send handles the socket's pending commands, which can take
                # the fd's edge for a message that arrived meanwhile
                checked = self._closed or self._pump(share=True)
            # the last thing done with the socket was asking its events and nothing waits (unless the pump
            # stopped at its bound): the release need not ask again
        finally:
            if checked:
                self._io.release()
            else:
                # what stays in the outbox waits for the next turn: waking this thread for it would spin
                self._release(outbox=False)

    def _beat(self, now: float) -> None:
        """Ping while connected; say hello while not (holding ``_io``)."""
        for seq, c in list(self._pending.items()):
            # requests no caller waits for are not resent: a heartbeat is replaced by the next beat's; another
            # (a resubscription, a resync) is dropped once its reply is overdue, as a link lost after the send
            # never brings it (a late reply is ignored; the mirror then syncs on its next push)
            if not c.sync and now >= c.next_try + (0.0 if c.kind in (P.PING, P.HELLO) else self.timeout):
                self._pending.pop(seq, None)
        if self._connected and now - self._last_rx > P.PEER_TIMEOUT:
            self._set_connected(False, network=True)
        if self._connected:
            self._call_async(P.PING, None, {}, self._on_pong)
        else:
            self._call_async(P.HELLO, None, self._hello_body(), self._on_rehello)

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
        self._call_async(P.HELLO, None, self._hello_body(), self._on_rehello)

    def _on_rehello(self, body: Any) -> None:
        if isinstance(body, dict):
            self._boot, self._session = _peer(body)
            self._ns_greeted(body)
        if self._connected:
            return
        self._state.add(CS.CONNECTED)
        with self._lock:
            mirrors = list(self._mirrors.values())
        for rm in mirrors:
            rm._resubscribe()
        body = self._watches.body() if self._watches is not None else None
        if body is not None:  # the server's session is new: watch again
            self._call_async(P.WATCH, None, body, _ignore)
        self._set_connected(True)

    def _set_connected(self, up: bool, network: bool = False) -> None:
        """The link came back (Connected and Ready) or went down (Disconnected and RetryingConn, and ErrNetwork
        when ``network``: the server went silent); the state machine's handlers run ``on_status``."""
        if up == self._connected or self._closed:
            return
        self._connected = up
        log.info("%s %s %s", self.id, "connected to" if up else "lost", self.address)
        if up:
            self._state.add(CS.CONNECTED, CS.READY)
        elif network:
            self._state.add(CS.DISCONNECTED, CS.RETRYING, CS.ERR_NETWORK)
        else:
            self._state.add(CS.DISCONNECTED, CS.RETRYING)

    def _handle(self, data: bytes) -> None:
        try:
            kind, seq, mach, body = P.unpack(data)
        except P.FrameError as exc:
            log.warning("bad frame from %s: %s", self.address, exc)
            return
        if kind in (P.OK, P.ERR):
            self._reply(kind, seq, body)
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
            if kind == P.WREC and self._watches is not None:
                self._watches.deliver(body)
            return
        # no lock for one dict.get (atomic in CPython): every push of every mirror comes here; _lock orders the
        # writers (machine(), close), and a mirror added or dropped meanwhile is found or not, as with the lock
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
            elif kind == P.HREC:
                rm._on_hrec(body)
        except Exception:
            log.exception("push %s for %s failed", kind, mach)


def _listed(body: Any) -> list[dict[str, Any]]:
    """A ``machs`` reply (a list, or columns from a server that knows them) as the list of machines."""
    try:
        return listing(body)
    except (ValueError, TypeError, KeyError, IndexError):
        raise TransportError("malformed machs reply", code=P.INTERNAL) from None


def _ignore(body: Any) -> None:
    """The reply to a request no caller waits for."""


def connect(addr: str, *, timeout: float = 3.0, server_key: Any = None, client_keys: Any = None,
            name: str | None = None, listing: bool = False) -> Client:
    """Connect to an endpoint; raises TransportError when nothing answers within ``timeout`` seconds.
    ``listing``: list the machines with the hello, in the same round trip (``client.listing``, as
    ``machines()`` gives it)."""
    return Client(addr, timeout=timeout, server_key=server_key, client_keys=client_keys, name=name,
                  listing=listing)
