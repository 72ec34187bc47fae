"""``Endpoint``: what ``expose()`` returns; binds the socket, changes what is served, stops."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import zmq

from machine import Machine
from machine.log import LazyLogger

from .. import protocol as P
from ..addr import is_loopback, normalize
from ..errors import TransportError
from .addrfiles import check_dir, check_id, write_addr_file
from .dispatch import Dispatcher
from .loop import ServerLoop

if TYPE_CHECKING:
    from ..remote import RemoteMachine
from .pushes import ChangeRecorder, Pushes, ReplicaRecorder

log = LazyLogger("transport.server")


class Endpoint:
    """Serves machines on one address. Create it with ``expose()``.

    ``address`` is the bound address (a random port resolved). ``add``/``remove`` change what is served while
    it runs; ``stop()`` releases the socket at once and removes the addr files.
    """

    def __init__(
        self,
        machs: Iterable[Machine | RemoteMachine],
        *,
        addr: str = "tcp://127.0.0.1:*",
        addr_dir: str | os.PathLike[str] | None = None,
        curve: str | os.PathLike[str] | None = None,
        allow: str | os.PathLike[str] | None = None,
        readonly: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        history: int = 1000,
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
        readonly_keys: set[bytes] = set()
        try:
            if curve is not None:
                from ..security import setup_server_curve

                self._auth, readonly_keys = setup_server_curve(self._zctx, s, curve, allow, readonly)
            try:
                s.bind(bind)
            except zmq.ZMQError as exc:
                raise TransportError(f"cannot bind {bind}: {exc}", code="bind") from None
        except BaseException:
            self._close_socket()  # nothing started may outlive a failed expose()
            raise
        self.address: str = s.getsockopt_string(zmq.LAST_ENDPOINT)
        self._addr_dir = addr_dir
        self._history = history
        self._lock = threading.Lock()
        self._machs: dict[str, Machine] = {}
        self._tracers: dict[str, ChangeRecorder | ReplicaRecorder] = {}
        self._files: dict[str, str] = {}
        self._offs: dict[str, Callable[[], None]] = {}  # replicas' on_update registrations
        self._stopped = False
        self.metrics: Any = None  # the /metrics server of expose(..., metrics=ADDR)
        self.boot = os.urandom(8).hex()  # changes with every start: a client seeing a new one re-subscribes
        self._loop = ServerLoop(s, curve is not None, readonly_keys, self._close_socket,
                                name=f"am-endpoint {self.address}")
        self._pushes = self._loop.pushes = Pushes(self._loop, self._machs)
        self._later = self._pushes.later  # (tests look at it: the machines whose push waits for a record)
        self._loop.dispatcher = Dispatcher(self)
        try:
            if addr_dir is not None:
                check_dir(addr_dir)
            for m in machs:
                self.add(m)
        except BaseException:
            # a failed expose() (the same machine twice, an id that can't name an addr file) leaves nothing
            # behind: no port bound, no tracer, no addr file
            for m in list(self._machs.values()):
                self.remove(m)
            self._loop.tasks.clear()
            self._loop.pipe.close()
            self._close_socket()
            raise
        # the first I/O thread: another takes over when one of its inline transitions is slow (leader.py)
        self._thread = threading.Thread(target=self._loop.run, name=self._loop.name, daemon=True)
        self._thread.start()

    def _close_socket(self) -> None:
        self._sock.close(0)
        if self._auth is not None:
            self._auth.stop()
        self._zctx.term()

    # ------------------------------------------------------------------ public

    @property
    def machines(self) -> list[Machine]:
        """The machines served, in the order they were added."""
        with self._lock:
            return list(self._machs.values())

    @property
    def sessions(self) -> int:
        """Connected client sessions."""
        return len(self._loop.sessions)

    @property
    def errors(self) -> int:
        """Malformed or refused requests answered with an error."""
        return self._loop.errors

    @property
    def handled(self) -> int:
        """Requests handled."""
        return self._loop.handled

    def add(self, mach: Machine | RemoteMachine) -> None:
        """Serve one more machine (its id must be unique on this endpoint)."""
        from ..remote import RemoteMachine

        if not isinstance(mach, (Machine, RemoteMachine)):
            raise TypeError(f"expose() takes machines, got {type(mach).__name__}")
        with self._lock:
            if self._stopped:
                raise TransportError("endpoint stopped", code="stopped")
            if mach.id in self._machs:
                raise ValueError(f"machine {mach.id} is already exposed on {self.address}")
            if self._addr_dir is not None:
                check_id(mach.id)
            # a replica is served through the members it shares with a Machine (see remote.served_clock)
            self._machs[mach.id] = cast(Machine, mach)
            # a replica's clock changes come from upstream pushes (on_update below), not from transitions
            tracer = self._tracers[mach.id] = (ReplicaRecorder(self, mach) if isinstance(mach, RemoteMachine)
                                               else ChangeRecorder(self, mach))
        mach.bind_tracer(tracer)
        if self._history and not isinstance(mach, RemoteMachine) and mach.history is None:
            mach.keep_history(self._history)  # ops can ask what happened before they connected
        if isinstance(mach, RemoteMachine):
            self._offs[mach.id] = mach.on_update(tracer.mirror_update)
        fleet = self._loop.dispatcher.fleet
        if fleet.watches:  # a fleet watch takes it in (read after the machine is in _machs: see Fleet._watch)
            self._post(lambda: fleet.exposed(cast(Machine, mach)))
        if self._addr_dir is not None:
            try:
                self._files[mach.id] = write_addr_file(self._addr_dir, mach.id, self.address)
            except BaseException:
                self.remove(mach)
                raise

    def remove(self, mach: Machine | RemoteMachine | str) -> None:
        """Stop serving a machine (by object or id); its clients get an ``unknown_machine`` error next."""
        mach_id = mach if isinstance(mach, str) else mach.id
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
        off = self._offs.pop(mach_id, None)
        if off is not None:
            off()
        self._post(lambda: self._forget(mach_id))
        path = self._files.pop(mach_id, None)
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def send_payload(self, name: str, data: Any, *, client: str | None = None, mach: str | None = None) -> int:
        """Push ``data`` (msgpack-serializable) to one client (by its id) or to every connected client.

        ``mach`` names the machine it concerns (optional). Returns how many clients it was queued for; the
        clients' ``on_payload`` callbacks get ``{"name", "data", "token", "machine"}``. Delivery is best
        effort: a client that is gone or not reading does not get it.
        """
        frame_body = {"name": str(name), "data": data, "token": os.urandom(8).hex(), "machine": mach}
        P.pack(P.PAY, 0, mach, frame_body)  # fail here, in the caller, on a value msgpack can't carry
        loop = self._loop
        targets = [s for s in list(loop.sessions.values()) if client is None or s.client_id == client]

        def send() -> None:
            frame = P.pack(P.PAY, 0, mach, frame_body)
            for sess in targets:
                if sess.identity in loop.sessions:
                    loop.send(sess, frame)

        self._post(send)
        return len(targets)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving: close the socket (LINGER 0), remove addr files, detach from the machines."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            machs = list(self._machs.values())
        self._loop.stopped = True
        self._loop.wake()
        if threading.get_ident() != self._loop.ident:  # (from a handler run inline: it cannot wait for itself)
            self._loop.exited.wait(timeout)
        self._loop.dispatcher.stop()
        if self.metrics is not None:
            self.metrics.stop()
        for m in machs:
            try:
                self.remove(m)
            except ValueError:
                pass
        self._loop.pipe.close()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Endpoint {self.address} machines={len(self._machs)} sessions={len(self._loop.sessions)}>"

    # ------------------------------------------------------------------ for the I/O thread and the tracers

    def _post(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the I/O thread."""
        self._loop.post(fn)

    def _forget(self, mach_id: str) -> None:
        self._pushes.forget(mach_id)
        self._loop.dispatcher.fleet.removed(mach_id)
        lanes = self._loop.dispatcher.lanes
        lane = lanes.get(mach_id)
        if lane is not None and not lane.outstanding and mach_id not in self._machs:
            del lanes[mach_id]  # (one with requests waiting goes once they are answered)
        for sess in self._loop.sessions.values():
            stop = sess.follows.pop(mach_id, None)
            if stop is not None:
                stop()

    def _drop_machine(self, mach_id: str) -> None:
        if mach_id in self._machs:
            try:
                self.remove(mach_id)
            except ValueError:
                pass
