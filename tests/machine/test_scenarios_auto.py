"""Spec section 19, "Auto": T38-T47."""

from machine import LogLevel, Result, State

EXECUTED = Result.EXECUTED
CANCELED = Result.CANCELED


def test_t38_auto_state_readded_after_remove(make, nr, mlog):
    mach = make(nr(B=State(auto=True, require=("A",))), log_level=LogLevel.DECISIONS)
    log = mlog("t")

    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "(A:1 B:1) [C:0 D:0 Exception:0]"
    assert "[auto] B" in log.text
    assert "[auto_] +B" in log.text

    # re-added at once, and Remove still returns EXECUTED
    assert mach.remove("B") == EXECUTED
    assert mach.string_all() == "(A:1 B:3) [C:0 D:0 Exception:0]"

    assert mach.remove("A") == EXECUTED
    assert mach.string_all() == "() [A:2 B:4 C:0 D:0 Exception:0]"


def test_t39_auto_states_rejected_by_require(make, nr, mlog):
    mach = make(
        nr(C=State(auto=True, require=("B",)), D=State(auto=True, require=("B",))),
        log_level=LogLevel.DECISIONS,
    )
    log = mlog("t")
    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "(A:1) [B:0 C:0 D:0 Exception:0]"
    assert "[cancel:reject] C D" in log.text

    assert mach.add("B") == EXECUTED
    assert mach.string_all() == "(A:1 B:1 C:1 D:1) [Exception:0]"


def test_t40_auto_partial_acceptance(make, nr, mlog):
    mach = make(
        nr(A=State(auto=True), B=State(auto=True, after=("A",), require=("C",))),
        log_level=LogLevel.DECISIONS,
    )
    log = mlog("t")
    assert mach.add("D") == EXECUTED
    assert mach.string_all() == "(A:1 D:1) [B:0 C:0 Exception:0]"
    assert "[auto_] +A" in log.text


def test_t41_auto_states_satisfy_each_others_require(make, record):
    # Go's order was [A B C D Exception Start]; here it is the dict order with Exception appended.
    mach = make(
        {
            "A": State(auto=True, require=("B", "C")),
            "B": State(auto=True, require=("D",)),
            "C": State(auto=True),
            "D": State(auto=True),
            "Start": State(),
        }
    )
    assert mach.state_names == ["A", "B", "C", "D", "Start", "Exception"]
    rec = record(mach)
    assert mach.add("Start") == EXECUTED
    assert mach.string_all() == "(A:1 B:1 C:1 D:1 Start:1) [Exception:0]"
    assert rec.calls == [
        "StartEnter", "AnyEnter", "StartState", "AnyState",
        "DEnter", "BEnter", "CEnter", "AEnter",
        "StartStart", "StartD", "StartB", "StartC", "StartA",
        "AnyEnter", "DState", "BState", "CState", "AState", "AnyState",
    ]  # fmt: skip


def test_t42_auto_handlers(make, nr, record):
    mach = make(nr(B=State(auto=True)))
    rec = record(mach)

    mach.add("A")
    assert mach.string_all() == "(A:1 B:1) [C:0 D:0 Exception:0]"
    assert rec.calls == [
        "AEnter", "AnyEnter", "AState", "AnyState",
        "BEnter", "AA", "AB", "AnyEnter", "BState", "AnyState",
    ]  # fmt: skip

    rec.clear()
    assert mach.remove("B") == EXECUTED
    assert mach.string_all() == "(A:1 B:3) [C:0 D:0 Exception:0]"
    assert rec.calls == [
        "BExit", "BA", "AnyEnter", "BEnd", "AnyState",
        "BEnter", "AA", "AB", "AnyEnter", "BState", "AnyState",
    ]  # fmt: skip

    # no change, so no auto transition
    rec.clear()
    mach.add("A")
    assert mach.string_all() == "(A:1 B:3) [C:0 D:0 Exception:0]"
    assert rec.calls == ["AA", "BB", "BA", "AB", "AnyEnter", "AnyState"]


AB_AUTO = {"A": State(auto=True), "B": State(auto=True), "C": State()}


def test_t43_auto_partial_rejection_by_pair_handler(make, record):
    mach = make(AB_AUTO)
    assert mach.state_names == ["A", "B", "C", "Exception"]
    rec = record(mach, {"CB": False})
    assert mach.add("C") == EXECUTED
    assert mach.string_all() == "(A:1 C:1) [B:0 Exception:0]"
    # B is partially rejected, and there is no BState
    assert rec.calls == [
        "CEnter", "AnyEnter", "CState", "AnyState",
        "AEnter", "BEnter", "CC", "CA", "CB", "AnyEnter", "AState", "AnyState",
    ]  # fmt: skip


def test_t44_rejected_auto_state_drops_its_adds(make, record):
    mach = make({"A": State(auto=True), "B": State(auto=True, add=("D",)), "C": State(), "D": State()})
    rec = record(mach, {"BEnter": False})
    assert mach.add("C") == EXECUTED
    assert mach.string_all() == "(A:1 C:1) [B:0 D:0 Exception:0]"
    # D is dropped by the re-resolution
    assert rec.calls == [
        "CEnter", "AnyEnter", "CState", "AnyState",
        "AEnter", "BEnter", "DEnter", "CC", "CA", "CD", "AnyEnter", "AState", "AnyState",
    ]  # fmt: skip


def test_t45_non_auto_handler_cancels_whole_auto_transition(make, record):
    mach = make(AB_AUTO)
    rec = record(mach, {"CC": False})
    assert mach.add("C") == EXECUTED
    assert mach.string_all() == "(C:1) [A:0 B:0 Exception:0]"
    assert rec.calls[:4] == ["CEnter", "AnyEnter", "CState", "AnyState"]
    # the order of A and B in the auto set may vary
    assert sorted(rec.calls[4:6]) == ["AEnter", "BEnter"]
    assert rec.calls[6:] == ["CC"]


def test_t46_turnstile(make):
    mach = make(
        {
            "InputPush": State(),
            "InputCoin": State(),
            "Locked": State(auto=True, remove=("Locked", "Unlocked")),
            "Unlocked": State(remove=("Locked", "Unlocked")),
        }
    )
    mach.add("InputCoin")
    assert mach.string_all() == "(InputCoin:1 Locked:1) [InputPush:0 Unlocked:0 Exception:0]"
    # auto is blocked by Unlocked
    mach.add("Unlocked")
    assert mach.string_all() == "(InputCoin:1 Unlocked:1) [InputPush:0 Locked:2 Exception:0]"
    mach.remove("Unlocked")
    assert mach.string_all() == "(InputCoin:1 Locked:3) [InputPush:0 Unlocked:2 Exception:0]"


def test_t47_no_auto_after_canceled_or_health_transitions(make):
    mach = make(
        {
            "A": State(require=("B",)),
            "B": State(),
            "C": State(auto=True),
            "Healthcheck": State(multi=True),
            "Heartbeat": State(),
        }
    )
    assert mach.add("A") == CANCELED
    assert mach.not_active("C")
    assert mach.add("Healthcheck") == EXECUTED
    assert mach.not_active("C")
    assert mach.add("Heartbeat") == EXECUTED
    assert mach.not_active("C")
    assert mach.add("B") == EXECUTED
    assert mach.is_active("C")
