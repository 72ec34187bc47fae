"""Output formats (spec section 3.3) and the printer that writes results in plain, REPL or JSON form."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from .errors import OK, ArpcError, UsageError
from .record import field
from .record import record as dataclass

GREY = "\x1b[90m"
RED = "\x1b[31m"
RESET = "\x1b[0m"


@dataclass
class Result:
    """What a command produced: text lines (plain / REPL), one JSON document, and the exit code."""

    lines: list[str] = field(default_factory=list)
    data: Any = None  # or a function making it, called only for --json (a fleet's list: 50,000 documents)
    code: int = OK
    raw: bool = False  # lines to copy as they are: no "=> " in the REPL (a Mermaid diagram)

    @classmethod
    def text(cls, lines: Iterable[str], code: int = OK) -> Result:
        lines = list(lines)
        return cls(lines, {"lines": lines}, code)


# ---------------------------------------------------------------------------------------------------- formats


def state_string(names: Sequence[str], time: Sequence[int]) -> str:
    """``(Foo:1 Bar:3)``: the active states with their ticks, in index order."""
    return "(" + " ".join(f"{n}:{t}" for n, t in zip(names, time, strict=False) if t & 1) + ")"


def state_string_all(names: Sequence[str], time: Sequence[int]) -> str:
    """``(Foo:1) [Bar:0 Baz:2]``: active states, then the inactive ones."""
    on = " ".join(f"{n}:{t}" for n, t in zip(names, time, strict=False) if t & 1)
    off = " ".join(f"{n}:{t}" for n, t in zip(names, time, strict=False) if not t & 1)
    return f"({on}) [{off}]"


def time_string(ticks: Iterable[int]) -> str:
    """``[0 1 0]``."""
    return "[" + " ".join(str(t) for t in ticks) + "]"


def result_name(result: int) -> str:
    """A mutation's result: 0 ``executed``, 1 ``canceled``, a queue tick (>= 2) ``queued``."""
    return "executed" if result == 0 else "canceled" if result == 1 else "queued"


def status_lines(connected: int, connecting: int, disconnected: int, total: int) -> list[str]:
    return [f"{'Connected:':<15} {connected}", f"{'Connecting:':<15} {connecting}",
            f"{'Disconnected:':<15} {disconnected}", f"{'Total:':<15} {total}"]


def fmt_args(args: Mapping[str, Any] | None) -> str:
    """``(k1=v1 k2=v2)`` or ``""``."""
    if not args:
        return ""
    return "(" + " ".join(f"{k}={args[k]}" for k in args) + ")"


_DUR = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``500ms``, ``5s``, ``1.5s``, ``1m``, ``1h``; a bare number is seconds."""
    m = _DUR.match(text)
    if not m:
        raise UsageError(f"invalid duration: {text} (use e.g. 500ms, 5s, 1m)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def to_json(data: Any) -> str:
    return json.dumps(data, default=_json_default, ensure_ascii=False)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    return str(obj)


# ---------------------------------------------------------------------------------------------------- printer

WORD_MAX = 200  # longer words of an error line (a pasted 100 kB name) are cut; --json keeps them whole


def clip_words(msg: str) -> str:
    """``msg`` with each word longer than ``WORD_MAX`` cut to its start and its length, so an error stays a line."""
    if len(msg) <= WORD_MAX:
        return msg
    return " ".join(w if len(w) <= WORD_MAX else f"{w[:WORD_MAX // 2]}...[{len(w)} chars]" for w in msg.split(" "))



class Printer:
    """Writes results and errors.

    ``repl=False`` (CLI): plain lines on stdout, errors ``err> <msg>`` on stderr, never colour.
    ``repl=True``: ``=> <line>`` and ``err> <msg>``, grey / red when ``color``.
    ``json_mode``: one JSON document per result on stdout, errors as ``{"error", "type"}`` on stderr.
    Streams are looked up at write time (the REPL patches ``sys.stdout``).
    """

    def __init__(self, *, repl: bool = False, json_mode: bool = False, color: bool = False,
                 out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.repl = repl
        self.json_mode = json_mode
        self.color = color and repl
        self._out = out
        self._err = err

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    @property
    def err(self) -> TextIO:
        return self._err or sys.stderr

    def emit(self, result: Result) -> None:
        if self.json_mode:
            data = result.data() if callable(result.data) else result.data
            if data is not None:
                self._write(self.out, to_json(data) + "\n")
            return
        if not result.lines:
            return
        if self.repl and not result.raw:
            arrow = f"{GREY}=>{RESET}" if self.color else "=>"
            text = "".join(f"{arrow} {ln}".rstrip(" ") + "\n" for ln in result.lines)
        else:
            text = "\n".join(result.lines) + "\n"  # one join (a fleet's list: 100,000 lines)
        self._write(self.out, text)

    def error(self, err: ArpcError) -> None:
        if self.json_mode:
            self._write(self.err, to_json({"error": err.msg, "type": err.type, "code": err.code}) + "\n")
            return
        prefix = f"{RED}err>{RESET}" if self.color else "err>"
        self._write(self.err, f"{prefix} {clip_words(err.msg)}\n")

    def warn(self, msg: str) -> None:
        """A warning that does not change the exit code (``err> msg`` / ``{"warning": msg}`` on stderr)."""
        if self.json_mode:
            self._write(self.err, to_json({"warning": msg}) + "\n")
            return
        prefix = f"{RED}err>{RESET}" if self.color else "err>"
        self._write(self.err, f"{prefix} {msg}\n")

    def notice(self, msg: str, error: bool = False) -> None:
        """An asynchronous notice (connections); REPL only, never JSON."""
        if error:
            prefix = f"{RED}err>{RESET}" if self.color else "err>"
        else:
            prefix = f"{GREY}=>{RESET}" if self.color else "=>"
        self._write(self.out, f"{prefix} {msg}\n")

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        stream.write(text)
        stream.flush()
