"""One line of a machine's log in ``arpc dbg``: :class:`Rec`, and :class:`Rows`, the bounded ring that keeps them.

A thousand machines keep a couple of hundred thousand records. The ring stores each as a plain tuple of strings,
numbers and tuples of those, which the garbage collector stops tracking: its full collections then stay short
whatever the ring holds (objects of a class, even with ``__slots__``, would each be scanned, and the screen would
stall for hundreds of milliseconds now and then). :class:`Rec` is the named view made when a record is read.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

_CLOCK = 14  # the index of ``clock`` in a Rec


class Rec(NamedTuple):
    """A transition (with the clock after it, for time travel) or a note."""

    n: int                          # this machine's record number in dbg (survives the ring's wrap)
    time: float
    tick: int | None                # the machine's time (sum of its ticks) after the transition
    mutation: str
    called: tuple[str, ...]
    args: tuple[tuple[str, str], ...]  # (name, repr of the value)
    auto: bool
    result: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    reason: str | None
    err: tuple[str, str, str, str | None] | None  # type, message, traceback, handler
    duration: float | None
    source: str | None
    clock: tuple[int, ...] | None
    note: str | None

    @property
    def error(self) -> dict[str, Any] | None:
        """The error as the history has it: ``type``, ``message``, ``trace``, ``handler``."""
        if self.err is None:
            return None
        return dict(zip(("type", "message", "trace", "handler"), self.err, strict=True))

    def summary(self) -> str:
        """The record as one log line (without its time)."""
        if self.note is not None:
            return f"-- {self.note}"
        what = f"{self.mutation} {' '.join(self.called)}".strip() or "transition"
        if self.auto:
            what = "auto " + what
        out = [what]
        if self.result and self.result != "executed":
            out.append(self.result.upper())
        if self.added:
            out.append("+" + " +".join(self.added))
        if self.removed:
            out.append("-" + " -".join(self.removed))
        if self.reason:
            out.append(f"({self.reason})")
        if self.err is not None:
            out.append(f"!{self.err[0] or 'error'}: {self.err[1]}")
        return " ".join(out)


def make_rec(n: int, when: float, *, clock: tuple[int, ...] | None = None, note: str | None = None,
             fields: Mapping[str, Any] | None = None) -> Rec:
    """A record from a history record's (or an update's) fields; anything odd in them is made plain text."""
    f = fields or {}
    tick = f.get("tick")
    dur = f.get("duration")
    reason = f.get("reason")
    source = f.get("source")
    return Rec(n, when, tick if isinstance(tick, int) else None, str(f.get("mutation") or ""), names(f.get("called")),
               arg_pairs(f.get("args")), bool(f.get("auto")), str(f.get("result") or ""), names(f.get("added")),
               names(f.get("removed")), None if reason is None else str(reason), error_tuple(f.get("error")),
               float(dur) if isinstance(dur, int | float) else None, None if source is None else str(source),
               clock, note)


def names(seq: Any) -> tuple[str, ...]:
    """State names as a tuple of interned strings: a thousand machines' logs repeat the same few names."""
    if not seq:
        return ()
    return tuple(sys.intern(n) if isinstance(n, str) else str(n) for n in seq)


def arg_pairs(args: Any) -> tuple[tuple[str, str], ...]:
    """Args as (name, repr) pairs, without the error that Exception's args carry (shown as the error)."""
    if not args:
        return ()
    if not isinstance(args, Mapping):
        return (("", repr(args)),)
    return tuple((str(k), repr(v)) for k, v in args.items() if k not in ("err", "err_trace"))


def error_tuple(err: Any) -> tuple[str, str, str, str | None] | None:
    if not isinstance(err, Mapping):
        return None
    handler = err.get("handler")
    return (str(err.get("type") or "error"), str(err.get("message") or ""), str(err.get("trace") or ""),
            None if handler is None else str(handler))


class Rows:
    """The last ``maxlen`` records of a machine, oldest first, kept as plain tuples (read as :class:`Rec`)."""

    def __init__(self, maxlen: int) -> None:
        self._rows: deque[tuple[Any, ...]] = deque(maxlen=maxlen)

    def append(self, rec: Rec) -> None:
        self._rows.append(tuple(rec))  # a plain tuple: untracked by the garbage collector

    def pop(self) -> Rec:
        return Rec._make(self._rows.pop())

    def set_clock(self, i: int, clock: tuple[int, ...]) -> None:
        row = self._rows[i]
        self._rows[i] = (*row[:_CLOCK], clock, *row[_CLOCK + 1:])

    def __len__(self) -> int:
        return len(self._rows)

    def __bool__(self) -> bool:
        return bool(self._rows)

    def __getitem__(self, i: int) -> Rec:
        return Rec._make(self._rows[i])

    def __iter__(self) -> Iterator[Rec]:
        return (Rec._make(r) for r in self._rows)
