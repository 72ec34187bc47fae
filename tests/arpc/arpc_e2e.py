"""Subprocess helpers for the arpc end-to-end tests: the fixture daemon (``arpc_daemon.py``) and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.piperead import readline

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PY = sys.executable


PYCACHE = os.path.join(tempfile.gettempdir(), "arpc-tests-pycache")


def env(**extra: str) -> dict[str, str]:
    """The environment of the subprocesses: bytecode cached outside the tree (PYTHONDONTWRITEBYTECODE would make
    every process compile everything again)."""
    e = dict(os.environ)
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    e.setdefault("PYTHONPYCACHEPREFIX", PYCACHE)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e.pop("NO_COLOR", None)
    e.update(extra)
    return e


def transport_works() -> bool:
    try:
        import transport  # noqa: F401
        from transport import connect, expose  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def until(cond, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        time.sleep(0.01)


class Daemon:
    """``arpc_daemon.py`` in a subprocess: fixture X exposed with ``addr_dir``; commands on its stdin."""

    def __init__(self, directory: Path, *args: str, argv: list[str] | None = None, stderr: Any = subprocess.PIPE,
                 start_timeout: float = 30.0) -> None:  # a cold start takes seconds on a starved box
        """``argv``: another daemon speaking the same line protocol (``ready``, then ``ok ...`` per command)."""
        self.dir = directory
        self.args = args
        self.proc = subprocess.Popen(argv or [PY, str(HERE / "arpc_daemon.py"), "--dir", str(directory), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                     text=True, env=env(), bufsize=1)
        line = self.readline(start_timeout)
        assert line == "ready", f"daemon did not start: {line!r} {self.stderr_tail()}"

    def readline(self, timeout: float = 5.0) -> str:
        assert self.proc.stdout is not None
        try:
            return readline(self.proc.stdout, timeout)
        except TimeoutError:
            raise AssertionError(f"daemon silent for {timeout}s") from None

    def cmd(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.readline()
        assert out.startswith("ok"), out
        return out[2:].strip()

    def stderr_tail(self) -> str:
        return ""

    def addr(self, mach_id: str) -> str:
        return (self.dir / f"{mach_id}.addr").read_text().strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def arpc(*argv: str, timeout: float = 15.0, **extra_env: str) -> Run:
    p = subprocess.run([PY, "-m", "arpc", *argv], capture_output=True, text=True, timeout=timeout,
                       env=env(**extra_env), cwd=str(ROOT))
    return Run(p.returncode, p.stdout, p.stderr)


def arpc_bg(*argv: str, **extra_env: str) -> subprocess.Popen[str]:
    """arpc in the background (a generous connect timeout: the daemon is alive)."""
    return subprocess.Popen([PY, "-m", "arpc", "--connect-timeout", "5", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=env(**extra_env), cwd=str(ROOT))
