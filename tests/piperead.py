"""Reading a child process's output line by line with a deadline, for the tests of every package."""

from __future__ import annotations

import os
import select
import time
import weakref
from typing import IO

_pending: weakref.WeakKeyDictionary[IO[str], bytearray] = weakref.WeakKeyDictionary()


def readline(stream: IO[str], timeout: float) -> str:
    """One line from a child's pipe within ``timeout`` seconds (else TimeoutError), read from its fd with the rest
    kept for the next call: a text wrapper's buffer can hold a second line that ``select`` on the fd cannot see."""
    buf = _pending.setdefault(stream, bytearray())
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream.fileno()], [], [], left)[0]:
            raise TimeoutError(f"process said nothing in {timeout}s")
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break  # end of file: what is left, even without its newline
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode().strip()
