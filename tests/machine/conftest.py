"""Shared helpers for the `machine` tests (spec/machine-semantics.md section 19 and DESIGN.md).

Helpers are handed to the tests as fixtures (not imported), so that several `conftest.py` files in
sibling test folders can never shadow each other:

- `nr(**states)`: the spec's NR schema `{A, B, C, D}` (order `[A B C D Exception]`), with states replaced
  or appended by keyword.
- `make(schema=None, **kw)`: a `Machine` with `id="t"` (NR by default); every machine made (or passed to
  `make.track`) is disposed at teardown.
- `record(mach, overrides=None)`: binds a new `Recorder` covering every handler name of `mach`.
- `mlog(mach_id="t")`: captures the log lines of logger `machine.<id>`.
- `tx_tracer()`: a `TxTracer` recording the called/target states of every transition.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from machine import Machine, State, Tracer

# sentinel: the handler accepts (returns None)
_ACCEPT = object()


def handler_names(state_names: Iterable[str]) -> list[str]:
    """Every handler name the spec knows for these states: XEnter/XExit/XState/XEnd for every X, every ordered
    pair XY (XX included), AnyEnter and AnyState."""
    names = list(state_names)
    out: list[str] = []
    for s in names:
        out += [f"{s}Enter", f"{s}Exit", f"{s}State", f"{s}End"]
    out += [a + b for a, b in itertools.product(names, names)]
    out += ["AnyEnter", "AnyState"]
    return list(dict.fromkeys(out))


class Recorder:
    """Implements every possible handler name for a list of states as real instance attributes (so `dir()`
    lists them). Each call appends the handler name to `calls`, then the handler accepts (returns None) unless
    `overrides[name]` says otherwise: a callable is called with the event and its return value is returned;
    any other value (e.g. False) is returned as is."""

    def __init__(self, state_names: Iterable[str], overrides: Mapping[str, Any] | None = None) -> None:
        self.calls: list[str] = []
        names = handler_names(state_names)
        ov = dict(overrides or {})
        unknown = sorted(set(ov) - set(names))
        if unknown:
            raise ValueError(f"Recorder: overrides for unknown handlers: {unknown}")
        for name in names:
            setattr(self, name, self._handler(name, ov.get(name, _ACCEPT)))

    def _handler(self, name: str, action: Any) -> Callable[[Any], Any]:
        def handler(e: Any) -> Any:
            self.calls.append(name)
            if action is _ACCEPT:
                return None
            if callable(action):
                return action(e)
            return action

        handler.__name__ = name
        handler.__qualname__ = f"Recorder.{name}"
        return handler

    def clear(self) -> None:
        self.calls.clear()


def raiser(msg: str) -> Callable[[Any], Any]:
    """An override that raises RuntimeError(msg)."""

    def fn(e: Any) -> Any:
        raise RuntimeError(msg)

    return fn


@dataclass
class TxRecord:
    called: list[str]
    target: list[str]
    accepted: bool
    is_auto: bool


class TxTracer(Tracer):
    """Records every finished transition (called states, target states in target order, accepted)."""

    def __init__(self) -> None:
        super().__init__()
        self.txs: list[TxRecord] = []

    def transition_end(self, tx: Any) -> None:
        self.txs.append(
            TxRecord(
                called=list(tx.called_states),
                target=list(tx.target_states),
                accepted=bool(tx.is_accepted),
                is_auto=bool(tx.is_auto),
            )
        )

    @property
    def last_accepted_target(self) -> list[str]:
        for rec in reversed(self.txs):
            if rec.accepted:
                return rec.target
        raise AssertionError("no accepted transition recorded")


class LogCapture(logging.Handler):
    """Collects the messages of one logger, whatever its propagation setting."""

    def __init__(self) -> None:
        super().__init__(level=1)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


NR_NAMES = ("A", "B", "C", "D")


def _nr(**states: State) -> dict[str, State]:
    schema: dict[str, State] = {name: State() for name in NR_NAMES}
    schema.update(states)
    return schema


class MachineFactory:
    def __init__(self) -> None:
        self.made: list[Machine] = []

    def __call__(self, schema: Mapping[str, State] | None = None, **kw: Any) -> Machine:
        kw.setdefault("id", "t")
        mach = Machine(dict(schema) if schema is not None else _nr(), **kw)
        self.made.append(mach)
        return mach

    def track(self, mach: Machine) -> Machine:
        self.made.append(mach)
        return mach

    def dispose_all(self) -> None:
        for mach in reversed(self.made):
            # teardown must not mask the test result
            with contextlib.suppress(Exception):
                mach.dispose()


@pytest.fixture
def nr() -> Callable[..., dict[str, State]]:
    return _nr


@pytest.fixture
def make() -> Iterator[MachineFactory]:
    factory = MachineFactory()
    yield factory
    factory.dispose_all()


@pytest.fixture
def record() -> Callable[..., Recorder]:
    def _record(mach: Machine, overrides: Mapping[str, Any] | None = None) -> Recorder:
        rec = Recorder(mach.state_names, overrides)
        mach.bind_handlers(rec)
        return rec

    return _record


@pytest.fixture
def recorder_cls() -> type[Recorder]:
    return Recorder


@pytest.fixture
def boom() -> Callable[[str], Callable[[Any], Any]]:
    return raiser


@pytest.fixture
def tx_tracer() -> Callable[[], TxTracer]:
    return TxTracer


@pytest.fixture
def mlog() -> Iterator[Callable[..., LogCapture]]:
    attached: list[tuple[logging.Logger, LogCapture, int]] = []

    def _attach(mach_id: str = "t") -> LogCapture:
        logger = logging.getLogger(f"machine.{mach_id}")
        cap = LogCapture()
        attached.append((logger, cap, logger.level))
        logger.addHandler(cap)
        logger.setLevel(1)
        return cap

    yield _attach
    for logger, cap, level in reversed(attached):
        logger.removeHandler(cap)
        logger.setLevel(level)
