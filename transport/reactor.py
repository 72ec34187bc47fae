"""The process's one I/O thread for every ``Client``: one epoll over all their sockets' fds.

A caller holding its client's socket reads its own replies; this thread reads what arrives between calls
(pushes, late replies), sends the heartbeats, and looks at every client now and then as a safety net under the
edge-triggered fds. ``reactor()`` gives the process's instance (a new one after a fork).
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import TYPE_CHECKING

from machine.log import LazyLogger

from .zmqio import WakePipe

if TYPE_CHECKING:
    from .client import Client

log = LazyLogger("transport.reactor")  # logging is imported on first use

SWEEP = 0.25  # seconds between two looks at every client's socket (a safety net under the fd's edges)
_ARMED = select.EPOLLIN | select.EPOLLET


class Reactor:
    """The process's one I/O thread for every ``Client``: it waits on all their sockets' fds at once, so pushes
    reaching many clients are read one after the other on one thread, with no thread hand-off per client."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._pipe = WakePipe()
        self._wake_r = self._pipe.fd
        self._ep.register(self._wake_r, select.EPOLLIN)
        self._lock = threading.Lock()
        self._clients: dict[int, Client] = {}  # by socket fd
        self._kicked: set[Client] = set()
        # a forked child shares the epoll and the wake pipe with this process: it must never touch them
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="am-client-io", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._pid == os.getpid() and self._thread.is_alive()

    def add(self, c: Client) -> None:
        with self._lock:
            self._clients[c._fd] = c
            self._ep.register(c._fd, _ARMED)
        self._wake()

    def remove(self, c: Client) -> None:
        if self._pid != os.getpid():
            return
        with self._lock:
            if self._clients.get(c._fd) is c:
                del self._clients[c._fd]
                try:
                    self._ep.unregister(c._fd)
                except OSError:
                    pass
            self._kicked.discard(c)

    def arm(self, c: Client, on: bool) -> None:
        """(Dis)arm a client's fd; only while it is still the one registered under that fd number (a closed
        client's number may already belong to a new client)."""
        with self._lock:
            if self._clients.get(c._fd) is c and not c._closed:
                self._ep.modify(c._fd, _ARMED if on else 0)

    def kick(self, c: Client) -> None:
        if self._pid != os.getpid():
            return
        with self._lock:
            self._kicked.add(c)
        self._wake()

    def _wake(self) -> None:
        self._pipe.wake()

    def _run(self) -> None:
        ep = self._ep
        now = time.monotonic()
        next_sweep = now + SWEEP
        next_beat = next_sweep  # no client's heartbeat is due before this (recomputed whenever clients are scanned)
        missed: list[Client] = []  # found busy (a caller held the socket): looked at again every 2 ms
        lock = self._lock
        # the usual turn (a push or two arrived) is cheap: no min()/max(), no ``with``, no comprehension (each a
        # call in CPython 3.11, on the path of every push a worker of mirrors reads)
        while True:
            try:
                wait = (next_sweep if next_sweep < next_beat else next_beat) - now
                if missed and wait > 0.002:
                    wait = 0.002
                events = ep.poll(wait if wait > 0.0 else 0.0)
                wake_r = self._wake_r
                # the pipe emptied before the kicks are read: a kick after this point writes it again
                for fd, _ in events:
                    if fd == wake_r:
                        self._pipe.drain()
                        break
                now = time.monotonic()
                scan = now >= next_sweep or now >= next_beat  # every client now and then, whatever its fd said
                ready = []
                lock.acquire()
                try:
                    by_fd = self._clients
                    # the clients whose fd fired, in the order epoll reported them; no scan over every client
                    for fd, _ in events:
                        c = by_fd.get(fd)
                        if c is not None:
                            ready.append(c)
                    kicked = self._kicked
                    if kicked:
                        self._kicked = set()
                    everyone = list(by_fd.values()) if scan else None
                finally:
                    lock.release()
                if kicked or missed or everyone is not None:
                    todo = ready + list(kicked) + missed
                    if everyone is not None:
                        if now >= next_sweep:
                            next_sweep = now + SWEEP
                            todo += everyone
                        else:
                            todo += [c for c in everyone if now >= c._next_beat]
                    todo = list(dict.fromkeys(todo))  # once a turn each, first place kept
                else:
                    todo = ready  # the usual turn (pushes arrived): epoll names each fd once
                missed = []
                for c in todo:
                    try:
                        c._service(now)
                    except BaseException:  # even SystemExit from a callback: the other clients go on
                        log.exception("client %s I/O failed", c.id)
                    if c._missed and not c._closed:
                        missed.append(c)
                if everyone is not None:
                    # a busy client's beat waits until it is serviced (every 2 ms, see missed): counted here, its
                    # past-due beat would make every wait 0 and spin this thread, starving the callers of the GIL
                    next_beat = min([c._next_beat for c in everyone if not c._missed], default=next_sweep)
                now = time.monotonic()
            except BaseException:  # never let one bad turn stop the I/O of every client
                log.exception("client I/O thread turn failed")
                now = time.monotonic()


_the_reactor: Reactor | None = None
_reactor_lock = threading.Lock()


def reactor() -> Reactor:
    global _the_reactor
    r = _the_reactor
    if r is None or not r.alive:  # none yet, a forked child (threads do not survive fork), or it died
        with _reactor_lock:
            if _the_reactor is None or not _the_reactor.alive:
                _the_reactor = Reactor()
            r = _the_reactor
    return r
