"""Spec section 19, "Errors": T58-T66.

DESIGN: the Exception args are flat: `err` (the exception), `err_trace` (str) and `panic` (True when a handler
raised).
"""

import asyncio
import time

from machine import LogLevel, Result, State

EXECUTED = Result.EXECUTED
CANCELED = Result.CANCELED


def test_t58_add_err(make):
    mach = make()
    e1, e2, e3 = ValueError("e1"), ValueError("e2"), ValueError("e3")

    assert mach.add_err(e1) == EXECUTED
    assert mach.string_all() == "(Exception:1) [A:0 B:0 C:0 D:0]"
    assert mach.err is e1
    assert mach.is_err() is True

    assert mach.add_err(e2) == EXECUTED
    assert mach.string_all() == "(Exception:3) [A:0 B:0 C:0 D:0]"

    assert mach.add_err(None) == CANCELED
    assert mach.add_err(asyncio.CancelledError()) == CANCELED
    assert mach.string_all() == "(Exception:3) [A:0 B:0 C:0 D:0]"

    assert mach.add_err_state("B", e3) == EXECUTED
    assert mach.string_all() == "(B:1 Exception:5) [A:0 C:0 D:0]"

    # removing Exception keeps err
    assert mach.remove("Exception") == EXECUTED
    assert mach.string_all() == "(B:1) [A:0 C:0 D:0 Exception:6]"
    assert mach.err is e3
    assert mach.is_err() is False


def test_t59_error_states_pattern(make):
    mach = make(
        {
            "Exception": State(multi=True),
            "ErrNetwork": State(multi=True, add=("Exception",), require=("Exception",)),
            "Start": State(),
            "Ready": State(require=("Start",)),
        }
    )
    assert mach.state_names == ["Exception", "ErrNetwork", "Start", "Ready"]

    assert mach.add("ErrNetwork") == EXECUTED
    assert mach.string_all() == "(Exception:1 ErrNetwork:1) [Start:0 Ready:0]"

    mach.add_err_state("ErrNetwork", ConnectionError("net"))
    assert mach.string_all() == "(Exception:3 ErrNetwork:3) [Start:0 Ready:0]"

    mach.remove("Exception")
    assert mach.string_all() == "() [Exception:4 ErrNetwork:4 Start:0 Ready:0]"

    assert mach.add("Ready") == CANCELED
    assert mach.add("Start", "Ready") == EXECUTED
    mach.remove("Start")
    assert mach.string_all() == "() [Exception:4 ErrNetwork:4 Start:2 Ready:2]"


def test_t60_negotiation_panic(make, record, boom, mlog):
    mach = make(log_level=LogLevel.DECISIONS)
    mach.set("A")
    seen: dict = {}

    def exception_state(e):
        seen["args"] = dict(e.args)

    rec = record(mach, {"BEnter": boom("BEnter panic"), "ExceptionState": exception_state})
    log = mlog("t")

    assert mach.add("B") == CANCELED
    assert mach.string_all() == "(A:1 Exception:1) [B:0 C:0 D:0]"
    assert rec.calls == ["BEnter", "ExceptionEnter", "AA", "AException", "AnyEnter", "ExceptionState", "AnyState"]
    assert "[cancel] (B A) by recover" in log.text
    assert str(mach.err) == "BEnter panic"

    args = seen["args"]
    assert args["panic"] is True
    assert str(args["err"]) == "BEnter panic"
    assert isinstance(args["err_trace"], str)
    assert "BEnter panic" in args["err_trace"]


def test_t61_final_panic_reverts_later_states(make, record, boom, mlog):
    mach = make(log_level=LogLevel.DECISIONS)
    rec = record(mach, {"BState": boom("BState panic")})
    log = mlog("t")

    assert mach.add("A", "B", "C") == CANCELED
    assert mach.string_all() == "(A:1 Exception:1) [B:2 C:2 D:0]"
    assert rec.calls == [
        "AEnter", "BEnter", "CEnter", "AnyEnter", "AState", "BState",
        "ExceptionEnter", "AA", "AException", "AnyEnter", "ExceptionState", "AnyState",
    ]  # fmt: skip
    assert "[recover] partial final states as (A)" in log.text
    assert str(mach.err) == "BState panic"


def test_t62_end_panic_reverts_nothing(make, record, boom):
    mach = make()
    mach.set("A", "B")
    record(mach, {"BEnd": boom("BEnd panic")})
    assert mach.set("C") == CANCELED
    assert mach.string_all() == "(C:1 Exception:1) [A:2 B:2 D:0]"


def test_t63_handler_timeout(make, record):
    mach = make(handler_timeout=0.05)

    def slow_a_state(e):
        time.sleep(0.12)

    rec = record(mach, {"AState": slow_a_state})
    assert mach.add("A") == CANCELED
    assert mach.string_all() == "() [A:2 B:0 C:0 D:0 Exception:0]"
    assert rec.calls == ["AEnter", "AnyEnter", "AState"]
    assert any("handler timeout: AState" in str(err) for err in mach.internal_errors), mach.internal_errors
    # a timeout does not activate Exception
    assert mach.is_err() is False


def test_t64_panic_in_exception_handler_adds_no_second_exception(make, record, boom):
    mach = make()
    record(mach, {"ExceptionState": boom("ExceptionState panic")})
    assert mach.add_err(ValueError("x")) == CANCELED
    assert mach.string_all() == "() [A:0 B:0 C:0 D:0 Exception:2]"
    assert mach.is_err() is False


def test_t65_user_defined_non_multi_exception(make, record):
    mach = make({"Exception": State(), "A": State()})
    rec = record(mach)
    a, b = ValueError("a"), ValueError("b")

    assert mach.add_err(a) == EXECUTED
    assert mach.string_all() == "(Exception:1) [A:0]"
    assert rec.calls == ["ExceptionEnter", "AnyEnter", "ExceptionState", "AnyState"]

    rec.clear()
    assert mach.add_err(b) == EXECUTED
    assert mach.string_all() == "(Exception:1) [A:0]"
    assert rec.calls == ["ExceptionException", "AnyEnter", "AnyState"]
    assert mach.err is b


def test_t66_exception_blocks_nothing(make):
    mach = make()
    mach.add_err(ValueError("x"))
    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "(A:1 Exception:1) [B:0 C:0 D:0]"

    mach2 = make({"A": State(), "ErrX": State(require=("Exception",))}, id="t2")
    assert mach2.add("ErrX") == CANCELED
    assert mach2.add_err_state("ErrX", ValueError("x")) == EXECUTED
    assert mach2.string_all() == "(ErrX:1 Exception:1) [A:0]"
