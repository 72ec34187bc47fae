"""Helpers for transport tests: daemon processes and waiting on effects in other processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import zmq

# this tree's root: tr_util is also imported by tests run as scripts (in a child process), where it is not on the path
if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.piperead import readline as readline  # noqa: E402  (re-exported: the transport tests import it from here)

DAEMON = Path(__file__).with_name("daemon.py")


class Daemon:
    """A daemon subprocess speaking the line protocol of daemon.py."""

    def __init__(self, *args: str, script: Path = DAEMON, endpoints: int | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.addrs: list[str] = []
        n = endpoints if endpoints is not None else 1 if "--hub" in args else 3
        for _ in range(n):
            line = self._line(30)  # a cold start: seconds on a starved box (only a failure waits this long)
            assert line.startswith("READY "), line
            self.addrs.append(line.split()[1])

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        return readline(self.proc.stdout, timeout)

    def cmd(self, line: str, timeout: float = 5) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._line(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def freeze(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP, then wait until the process is stopped (its /proc state is "T"): the signal is delivered
    asynchronously, and a request sent right after it could otherwise still be handled."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop")


def until(cond: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> bool:
    """Poll a condition with a deadline (for effects in other processes that offer nothing to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def can_bind(port: int) -> bool:
    """True when a listening socket could take ``127.0.0.1:port`` now (SO_REUSEADDR, as ZeroMQ binds)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
        return True


def pack(kind: Any, seq: Any, mach: Any, body: Any) -> bytes:
    """Any envelope, well-formed or not, as one msgpack frame."""
    return msgpack.packb([kind, seq, mach, body], use_bin_type=True)  # type: ignore[no-any-return]


class RawPeer:
    """A bare DEALER that speaks frames by hand, for fault tests (replies decoded leniently)."""

    def __init__(self, addr: str, *, identity: bytes | None = None, rcvhwm: int | None = None,
                 rcvbuf: int | None = None, curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        """``curve`` = (server public, own public, own secret) z85 keys."""
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            self.sock.setsockopt(zmq.IDENTITY, identity)
        if rcvhwm is not None:
            self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if rcvbuf is not None:  # the kernel's buffer too (SO_RCVBUF: no autotuning up to tcp_rmem's max)
            self.sock.setsockopt(zmq.RCVBUF, rcvbuf)
        if curve is not None:
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve
        self.sock.connect(addr)

    def send(self, kind: Any, seq: Any, mach: Any, body: Any) -> None:
        self.sock.send(pack(kind, seq, mach, body))

    def send_raw(self, *frames: bytes) -> None:
        self.sock.send_multipart(list(frames))

    def recv(self, timeout: float = 2.0) -> list[Any] | None:
        """The next message, decoded, or None after ``timeout`` seconds."""
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        return msgpack.unpackb(self.sock.recv(), raw=False, strict_map_key=False)  # type: ignore[no-any-return]

    def reply(self, seq: int, timeout: float = 2.0) -> list[Any] | None:
        """The next ``ok``/``err`` with this ``seq`` (other messages are skipped), or None at the deadline."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left)
            if msg is not None and msg[0] in ("ok", "err") and msg[1] == seq:
                return msg
        return None

    def request(self, kind: Any, seq: int, mach: Any, body: Any, timeout: float = 2.0) -> list[Any] | None:
        self.send(kind, seq, mach, body)
        return self.reply(seq, timeout)

    def until_reply(self, seq: int, timeout: float = 2.0) -> list[list[Any]]:
        """Every message up to and including the reply with ``seq``; TimeoutError when it does not come."""
        out: list[list[Any]] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left)
            if msg is None:
                break
            out.append(msg)
            if msg[0] in ("ok", "err") and msg[1] == seq:
                return out
        raise TimeoutError(f"no reply to seq {seq} within {timeout}s (got {out[-5:]!r})")

    def close(self) -> None:
        self.sock.close(0)
