"""Helpers for transport tests: daemon processes and waiting on effects in other processes."""

from __future__ import annotations

import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

DAEMON = Path(__file__).with_name("daemon.py")


class Daemon:
    """A daemon subprocess speaking the line protocol of daemon.py."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, str(DAEMON), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.addrs: list[str] = []
        n = 1 if "--hub" in args else 3
        for _ in range(n):
            line = self._line(10)
            assert line.startswith("READY "), line
            self.addrs.append(line.split()[1])

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError(f"daemon said nothing in {timeout}s")
        return self.proc.stdout.readline().strip()

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


def until(cond: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> bool:
    """Poll a condition with a deadline (for effects in other processes that offer nothing to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()
