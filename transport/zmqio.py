"""Raw ZeroMQ helpers shared by the endpoint and the client: plain int flags, pyzmq's compiled send, a wake pipe."""

from __future__ import annotations

import os
import threading

import zmq

# plain ints: an IntFlag operand makes every `&` or `|` build an enum member
NB = int(zmq.NOBLOCK)
MORE_NB = int(zmq.NOBLOCK | zmq.SNDMORE)
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)
# pyzmq's compiled send, without the Python wrapper zmq.Socket puts around it (as costly as the send itself)
raw_send = zmq.backend.Socket.send


class WakePipe:
    """A non-blocking pipe that wakes a thread waiting in epoll on ``fd``: any thread calls ``wake()``, the waiting
    thread ``drain()``s it after its wait returns. After ``close()`` both are no-ops."""

    __slots__ = ("fd", "_w", "_lock")

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)
        # every use of the two fds and their closing hold this lock: once closed, their numbers can be handed to
        # another file at any moment, and a late wake must not write into that file (nor a drain read from it)
        self._lock = threading.Lock()

    def wake(self) -> None:
        with self._lock:
            if self._w < 0:
                return
            try:
                os.write(self._w, b"x")
            except OSError:  # BlockingIOError included: the pipe is full, so the thread is woken already
                pass

    def drain(self) -> None:
        with self._lock:
            if self.fd < 0:
                return
            try:
                while os.read(self.fd, 4096):
                    pass
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            fds, self.fd, self._w = (self.fd, self._w), -1, -1
            for fd in fds:
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
