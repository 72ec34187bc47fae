"""Spec section 19, "Queue": T48-T57.

A mutation made from inside a handler is queued and returns its queue tick (an int >= Result.QUEUED);
a deduplicated one returns Result.EXECUTED (0).
"""

import threading

from machine import Result, State

EXECUTED = Result.EXECUTED
CANCELED = Result.CANCELED


def test_t48_mutation_from_handler_is_queued(make, record):
    mach = make()
    mach.set("A")
    assert mach.queue_tick == 2
    seen: dict = {}

    def b_enter(e):
        seen["add"] = mach.add("C")
        seen["queue_len"] = mach.queue_len
        seen["queue_tick"] = mach.queue_tick

    rec = record(mach, {"BEnter": b_enter})
    assert mach.set("B") == EXECUTED
    assert seen == {"add": 4, "queue_len": 1, "queue_tick": 3}
    assert mach.string_all() == "(B:1 C:1) [A:2 D:0 Exception:0]"
    assert rec.calls == [
        "AExit", "BEnter", "AB", "AnyEnter", "AEnd", "BState", "AnyState",
        "CEnter", "BB", "BC", "AnyEnter", "CState", "AnyState",
    ]  # fmt: skip
    assert mach.queue_tick == 4


def test_t49_dedup_looks_at_the_whole_queue(make, record):
    mach = make()
    mach.set("B")
    seen: list = []

    def a_state(e):
        seen.append(("add B", mach.add("B")))
        seen.append(("add B", mach.add("B")))
        seen.append(("add B", mach.add("B")))
        seen.append(("len", mach.queue_len))
        seen.append(("remove B", mach.remove("B")))
        seen.append(("len", mach.queue_len))
        seen.append(("remove B", mach.remove("B")))
        # a duplicate even after the remove (QUIRK kept)
        seen.append(("add B", mach.add("B")))
        seen.append(("add B x", mach.add("B", args={"x": 1})))
        # no short-circuit: the queue is not empty
        seen.append(("remove D", mach.remove("D")))

    record(mach, {"AState": a_state})
    assert mach.add("A") == EXECUTED
    assert seen == [
        ("add B", 4),
        ("add B", EXECUTED),
        ("add B", EXECUTED),
        ("len", 1),
        ("remove B", 5),
        ("len", 2),
        ("remove B", EXECUTED),
        ("add B", EXECUTED),
        ("add B x", 6),
        ("remove D", 7),
    ]
    assert mach.string_all() == "(A:1 B:3) [C:0 D:0 Exception:0]"


def test_t50_auto_is_prepended_before_queued_mutations(make, nr, record):
    mach = make(nr(D=State(auto=True, require=("A",))))

    def a_state(e):
        mach.add("B")
        mach.add("C")

    rec = record(mach, {"AState": a_state})
    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "(A:1 B:1 C:1 D:1) [Exception:0]"
    assert rec.calls == [
        # A's transition
        "AEnter", "AnyEnter", "AState", "AnyState",
        # the auto D (prepended); its target is [A D] (require topology)
        "DEnter", "AA", "AD", "AnyEnter", "DState", "AnyState",
        # B
        "BEnter", "AA", "DD", "AB", "AD", "DB", "DA", "AnyEnter", "BState", "AnyState",
        # C
        "CEnter", "BB", "AA", "DD", "BC", "BA", "BD", "AC", "AB", "AD", "DC", "DB", "DA",
        "AnyEnter", "CState", "AnyState",
    ]  # fmt: skip


def test_t51_remove_short_circuit_inside_a_run(make, record):
    mach = make()
    seen: list = []

    def a_state(e):
        seen.append(mach.remove("C"))
        seen.append(mach.queue_len)
        seen.append(mach.remove("A"))

    record(mach, {"AState": a_state})
    assert mach.add("A") == EXECUTED
    assert seen == [EXECUTED, 0, 3]
    assert mach.string_all() == "() [A:2 B:0 C:0 D:0 Exception:0]"


def test_t52_when_queue_from_a_handler(make, record):
    mach = make()
    box: dict = {}

    def a_state(e):
        mach.add("B")
        mach.add("C")
        r = mach.add("D")
        box["r"] = r
        waiter = mach.when_queue(r)

        def wait_in_thread():
            box["ok"] = waiter.wait(timeout=2)
            box["state"] = mach.string_all()

        thread = threading.Thread(target=wait_in_thread, daemon=True)
        box["thread"] = thread
        thread.start()

    record(mach, {"AState": a_state})
    assert mach.add("A") == EXECUTED
    box["thread"].join(timeout=3)
    assert not box["thread"].is_alive()
    assert box["r"] == 5
    assert box["ok"] is True
    assert box["state"] == "(A:1 B:1 C:1 D:1) [Exception:0]"
    assert mach.when_queue(2).done is True


T04_SCHEMA = {
    "A": State(auto=True, require=("C",)),
    "B": State(multi=True, add=("C",)),
    "C": State(after=("D",)),
    "D": State(add=("C", "B")),
}


def test_t53_checks_run_negotiation_only(make, record):
    mach = make(T04_SCHEMA)
    rec = record(mach)

    assert mach.can_add("A") == CANCELED
    assert rec.calls == []

    assert mach.can_add("C") == EXECUTED
    assert rec.calls == ["CEnter", "AnyEnter"]
    assert mach.string_all() == "() [A:0 B:0 C:0 D:0 Exception:0]"

    rec.clear()
    assert mach.can_remove("C") == EXECUTED
    assert rec.calls == ["AnyEnter"]
    assert mach.string_all() == "() [A:0 B:0 C:0 D:0 Exception:0]"

    nr_mach = make(id="t2")
    nr_mach.set("A")
    rec2 = record(nr_mach, {"BEnter": False})
    assert nr_mach.can_add("B") == CANCELED
    assert rec2.calls == ["BEnter"]
    rec2.clear()
    assert nr_mach.can_add("C") == EXECUTED
    assert rec2.calls == ["CEnter", "AA", "AC", "AnyEnter"]
    assert nr_mach.queue_tick == 2
    assert nr_mach.string_all() == "(A:1) [B:0 C:0 D:0 Exception:0]"


def test_t54_queue_limit(make, record):
    mach = make(queue_limit=2)
    seen: dict = {}

    def a_state(e):
        seen["B"] = mach.add("B")
        seen["C"] = mach.add("C")
        seen["D"] = mach.add("D")
        seen["err"] = mach.add_err(ValueError("x"))
        seen["remove B"] = mach.remove("B")

    record(mach, {"AState": a_state})
    assert mach.add("A") == EXECUTED
    assert seen["B"] >= Result.QUEUED
    assert seen["C"] >= Result.QUEUED
    assert (seen["B"], seen["C"]) == (3, 4)
    assert seen["D"] == CANCELED
    assert seen["err"] == CANCELED
    assert seen["remove B"] == CANCELED
    assert mach.string_all() == "(A:1 B:1 C:1) [D:0 Exception:0]"


def test_t55_queued_mutation_runs_after_canceled_transition(make, record):
    mach = make()

    def d_enter(e):
        mach.add("C")
        return False

    rec = record(mach, {"DEnter": d_enter})
    assert mach.add("D") == CANCELED
    assert mach.string_all() == "(C:1) [A:0 B:0 D:0 Exception:0]"
    assert rec.calls == ["DEnter", "CEnter", "AnyEnter", "CState", "AnyState"]


def test_t56_multi_mutations_are_never_deduplicated(make, record):
    mach = make({"A": State(), "M": State(multi=True)})
    seen: list = []

    def a_state(e):
        seen.extend(mach.add("M") for _ in range(3))
        seen.append(mach.queue_len)

    record(mach, {"AState": a_state})
    assert mach.add("A") == EXECUTED
    assert seen == [3, 4, 5, 3]
    assert mach.string_all() == "(A:1 M:5) [Exception:0]"


def test_t57_result_is_of_the_first_transition(make, record):
    mach = make()

    def a_state(e):
        mach.remove("A")

    record(mach, {"AState": a_state})
    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "() [A:2 B:0 C:0 D:0 Exception:0]"
