"""Transition history: records, cancel reasons of every kind, errors kept after Exception, bounds."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from machine import Machine, State
from machine.history import MAX_STR, SOURCE, History


class H:
    def BEnter(self, e: Any) -> bool:
        return False

    def CState(self, e: Any) -> None:
        raise RuntimeError("disk full")

    def DEnter(self, e: Any) -> None:
        raise ValueError("bad input")

    def SlowEnter(self, e: Any) -> None:
        time.sleep(0.05)    # the scenario: a handler past the machine's handler_timeout (inline)


SCHEMA = {"A": State(), "B": State(), "C": State(), "D": State(), "Foo": State(), "Slow": State(),
          "R": State(require=("Foo",)), "X": State(remove=("A",))}


def _mach(**kw: Any) -> Machine:
    m = Machine(SCHEMA, handlers=H(), **kw)
    m.keep_history(100)
    return m


def test_history_is_off_by_default_and_kept_on_request() -> None:
    m = Machine(SCHEMA)
    assert m.history is None
    h = m.keep_history(10)
    assert m.history is h and m.keep_history(10) is h      # idempotent
    m.add("A")
    assert len(h) == 1


def test_a_record_holds_what_happened() -> None:
    m = _mach()
    m.add("A", args={"path": "/x", "n": 2})
    (r,) = m.history.records()    # type: ignore[union-attr]
    assert r["mutation"] == "add" and r["called"] == ["A"] and r["result"] == "executed"
    assert r["added"] == ["A"] and r["removed"] == [] and r["reason"] is None and r["error"] is None
    assert r["args"] == {"path": "/x", "n": 2} and r["source"] is None and r["auto"] is False
    assert r["tick"] == sum(m.time()) and r["duration"] >= 0 and abs(r["time"] - time.time()) < 60
    m.remove("A")
    assert m.history.records()[-1]["removed"] == ["A"]    # type: ignore[union-attr]


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: m.add("B"), "BEnter returned False"),
    (lambda m: m.add("C"), "CState raised RuntimeError: disk full"),
    (lambda m: m.add("D"), "DEnter raised ValueError: bad input"),
    (lambda m: m.add("R"), "R requires Foo (not active)"),
    (lambda m: m.add("X", "A"), "A removed by X"),
    (lambda m: m.add("Slow"), "SlowEnter timed out"),
])
def test_every_cancel_reason_kind(mutate: Any, reason: str) -> None:
    m = _mach(handler_timeout=0.01)
    mutate(m)
    recs = [r for r in m.history.records() if r["called"] != ["Exception"]]   # type: ignore[union-attr]
    assert recs[-1]["result"] == "canceled" and recs[-1]["reason"] == reason


def test_a_raising_handler_records_its_error_and_the_error_outlives_exception() -> None:
    m = _mach()
    m.add("C")
    rec = next(r for r in m.history.records() if r["called"] == ["C"])   # type: ignore[union-attr]
    err = rec["error"]
    assert err["type"] == "RuntimeError" and err["message"] == "disk full" and err["handler"] == "CState"
    assert "Traceback" in err["trace"] and "disk full" in err["trace"]
    m.remove("Exception")
    m.add("A")
    errors = m.history.errors()   # type: ignore[union-attr]
    assert [e["message"] for e in errors] == ["disk full"]


def test_add_err_from_code_is_an_error_record() -> None:
    m = _mach()
    m.add_err(OSError("no space"))
    errs = m.history.errors()   # type: ignore[union-attr]
    assert errs[-1]["type"] == "OSError" and errs[-1]["message"] == "no space" and errs[-1]["handler"] is None


def test_dry_runs_are_not_history() -> None:
    m = _mach()
    m.can_add("A", args={"x": 1})
    assert m.history.records() == []   # type: ignore[union-attr]


def test_the_ring_and_the_errors_are_bounded() -> None:
    m = Machine(SCHEMA, handlers=H())
    h = m.keep_history(5)
    for _ in range(30):
        m.add("C")
        m.remove("Exception")
    assert len(h) == 5 and h.last_seq > 5
    assert len(h.errors()) == 20    # MAX_ERRORS
    h.resize(2)
    assert len(h.records()) == 2 and h.records()[-1]["seq"] == h.last_seq


def test_args_are_clipped_and_never_break_the_record() -> None:
    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    deep: Any = []
    for _ in range(100):
        deep = [deep]
    m = _mach()
    m.add("A", args={"big": "x" * 10_000, "bad": Bad(), "deep": deep, "many": list(range(1000))})
    a = m.history.records()[-1]["args"]   # type: ignore[union-attr]
    assert len(a["big"]) < MAX_STR + 40 and "more)" in a["big"]
    assert a["bad"] == "<Bad: repr failed>"
    assert len(a["many"]) == 20
    assert m.is_active("A")


def test_reading_since_tick_time_seq_and_limit() -> None:
    m = _mach()
    for _ in range(5):
        m.toggle("A")
    h = m.history
    assert h is not None
    recs = h.records()
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    assert [r["seq"] for r in h.records(since_seq=3)] == [4, 5]
    assert [r["seq"] for r in h.records(limit=2)] == [4, 5]
    assert h.records(limit=0) == []
    assert h.records(since_time=time.time() + 10) == []
    assert len(h.records(since_tick=recs[0]["tick"] - 1)) == 5


def test_source_of_a_mutation_from_the_context_variable() -> None:
    m = _mach()
    token = SOURCE.set("session rc-1")
    try:
        m.add("A")
    finally:
        SOURCE.reset(token)
    m.add("Foo")
    recs = m.history.records()   # type: ignore[union-attr]
    assert recs[0]["source"] == "session rc-1" and recs[1]["source"] is None


def test_reading_from_another_thread_while_transitions_run() -> None:
    m = Machine(SCHEMA)
    h = m.keep_history(50)
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            recs = h.records()
            seen.append(len(recs))
            assert all(a["seq"] < b["seq"] for a, b in zip(recs, recs[1:], strict=False))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(2000):
            m.toggle("A")
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive() and max(seen) <= 50 and h.last_seq == 2000


def test_history_validates_its_size() -> None:
    with pytest.raises(ValueError):
        History(0)
