"""Raw ZeroMQ helpers shared by the endpoint and the client: plain int flags, pyzmq's compiled send, a wake pipe."""

from __future__ import annotations

import os

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
    thread ``drain()``s it after its wait returns."""

    __slots__ = ("fd", "_w")

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)

    def wake(self) -> None:
        try:
            os.write(self._w, b"x")
        except OSError:  # BlockingIOError included: the pipe is full, so the thread is woken already; or closed
            pass

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        for fd in (self.fd, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
