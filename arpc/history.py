"""REPL history as JSON lines (Go's format): ``{"datetime": "<RFC 3339>", "block": "<line>"}`` per line.

Consecutive duplicates are not stored. ``ARPC_HISTORY`` overrides ``~/.arpc_history`` (see :mod:`arpc.config`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable

from prompt_toolkit.history import History


def read_history(path: str) -> list[str]:
    """The stored lines, oldest first; unreadable lines are skipped (plain text lines are kept as they are)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            raw = f.read().splitlines()
    except OSError:
        return []
    out: list[str] = []
    for ln in raw:
        if not ln.strip():
            continue
        try:
            obj = json.loads(ln)
        except ValueError:
            out.append(ln)
            continue
        block = obj.get("block") if isinstance(obj, dict) else None
        if isinstance(block, str) and block:
            out.append(block)
    return out


def append_history(path: str, line: str) -> None:
    stamp = _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")
    entry = json.dumps({"datetime": stamp, "block": line}, ensure_ascii=False)
    try:
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        # a line with undecodable bytes (surrogate escapes) is kept, escaped, rather than breaking the REPL
        with open(path, "a", encoding="utf-8", errors="backslashreplace") as f:
            f.write(entry + "\n")
    except OSError:
        pass  # history is best effort


class JsonLinesHistory(History):
    """A prompt_toolkit history backed by a JSON-lines file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._last: str | None = None

    def load_history_strings(self) -> Iterable[str]:
        lines = read_history(self.path)
        if lines:
            self._last = lines[-1]
        prev = None
        for ln in reversed(lines):  # newest first
            if ln != prev:
                yield ln
            prev = ln

    def store_string(self, string: str) -> None:
        if not string.strip() or string == self._last:
            return
        self._last = string
        append_history(self.path, string)
