"""``arpc dbg --record FILE`` / ``--replay FILE``: the events received, as JSON lines.

The first line is a header, ``{"arpc_dbg": VERSION, "created": TIME, "sources": [...]}``; every other line is one
event of :mod:`arpc.dbg.model`, in the order the screen received it. A file that is not JSON, is cut in the
middle of a line, or comes from a newer format is a :class:`ReplayError` (one line, exit 2).
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Iterator, Sequence
from typing import IO, Any

from ..errors import USAGE, ArpcError
from .model import KINDS, Event

VERSION = 1
MAX_LINE = 8 * 1024 * 1024  # a longer line is not something we wrote


class ReplayError(ArpcError):
    """A replay file we cannot read: one line on stderr, exit 2."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg, USAGE)


class Recorder:
    """Appends events to a file as JSON lines (flushed every ``flush_every`` events and on close)."""

    def __init__(self, path: str, sources: Sequence[str] = (), flush_every: int = 200) -> None:
        try:
            self._f: IO[str] = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise ArpcError(f"cannot write {path}: {e.strerror or e}", USAGE) from None
        self.path = path
        self.count = 0
        self._flush_every = flush_every
        self._write({"arpc_dbg": VERSION, "created": _time.time(), "sources": list(sources)})
        self._f.flush()

    def _write(self, obj: Any) -> None:
        self._f.write(json.dumps(obj, separators=(",", ":"), default=repr, ensure_ascii=False))
        self._f.write("\n")

    def write(self, events: Sequence[Event]) -> None:
        for ev in events:
            self._write(ev)
        self.count += len(events)
        if events and self.count % self._flush_every < len(events):
            self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_replay(path: str) -> list[Event]:
    """Every event of a ``--record`` file (see the module doc for what is refused)."""
    return list(iter_replay(path))


def iter_replay(path: str) -> Iterator[Event]:
    try:
        f = open(path, encoding="utf-8", newline="\n")  # noqa: SIM115 - closed below
    except OSError as e:
        raise ReplayError(f"cannot read replay file {path}: {e.strerror or e}") from None
    with f:
        first = True
        n = 0
        try:
            for line in iter(lambda: f.readline(MAX_LINE), ""):
                n += 1
                if not line.endswith("\n"):
                    raise ReplayError(f"{path}: truncated at line {n} (no end of line)")
                try:
                    obj = json.loads(line)
                except ValueError:
                    what = "not an arpc dbg recording (not JSON)" if first else f"line {n} is not JSON"
                    raise ReplayError(f"{path}: {what}") from None
                if first:
                    check_header(path, obj)
                    first = False
                    continue
                if not isinstance(obj, dict) or obj.get("k") not in KINDS:
                    raise ReplayError(f"{path}: line {n} is not an event")
                yield obj
        except UnicodeDecodeError:
            raise ReplayError(f"{path}: not an arpc dbg recording (not UTF-8 text)") from None
        if first:
            raise ReplayError(f"{path}: empty, not an arpc dbg recording")


def check_header(path: str, obj: Any) -> None:
    version = obj.get("arpc_dbg") if isinstance(obj, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise ReplayError(f"{path}: not an arpc dbg recording (no header)")
    if version > VERSION:
        raise ReplayError(f"{path}: format {version} is newer than this arpc reads ({VERSION}); upgrade arpc")
    if version < 1:
        raise ReplayError(f"{path}: unknown format {version}")
