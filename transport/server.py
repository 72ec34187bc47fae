"""The server side: an ``Endpoint`` serves many machines to many clients on one ROUTER socket.

One I/O thread owns the socket. Requests are handled in arrival order; changes made on the server side are
noticed through a tracer on each exposed machine and pushed to every subscribed client as clock diffs,
coalesced while the thread is busy, in order with the replies (one pipe per client).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any, cast

import zmq

from machine import Ctx, Machine, SchemaError, StateError, Tracer, Transition, Waiter
from machine.log import LazyLogger

from . import protocol as P
from .addr import is_loopback, normalize, write_addr_file
from .errors import TransportError

log = LazyLogger("transport.server")  # logging is imported on first use

MAX_WHEN_ARGS = 256  # pending server-side waiters per client session
MAX_MUTS = 64  # mutations remembered per machine between two pushes
MAX_HOLES = 10_000  # seqs below a session's highest one that may still arrive (out of order or retried)
_NB = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
# pyzmq's compiled send, without the Python wrapper zmq.Socket puts around it (as costly as the send itself)
_raw_send = zmq.backend.Socket.send
_POLLIN = int(zmq.POLLIN)  # plain ints: an IntFlag operand makes every `&` build an enum member
_MORE_NB = int(zmq.NOBLOCK | zmq.SNDMORE)
LATER_MAX = 0.05  # seconds a push to watchers may wait for the record of its last mutation
# a last-sent clock that matches no real one: the next push to that mirror fails its checksum, so it syncs
_STALE: list[int] = []


class _Sub:
    """One session's view of one machine: what was last sent, so the next update is a diff."""

    __slots__ = ("time", "qtick", "mtick", "muts")

    def __init__(self, time: list[int], qtick: int, mtick: int, muts: bool) -> None:
        self.time = time
        self.qtick = qtick
        self.mtick = mtick
        self.muts = muts


class _Session:
    """A connected client, keyed by its socket identity."""

    __slots__ = ("identity", "client_id", "last_seen", "subs", "replies", "args_waiters", "readonly", "user",
                 "top", "holes", "token")

    def __init__(self, identity: bytes, readonly: bool, user: str | None = None) -> None:
        self.user = user  # the client's CURVE public key (z85), None without CURVE
        self.identity = identity
        self.client_id = identity.decode(errors="replace")
        self.last_seen = time.monotonic()
        self.subs: dict[str, _Sub] = {}
        self.replies: OrderedDict[int, Any] = OrderedDict()
        # every seq seen: all up to `top` except those in `holes` (sent out of order, or lost on the way)
        self.top = 0
        self.holes: set[int] = set()
        self.args_waiters: dict[Any, tuple[str, Waiter, Ctx]] = {}
        self.readonly = readonly
        self.token = os.urandom(4).hex()  # in hello and ping replies: a client seeing another knows it was forgotten


def _first_time(sess: _Session, seq: int) -> bool:
    """Record ``seq`` (> 0) as seen by this session; False when it was seen before (a retried request).

    Exact for the last MAX_HOLES seqs; an older one counts as seen. The reply cache keeps only the last results,
    and a retry whose result left it must still never be applied twice."""
    top = sess.top
    if seq == top + 1:  # the common case: in order
        sess.top = seq
        return True
    if seq > top:
        holes = sess.holes
        holes.update(range(max(top + 1, seq - MAX_HOLES), seq))
        sess.top = seq
        if len(holes) > MAX_HOLES:  # seqs that never came (heartbeats lost in an outage): forget the oldest
            floor = seq - MAX_HOLES
            sess.holes = {h for h in holes if h > floor}
        return True
    if seq in sess.holes:
        sess.holes.discard(seq)
        return True
    return False


class _Watch(Tracer):
    """Marks its machine dirty after each transition, so the endpoint pushes the change."""

    def __init__(self, ep: Endpoint, mach: Machine) -> None:
        self.ep = ep
        self.mach_id = mach.id

    def transition_end(self, tx: Transition) -> None:
        ep = self.ep
        if ep._want_muts.get(self.mach_id) and tx.is_accepted:
            m = tx.mutation
            muts = ep._muts.setdefault(self.mach_id, deque(maxlen=MAX_MUTS))
            # the clock after this transition too: a watcher then sees each transition, not only their sum
            muts.append([str(m.type), list(m.called), P.sanitize(m.args or {}), list(tx.time_after)])
        ep._mark_dirty(self.mach_id)

    def mirror_update(self, update: dict[str, Any]) -> None:
        ep = self.ep
        if ep._want_muts.get(self.mach_id) and update["mutations"]:
            muts = ep._muts.setdefault(self.mach_id, deque(maxlen=MAX_MUTS))
            for m in update["mutations"]:  # a mirror's update is one upstream transition, or a sum of them
                muts.append([m["type"], m["called"], m["args"], update["time"]])
        ep._mark_dirty(self.mach_id)

    def schema_change(self, mach: Machine, old_schema: dict[str, Any]) -> None:
        self.ep._post(lambda: self.ep._push_schema(mach))

    def machine_dispose(self, mach_id: str) -> None:
        self.ep._post(lambda: self.ep._drop_machine(mach_id))


class Endpoint:
    """Serves machines on one address. Create it with ``expose()``.

    ``address`` is the bound address (a random port resolved). ``add``/``remove`` change what is served while
    it runs; ``stop()`` releases the socket at once and removes the addr files.
    """

    def __init__(
        self,
        machs: Iterable[Machine],
        *,
        addr: str = "tcp://127.0.0.1:*",
        addr_dir: str | os.PathLike[str] | None = None,
        curve: str | os.PathLike[str] | None = None,
        allow: str | os.PathLike[str] | None = None,
        readonly: str | os.PathLike[str] | None = None,
        insecure: bool = False,
    ) -> None:
        bind = normalize(addr)
        if curve is None and not is_loopback(bind):
            if not insecure:
                raise TransportError(
                    f"refusing to serve {bind} without CURVE keys: it is not a loopback address "
                    f"(pass curve=... and allow=..., or insecure=True)", code="insecure")
            log.warning("serving %s without encryption or authentication (insecure=True)", bind)
        # a context of its own: its term() in stop() waits until the listening socket is really closed (so the
        # port is free at once), and a CURVE endpoint needs its own ZAP authenticator, one per context
        self._zctx: zmq.Context[Any] = zmq.Context()
        self._curve = curve is not None
        self._sock = self._zctx.socket(zmq.ROUTER)
        s = self._sock
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        s.setsockopt(zmq.ROUTER_HANDOVER, 1)
        s.setsockopt(zmq.MAXMSGSIZE, P.MAX_MSG)
        s.setsockopt(zmq.SNDHWM, 10_000)  # per client: pushes beyond it are dropped (the mirror then syncs)
        s.setsockopt(zmq.RCVHWM, P.MAX_PENDING)  # per client: requests queued at most; then the client waits
        s.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        s.setsockopt(zmq.HEARTBEAT_TTL, 3000)
        self._auth: Any = None
        self._readonly_keys: set[bytes] = set()
        try:
            if curve is not None:
                from .security import setup_server_curve

                self._auth, self._readonly_keys = setup_server_curve(self._zctx, s, curve, allow, readonly)
            try:
                s.bind(bind)
            except zmq.ZMQError as exc:
                raise TransportError(f"cannot bind {bind}: {exc}", code="bind") from None
        except BaseException:
            # nothing started may outlive a failed expose()
            s.close(0)
            if self._auth is not None:
                self._auth.stop()
            self._zctx.term()
            raise
        self.address: str = s.getsockopt_string(zmq.LAST_ENDPOINT)
        self._addr_dir = addr_dir
        self._lock = threading.Lock()
        self._machs: dict[str, Machine] = {}
        self._tracers: dict[str, _Watch] = {}
        self._files: dict[str, str] = {}
        self._sessions: dict[bytes, _Session] = {}
        self._dirty: set[str] = set()
        self._retry: set[str] = set()  # machines with a push that could not be delivered
        self._muts: dict[str, deque[list[Any]]] = {}
        self._want_muts: dict[str, int] = {}
        self._later: dict[str, float] = {}  # machines whose push waits for a mutation record -> since when
        self._held: dict[str, list[list[Any]]] = {}  # their records drained meanwhile, oldest first
        self._ctl: deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopped = False
        self.boot = os.urandom(8).hex()  # changes with every start: a client seeing a new one re-subscribes
        self.errors = 0  # malformed or refused requests answered with an error
        self.handled = 0  # requests handled
        for m in machs:
            self.add(m)
        self._ident = 0
        self._sent = 0  # messages sent by the I/O thread (so it knows when to look at the socket again)
        self._thread = threading.Thread(target=self._run, name=f"am-endpoint {self.address}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public

    @property
    def machines(self) -> list[Machine]:
        """The machines served, in the order they were added."""
        with self._lock:
            return list(self._machs.values())

    @property
    def sessions(self) -> int:
        """Connected client sessions."""
        return len(self._sessions)

    def add(self, mach: Machine) -> None:
        """Serve one more machine (its id must be unique on this endpoint)."""
        if not isinstance(mach, Machine):
            raise TypeError(f"expose() takes machines, got {type(mach).__name__}")
        with self._lock:
            if self._stopped:
                raise TransportError("endpoint stopped", code="stopped")
            if mach.id in self._machs:
                raise ValueError(f"machine {mach.id} is already exposed on {self.address}")
            self._machs[mach.id] = mach
            tracer = self._tracers[mach.id] = _Watch(self, mach)
        mach.bind_tracer(tracer)
        from .remote import RemoteMachine

        if isinstance(mach, RemoteMachine):
            # a replica: its clock changes come from upstream pushes, not from transitions
            mach.on_update(tracer.mirror_update)
        if self._addr_dir is not None:
            self._files[mach.id] = write_addr_file(self._addr_dir, mach.id, self.address)

    def remove(self, mach: Machine | str) -> None:
        """Stop serving a machine (by object or id); its clients get an ``unknown_machine`` error next."""
        mach_id = mach.id if isinstance(mach, Machine) else mach
        with self._lock:
            m = self._machs.pop(mach_id, None)
            tracer = self._tracers.pop(mach_id, None)
        if m is None:
            raise ValueError(f"machine {mach_id} is not exposed on {self.address}")
        if tracer is not None:
            try:
                m.detach_tracer(tracer)
            except ValueError:
                pass
        self._post(lambda: self._forget_muts(mach_id))
        path = self._files.pop(mach_id, None)
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _forget_muts(self, mach_id: str) -> None:
        """Drop what was kept for a machine's watchers (on the I/O thread, once it is no longer served)."""
        if mach_id not in self._machs:
            for d in (self._muts, self._held, self._later):
                d.pop(mach_id, None)

    def send_payload(self, name: str, data: Any, *, client: str | None = None, mach: str | None = None) -> int:
        """Push ``data`` (msgpack-serializable) to one client (by its id) or to every connected client.

        ``mach`` names the machine it concerns (optional). Returns how many clients it was queued for; the
        clients' ``on_payload`` callbacks get ``{"name", "data", "token", "machine"}``. Delivery is best
        effort: a client that is gone or not reading does not get it.
        """
        frame_body = {"name": str(name), "data": data, "token": os.urandom(8).hex(), "machine": mach}
        P.pack(P.PAY, 0, mach, frame_body)  # fail here, in the caller, on a value msgpack can't carry
        targets = [s for s in list(self._sessions.values()) if client is None or s.client_id == client]

        def send() -> None:
            frame = P.pack(P.PAY, 0, mach, frame_body)
            for sess in targets:
                if sess.identity in self._sessions:
                    self._send(sess, frame)

        self._post(send)
        return len(targets)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving: close the socket (LINGER 0), remove addr files, detach from the machines."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            machs = list(self._machs.values())
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        for m in machs:
            try:
                self.remove(m)
            except ValueError:
                pass
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Endpoint {self.address} machines={len(self._machs)} sessions={len(self._sessions)}>"

    # ------------------------------------------------------------------ cross-thread signals

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already awake (pipe full) or stopped

    def _mark_dirty(self, mach_id: str) -> None:
        if mach_id not in self._dirty:
            self._dirty.add(mach_id)
            if threading.get_ident() != self._ident:
                self._wake()  # the I/O thread flushes after each batch anyway

    def _post(self, fn: Callable[[], None]) -> None:
        self._ctl.append(fn)
        self._wake()

    # ------------------------------------------------------------------ the I/O thread

    def _run(self) -> None:
        self._ident = threading.get_ident()
        sock = self._sock
        getsockopt: Callable[[int], int] = sock.getsockopt  # type: ignore[assignment]  # EVENTS is an int
        recv = sock.recv
        curve = self._curve
        wake_r = self._wake_r
        next_sweep = time.monotonic() + 1.0
        ep: select.epoll | None = None
        try:
            # an epoll over the socket's fd (level-triggered: readable while libzmq has commands to process) and
            # the wake pipe: one syscall per wait, where zmq.Poller makes three or four. Inside the try: if it
            # cannot be made (no fds left), the socket is still closed below
            ep = select.epoll()
            ep.register(cast(int, sock.getsockopt(zmq.FD)), select.EPOLLIN)
            ep.register(wake_r, select.EPOLLIN)
            while not self._stopped:
                n = 0
                # a batch, then pushes, so one busy client can't starve the rest. Asking EVENTS also processes
                # libzmq's pending commands, which is what empties the fd before the wait below
                while n < 1000 and getsockopt(_EVENTS) & _POLLIN:  # cheaper than catching Again
                    n += 1
                    if curve:  # the client's key (User-Id) decides its session and its rights
                        frames = sock.recv_multipart(_NB, copy=False)
                        user = frames[-1].get("User-Id")
                        self._handle([f.bytes for f in frames], user if isinstance(user, str) else None)
                        continue
                    identity = recv(_NB)
                    frame = recv(_NB, copy=False)  # a Frame says whether more parts follow: no RCVMORE asked
                    if frame.more:
                        self._handle([identity, frame.bytes, *sock.recv_multipart(_NB)])
                    else:
                        self._request(identity, frame.bytes, None)
                sent = self._sent
                while self._ctl:
                    fn = self._ctl.popleft()
                    try:
                        fn()
                    except Exception:
                        log.exception("endpoint task failed")
                if self._later:
                    self._dirty.update(self._later)
                if self._dirty:
                    self._flush()
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + 1.0
                    self._sweep(now)
                if n == 1000 or self._sent != sent or self._ctl or self._dirty:
                    # look at the socket again first: a send processes libzmq's commands too, and may have taken
                    # the fd's signal for a request that arrived meanwhile
                    continue
                for fd, _ in ep.poll(0.001 if self._later else 0.5):
                    if fd == wake_r:
                        try:
                            while os.read(wake_r, 4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
        except Exception:
            log.exception("endpoint %s crashed", self.address)
        finally:
            for sess in list(self._sessions.values()):
                self._drop_session(sess)
            if ep is not None:
                ep.close()
            sock.close(0)
            if self._auth is not None:
                self._auth.stop()
            self._zctx.term()

    def _send(self, sess: _Session, frame: bytes) -> bool:
        try:
            # two sends with plain int flags: send_multipart costs twice as much for its generality
            sock = self._sock
            self._sent += 1
            _raw_send(sock, sess.identity, _MORE_NB)
            _raw_send(sock, frame, _NB)
            return True
        except zmq.Again:
            # the client is not reading: drop this message; its next update fails the checksum -> sync
            return False
        except zmq.ZMQError:
            self._drop_session(sess)
            return False

    def _reply_err(self, identity: bytes, seq: int, mach: str | None, code: str, msg: str,
                   type_name: str = "TransportError", extra: dict[str, Any] | None = None) -> None:
        self.errors += 1
        body: dict[str, Any] = {"type": type_name, "msg": msg, "code": code}
        if extra:
            body.update(extra)
        try:
            self._sent += 1
            self._sock.send_multipart([identity, P.pack(P.ERR, seq, mach, body)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _handle(self, parts: list[bytes], user: str | None = None) -> None:
        if len(parts) != 2:
            identity = parts[0] if parts else b""
            log.warning("dropped a message of %d parts from %r", len(parts), identity[:32])
            if identity:
                self._reply_err(identity, 0, None, P.INVALID_PARAMS, "a message is exactly one frame")
            return
        self._request(parts[0], parts[1], user)

    def _request(self, identity: bytes, data: bytes, user: str | None) -> None:
        """One request: a client's identity and its one frame."""
        try:
            kind, seq, mach_id, body = P.unpack(data)
        except P.FrameError as exc:
            log.warning("bad frame from %r: %s", identity[:32], exc)
            self._reply_err(identity, exc.seq, exc.mach, exc.code, str(exc))
            return
        sess = self._sessions.get(identity)
        if sess is not None and sess.user != user:
            # another key took over this identity (ROUTER_HANDOVER): it gets nothing of the old session
            self._drop_session(sess)
            sess = None
        if sess is None:
            readonly = user is not None and user.encode() in self._readonly_keys
            sess = self._sessions[identity] = _Session(identity, readonly, user)
        sess.last_seen = time.monotonic()
        self.handled += 1
        # every request's seq is recorded, whatever its kind or fate: only a mutation is refused when retried
        first = _first_time(sess, seq) if seq else True
        try:
            if kind in P.MUTATING and not sess.readonly and isinstance(body, dict):
                # the hot path: a mutation
                m = self._machs.get(mach_id) if mach_id is not None else None
                if m is not None and not m.disposed:
                    self._mutate(sess, kind, seq, m, body, first)
                    return
            self._dispatch(sess, kind, seq, mach_id, body, first)
        except StateError as exc:
            self._reply_err(identity, seq, mach_id, P.UNKNOWN_STATE, str(exc), "StateError",
                            {"states": exc.states, "machine": exc.machine_id})
        except SchemaError as exc:
            self._reply_err(identity, seq, mach_id, P.INVALID_PARAMS, str(exc), "SchemaError")
        except TransportError as exc:
            if exc.code == P.INVALID_PARAMS:
                log.warning("invalid %s request from %r: %s", kind[:32], identity[:32], exc)
            self._reply_err(identity, seq, mach_id, exc.code, str(exc))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("invalid %s request from %r: %s", kind, identity[:32], exc)
            self._reply_err(identity, seq, mach_id, P.INVALID_PARAMS, f"{kind}: {exc}")
        except Exception as exc:
            log.exception("request %s from %r failed", kind, identity[:32])
            self._reply_err(identity, seq, mach_id, P.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _mach(self, mach_id: str | None) -> Machine:
        if mach_id is None:
            raise TransportError("this request needs a machine id", code=P.INVALID_PARAMS)
        m = self._machs.get(mach_id)
        if m is None or m.disposed:
            raise TransportError(f"unknown machine: {mach_id}", code=P.UNKNOWN_MACHINE)
        return m

    def _ok(self, sess: _Session, seq: int, mach_id: str | None, body: Any) -> None:
        if seq:
            self._send(sess, P.pack(P.OK, seq, mach_id, body))

    def _dispatch(self, sess: _Session, kind: str, seq: int, mach_id: str | None, body: Any, first: bool) -> None:
        if kind not in P.REQUESTS:
            raise TransportError(f"unknown message kind: {kind[:64]!r}", code=P.INVALID_PARAMS)
        if body is not None and not isinstance(body, (dict, list)):
            raise TransportError("body must be a map, a list or nil", code=P.INVALID_PARAMS)
        if kind in P.MUTATING:
            if sess.readonly:
                raise TransportError(f"no access: client {sess.client_id} is read-only", code=P.NO_ACCESS)
            self._mutate(sess, kind, seq, self._mach(mach_id), body if isinstance(body, dict) else {}, first)
            return
        if kind == P.PING:
            self._ok(sess, seq, None, {"boot": self.boot, "session": sess.token})
        elif kind == P.HELLO:
            b = body if isinstance(body, dict) else {}
            proto = b.get("proto")
            if proto != P.PROTO:
                raise TransportError(f"unsupported protocol version {proto!r} (server speaks {P.PROTO})",
                                     code=P.INVALID_PARAMS)
            self._ok(sess, seq, None, {"proto": P.PROTO, "machines": len(self._machs),
                                       "readonly": sess.readonly, "boot": self.boot, "session": sess.token})
        elif kind == P.MACHS:
            out = []
            for m in self.machines:
                if m.disposed:
                    continue
                out.append({"id": m.id, "parent_id": m.parent_id, "tags": m.tags, "time": m.time(),
                            "states": m.state_names})
            self._ok(sess, seq, None, out)
        elif kind == P.SUB:
            m = self._mach(mach_id)
            b = body if isinstance(body, dict) else {}
            muts = bool(b.get("muts", False))
            old = sess.subs.get(m.id)
            if old is not None and old.muts:
                self._want_muts[m.id] -= 1
            t, q, mt = m.time(), m.queue_tick, m.machine_tick
            sess.subs[m.id] = _Sub(t, q, mt, muts)
            if muts:
                self._want_muts[m.id] = self._want_muts.get(m.id, 0) + 1
            self._ok(sess, seq, m.id, self._export(m, t, q, mt))
        elif kind == P.UNSUB:
            if mach_id is None:
                raise TransportError("unsub needs a machine id", code=P.INVALID_PARAMS)
            self._unsub(sess, mach_id)
            self._ok(sess, seq, mach_id, {})
        elif kind == P.SYNC:
            m = self._mach(mach_id)
            t, q, mt = m.time(), m.queue_tick, m.machine_tick
            sub = sess.subs.get(m.id)
            if sub is not None:
                sub.time, sub.qtick, sub.mtick = t, q, mt
            self._ok(sess, seq, m.id, [t, q, mt])
        elif kind == P.CAN:
            m = self._mach(mach_id)
            b = body if isinstance(body, dict) else {}
            states = P.check_names(b.get("s"))
            args = P.check_args(b.get("a"))
            fn = m.can_remove if b.get("type") == P.REMOVE else m.can_add
            self._ok(sess, seq, m.id, int(fn(*states, args=args)))
        elif kind == P.WHEN_ARGS:
            self._when_args(sess, seq, self._mach(mach_id), body if isinstance(body, dict) else {})
        elif kind == P.WHEN_ARGS_CANCEL:
            b = body if isinstance(body, dict) else {}
            entry = sess.args_waiters.pop(b.get("token"), None)
            if entry is not None:
                entry[2].cancel()
            self._ok(sess, seq, mach_id, {})
        elif kind == P.BYE:
            self._drop_session(sess)

    def _mutate(self, sess: _Session, kind: str, seq: int, m: Machine, body: dict[str, Any], first: bool) -> None:
        if not first:
            # a retried request: answer again, never apply twice
            cached = sess.replies.get(seq)
            if cached is None:
                raise TransportError(f"request {seq} was applied already; its result is no longer kept",
                                     code=P.DUPLICATE)
            self._ok(sess, seq, m.id, [cached, self._diff(sess, m)])
            return
        args = P.check_args(body.get("a"))
        if kind == P.ADD_ERR:
            state = body.get("state", "Exception")
            if not isinstance(state, str):
                raise ValueError("state must be a name")
            from .errors import RemoteError

            err = RemoteError(str(body.get("msg", "")), str(body.get("type", "Exception")))
            r = m.add_err_state(state, err, args)
        else:
            states = P.check_names(body.get("s"))
            if args is not None and len(P.pack("", 0, None, args)) > P.MAX_ARGS_BYTES:
                raise TransportError(f"args larger than {P.MAX_ARGS_BYTES} bytes", code=P.LIMIT)
            if kind == P.REMOVE:
                r = m.remove(*states, args=args)
            elif kind == P.SET:
                r = m.set(*states, args=args)
            else:
                r = m.add(*states, args=args)
        r = int(r)
        if not seq:
            return  # add_ns: no reply; the change reaches the client as a push
        sess.replies[seq] = r
        if len(sess.replies) > P.REPLY_CACHE:
            sess.replies.popitem(last=False)
        self._ok(sess, seq, m.id, [r, self._diff(sess, m)])

    def _diff(self, sess: _Session, m: Machine) -> list[Any] | None:
        """The update that brings this session's mirror of ``m`` to now (None if it has no mirror)."""
        sub = sess.subs.get(m.id)
        if sub is None:
            return None
        t, q, mt = m._time, m.queue_tick, m.machine_tick  # _time is replaced, never changed in place
        idxs, deltas = P.diff(sub.time, t) if len(t) == len(sub.time) else ([], [])
        upd = [idxs, deltas, q, mt, P.checksum(t, q, mt)]
        sub.time, sub.qtick, sub.mtick = t, q, mt
        return upd

    def _export(self, m: Machine, t: list[int], q: int, mt: int) -> dict[str, Any]:
        return {"id": m.id, "names": m.state_names, "schema": P.schema_to_wire(m.schema), "time": t,
                "qtick": q, "mtick": mt, "parent_id": m.parent_id, "tags": m.tags}

    def _when_args(self, sess: _Session, seq: int, m: Machine, body: dict[str, Any]) -> None:
        state, args, token = body.get("state"), body.get("args"), body.get("token")
        if not isinstance(state, str) or not isinstance(args, dict) or token is None:
            raise ValueError("when_args takes {state, args, token}")
        if token in sess.args_waiters:
            raise ValueError(f"when_args token {token!r} in use")
        if len(sess.args_waiters) >= MAX_WHEN_ARGS:
            raise TransportError(f"too many pending when_args waiters (limit {MAX_WHEN_ARGS})", code=P.LIMIT)
        # an own ctx per token: waiters with equal arguments are shared, and this one may be cancelled alone
        ctx = Ctx()
        w = m.when_args(state, args, ctx=ctx)
        sess.args_waiters[token] = (m.id, w, ctx)
        identity = sess.identity

        def done() -> None:
            self._post(lambda: self._args_done(identity, m.id, token, w))

        self._ok(sess, seq, m.id, {})
        w.on_done(done)

    def _args_done(self, identity: bytes, mach_id: str, token: Any, w: Waiter) -> None:
        sess = self._sessions.get(identity)
        entry = sess.args_waiters.get(token) if sess is not None else None
        if sess is None or entry is None or entry[1] is not w:
            return
        del sess.args_waiters[token]
        self._flush_one(sess, mach_id)  # the clock first, so the mirror shows the state when the waiter ends
        self._send(sess, P.pack(P.ARGS_OK, 0, mach_id, [token, not w.cancelled]))

    def _flush(self) -> None:
        dirty = self._dirty
        self._dirty = set()
        for mach_id in dirty:
            m = self._machs.get(mach_id)
            if m is None:
                self._later.pop(mach_id, None)
                self._held.pop(mach_id, None)
                continue
            t = m._time  # replaced, never changed in place: a consistent snapshot without a copy
            q, mt = m.queue_tick, m.machine_tick
            if len(t) == 0:
                continue
            muts = self._held.pop(mach_id, None)
            muts_q = self._muts.get(mach_id)
            if muts_q:
                muts = muts or []
                while muts_q:  # popleft, not the deque itself: a machine thread may be appending to it
                    muts.append(muts_q.popleft())
                del muts[:-MAX_MUTS]
            if self._want_muts.get(mach_id) and (not muts or muts[-1][3] != t):
                # the clock shows a transition whose mutation is not recorded yet (the machine sets its clock,
                # then calls transition_end): push once it is, a moment later, so a watcher gets each transition
                # with its mutation. After LATER_MAX the push goes out anyway: a clock change with no mutation (a
                # sync), or a final handler slower than that (its record then comes too late and is not sent).
                now = time.monotonic()
                since = self._later.setdefault(mach_id, now)
                if now - since < LATER_MAX:
                    if muts:
                        self._held[mach_id] = muts  # the endpoint's own list: machine threads never touch it
                    continue
            self._later.pop(mach_id, None)
            csum = -1
            # mirrors that saw the same clock get the same bytes: encode each distinct update once
            frames: dict[tuple[int, bool], tuple[list[int], bytes]] = {}  # the list kept alive: its id is a key
            for sess in list(self._sessions.values()):
                sub = sess.subs.get(mach_id)
                if sub is None or sub.time == t:
                    continue
                with_muts = bool(sub.muts and muts)
                key = (id(sub.time), with_muts)
                hit = frames.get(key)
                if hit is not None:
                    frame = hit[1]
                else:
                    if csum < 0:
                        csum = P.checksum(t, q, mt)
                    idxs, deltas = P.diff(sub.time, t) if len(t) == len(sub.time) else ([], [])
                    body: list[Any] = [idxs, deltas, q, mt, csum]
                    if with_muts:
                        body.append(muts)
                    frame = P.pack(P.CLK, 0, mach_id, body)
                    frames[key] = (sub.time, frame)
                sub.time, sub.qtick, sub.mtick = t, q, mt
                if not self._send(sess, frame):
                    # not delivered (the client is not reading): send it again later, as a full resync
                    sub.time = _STALE
                    self._retry.add(mach_id)

    def _flush_one(self, sess: _Session, mach_id: str) -> None:
        m = self._machs.get(mach_id)
        sub = sess.subs.get(mach_id)
        if m is None or sub is None:
            return
        upd = self._diff(sess, m)
        if upd is not None and upd[0]:
            self._send(sess, P.pack(P.CLK, 0, mach_id, upd))

    def _push_schema(self, m: Machine) -> None:
        t, q, mt = m.time(), m.queue_tick, m.machine_tick
        for sess in list(self._sessions.values()):
            sub = sess.subs.get(m.id)
            if sub is None:
                continue
            sub.time, sub.qtick, sub.mtick = t, q, mt
            self._send(sess, P.pack(P.SCHEMA, 0, m.id, self._export(m, t, q, mt)))

    def _drop_machine(self, mach_id: str) -> None:
        if mach_id in self._machs:
            try:
                self.remove(mach_id)
            except ValueError:
                pass

    def _unsub(self, sess: _Session, mach_id: str) -> None:
        sub = sess.subs.pop(mach_id, None)
        if sub is not None and sub.muts:
            self._want_muts[mach_id] -= 1
        for token, (mid, _, ctx) in list(sess.args_waiters.items()):
            if mid == mach_id:
                del sess.args_waiters[token]
                ctx.cancel()

    def _drop_session(self, sess: _Session) -> None:
        if self._sessions.pop(sess.identity, None) is None:
            return
        for mach_id in list(sess.subs):
            self._unsub(sess, mach_id)
        for _, _, ctx in sess.args_waiters.values():
            ctx.cancel()
        sess.args_waiters.clear()

    def _sweep(self, now: float) -> None:
        if self._retry:
            self._dirty |= self._retry
            self._retry.clear()
        for sess in list(self._sessions.values()):
            if now - sess.last_seen > P.PEER_TIMEOUT:
                log.info("client %s went silent, session dropped", sess.client_id)
                self._drop_session(sess)

