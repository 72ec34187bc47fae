"""The plain path (machine/plain.py): a machine switches between it and the general path when a feature turns on or
off, and every feature still fires, also when a handler turns it on in the middle of a transition.

The oracle is the same scenario on a machine kept on the general path by a waiter that never resolves; the
recorded events must be the same on both.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from machine import Event, LogLevel, Machine, Result, State, Tracer

EXECUTED, CANCELED = Result.EXECUTED, Result.CANCELED


def schema() -> dict[str, State]:
    # B follows A by itself; D is an auto state its relations always reject
    return {
        "A": State(),
        "B": State(auto=True, require=("A",)),
        "C": State(),
        "D": State(auto=True, require=("Never",)),
        "Never": State(),
    }


class AllHooks(Tracer):
    """Records every hook a transition and the queue call."""

    def __init__(self, out: list[tuple[Any, ...]], rejected: bool = True) -> None:
        self.out = out
        self.sees_rejected_autos = rejected

    def mutation_queued(self, mach: Machine, mutation: Any) -> None:
        self.out.append(("queued", mutation.type, mutation.called, mutation.is_auto))

    def transition_init(self, tx: Any) -> None:
        self.out.append(("init", tuple(tx.called_states)))

    def transition_start(self, tx: Any) -> None:
        self.out.append(("start", tuple(tx.called_states)))

    def handler_start(self, tx: Any, binding: str, handler: str) -> None:
        self.out.append(("handler_start", handler))

    def handler_end(self, tx: Any, binding: str, handler: str) -> None:
        self.out.append(("handler_end", handler))

    def transition_finals(self, tx: Any) -> None:
        self.out.append(("finals", tuple(tx.called_states)))

    def transition_end(self, tx: Any) -> None:
        self.out.append(("end", tuple(tx.called_states), tuple(tx.target_states), tx.is_accepted))

    def queue_end(self, mach: Machine) -> None:
        self.out.append(("queue_end",))


class TxOnly(Tracer):
    """Only transition hooks: the machine stays on the plain path."""

    def __init__(self, out: list[tuple[Any, ...]], rejected: bool) -> None:
        self.out = out
        self.sees_rejected_autos = rejected

    def transition_init(self, tx: Any) -> None:
        self.out.append(("init", tuple(tx.called_states)))

    def transition_finals(self, tx: Any) -> None:
        self.out.append(("finals", tuple(tx.called_states)))

    def transition_end(self, tx: Any) -> None:
        self.out.append(("end", tuple(tx.called_states), tuple(tx.target_states), tx.is_accepted, tx.is_auto))


def pair(handlers: Any, mach_id: str = "p") -> list[Machine]:
    """[a plain machine, one kept on the general path], each with its own ``handlers(mach)`` bound."""
    plain = Machine(schema(), id=mach_id)
    general = Machine(schema(), id=mach_id + "g")
    general.when("Never")  # pending for good: the general path
    out = []
    for mach in (plain, general):
        mach.bind_handlers(handlers(mach))
        out.append(mach)
    assert plain._plain and not general._plain
    return out


def test_tracer_bound_by_a_final_handler_gets_the_rest_of_the_transition() -> None:
    logs: dict[str, list[tuple[Any, ...]]] = {}

    def handlers(mach: Machine) -> dict[str, Any]:
        out = logs.setdefault(mach.id, [])

        def a_state(e: Any) -> None:
            if not mach._tracers:
                mach.bind_tracer(AllHooks(out))

        return {"AState": a_state, "AnyState": lambda e: out.append(("any", e.transition.is_auto))}

    plain, general = pair(handlers)
    for mach in (plain, general):
        assert mach.add("A") == EXECUTED
        assert mach.add("C") == EXECUTED
        assert mach.is_active("A", "B", "C")
    got, want = logs["p"], logs["pg"]
    assert got == want
    # what the switch must not lose: the rest of AState's call, the auto transition queued, the queue's end
    assert got[:3] == [("handler_end", "AState"), ("handler_start", "AnyState"), ("any", False)]
    assert ("queued", 0, ("B", "D"), True) in got and ("queue_end",) in got
    assert not plain._plain


def test_tracer_bound_from_outside_sees_every_hook_and_detaching_brings_the_plain_path_back() -> None:
    logs: dict[str, list[tuple[Any, ...]]] = {}
    plain, general = pair(lambda mach: {"AState": lambda e: None})
    for mach in (plain, general):
        mach.add("C")  # on the plain path, for the first machine
        tracer = AllHooks(logs.setdefault(mach.id, []))
        mach.bind_tracer(tracer)
        mach.add("A")
        mach.detach_tracer(tracer)
        mach.remove("A")
    assert logs["p"] == logs["pg"]
    assert [h[0] for h in logs["p"]].count("handler_start") == 1
    assert ("queued", 0, ("A",), False) in logs["p"] and ("queue_end",) in logs["p"]
    assert plain._plain


def test_transition_hooks_keep_the_plain_path_and_see_the_same_transitions() -> None:
    for rejected in (True, False):
        logs: dict[str, list[tuple[Any, ...]]] = {}
        plain, general = pair(lambda mach: {"BState": lambda e: None})
        for mach in (plain, general):
            mach.bind_tracer(TxOnly(logs.setdefault(mach.id, []), rejected))
            mach.add("C")
            mach.add("A")  # B follows
            mach.remove("C")  # D's auto transition, rejected: it runs only for a tracer that sees it
            mach.add("A", args={"again": 1})
        assert plain._plain
        assert logs["p"] == logs["pg"]
        rejected_d = [h for h in logs["p"] if h[0] == "end" and h[1] == ("D",)]
        assert bool(rejected_d) is rejected and not any(h[3] for h in rejected_d)


def test_log_level_set_by_a_handler_logs_the_rest(caplog: Any) -> None:
    lines: dict[str, list[str]] = {}

    def handlers(mach: Machine) -> dict[str, Any]:
        def a_state(e: Any) -> None:
            mach.log_level = LogLevel.OPS

        return {"AState": a_state, "BState": lambda e: None}

    plain, general = pair(handlers)
    for mach in (plain, general):
        with caplog.at_level(logging.INFO, logger=f"machine.{mach.id}"):
            caplog.clear()
            mach.add("A")
            lines[mach.id] = [r.getMessage().split("] ", 1)[1] for r in caplog.records
                              if r.name == f"machine.{mach.id}"]
    assert lines["p"] == lines["pg"]
    assert "[auto] B D" in lines["p"] and "[add:auto] B D" in lines["p"] and "[handler:0] BState" in lines["p"]
    for mach in (plain, general):
        mach.log_level = LogLevel.NOTHING
    assert plain._plain


def test_waiters_made_by_a_handler_resolve_in_the_same_drain() -> None:
    made: dict[str, Any] = {}

    def handlers(mach: Machine) -> dict[str, Any]:
        def a_state(e: Any) -> None:
            # B is added by the auto transition right after this one; C by a mutation queued meanwhile
            tick = mach.add("C")
            made[mach.id] = (mach.when("B"), mach.when_queue(tick), mach.when_args("C", {"k": 1}))

        return {"AState": a_state}

    plain, general = pair(handlers)
    for mach in (plain, general):
        mach.add("A")
        when_b, when_queue, _ = made[mach.id]
        assert when_b.done and not when_b.cancelled
        assert when_queue.done and not when_queue.cancelled
        assert not mach._plain
    for mach in (plain, general):
        mach.remove("C")
        assert mach.add("C", args={"k": 1}) == EXECUTED
        assert made[mach.id][2].wait(0)


def test_state_ctx_made_by_a_handler_ends_and_the_plain_path_comes_back() -> None:
    ctxs: dict[str, Any] = {}

    def handlers(mach: Machine) -> dict[str, Any]:
        return {"BState": lambda e: ctxs.setdefault(mach.id, mach.state_ctx("B"))}

    plain, general = pair(handlers)
    for mach in (plain, general):
        mach.add("A")
        ctx = ctxs[mach.id]
        assert not ctx.done and not mach._plain
        mach.remove("A")  # B goes with it
        assert ctx.done
    assert plain._plain
    outer = plain.state_ctx("C")
    assert not plain._plain
    plain.add("C")
    assert outer.done and plain._plain


def test_dispose_from_a_handler_finishes_before_the_mutation_returns() -> None:
    def handlers(mach: Machine) -> dict[str, Any]:
        def c_state(e: Any) -> None:
            mach.add("A")  # queued: canceled by the dispose
            mach.dispose()

        return {"CState": c_state}

    plain, general = pair(handlers)
    for mach in (plain, general):
        called: list[str] = []
        mach.on_dispose(lambda called=called: called.append("x"))
        assert mach.add("C") == EXECUTED
        assert mach.disposed and called == ["x"]
        assert mach.add("A") == CANCELED
        assert mach.when_disposed().wait(0)


def test_a_raising_handler_on_the_plain_path() -> None:
    def handlers(mach: Machine) -> dict[str, Any]:
        def c_state(e: Any) -> None:
            raise RuntimeError("disk full")

        return {"CState": c_state}

    plain, general = pair(handlers)
    for mach in (plain, general):
        assert mach.add("A") == EXECUTED
        assert mach.add("C") == CANCELED  # C goes back, Exception is added
        assert mach.is_active("A", "B", "Exception") and not mach.is_active("C")
        assert isinstance(mach.err, RuntimeError)
        assert mach.transition is None
    assert plain.clock() == {**general.clock(), "Never": 0}


def test_a_raising_transition_hook_is_logged_and_the_next_tracer_still_runs(caplog: Any) -> None:
    class Raises(Tracer):
        sees_rejected_autos = False

        def transition_init(self, tx: Any) -> None:
            raise RuntimeError("init hook")

        def transition_end(self, tx: Any) -> None:
            raise RuntimeError("end hook")

    out: list[tuple[Any, ...]] = []
    mach = Machine(schema(), id="r", tracers=[Raises(), TxOnly(out, False)])
    assert mach._plain
    with caplog.at_level(logging.ERROR, logger="machine.r"):
        assert mach.add("A") == EXECUTED
    assert mach.is_active("A", "B")
    assert [h[0] for h in out] == ["init", "finals", "end", "init", "finals", "end"]
    raised = [r.getMessage().rsplit(".", 1)[1] for r in caplog.records if r.name == "machine.r"]
    assert raised == ["transition_init raised", "transition_end raised"] * 2


def test_the_last_waiter_ending_brings_the_plain_path_back_and_a_new_one_still_resolves() -> None:
    from machine import Ctx

    mach = Machine(schema(), id="w")
    w = mach.when("C")
    assert not mach._plain
    mach.add("C")
    assert w.wait(0) and mach._plain  # resolved: nothing waits any more
    ctx = Ctx()
    w = mach.when("A", ctx=ctx)
    tick_waiter = mach.when_query(lambda clock: clock["B"] > 0)
    assert not mach._plain
    ctx.cancel()
    assert w.cancelled and not mach._plain  # the query still waits
    mach.add("A")
    assert tick_waiter.wait(0) and mach._plain
    again = mach.when_not("A")
    args_waiter = mach.when_args("C", {"k": 1})
    mach.remove("A")
    assert again.wait(0) and not mach._plain
    mach.remove("C")
    mach.add("C", args={"k": 1})
    assert args_waiter.wait(0) and mach._plain


def test_a_tracer_hook_that_turns_a_feature_on_before_the_final_handlers() -> None:
    logs: dict[str, list[tuple[Any, ...]]] = {}

    class Binder(Tracer):
        sees_rejected_autos = False

        def __init__(self, mach: Machine) -> None:
            self.mach = mach

        def transition_finals(self, tx: Any) -> None:
            if len(self.mach._tracers) == 1:
                self.mach.bind_tracer(AllHooks(logs.setdefault(self.mach.id, [])))

    plain, general = pair(lambda mach: {"AState": lambda e: None})
    for mach in (plain, general):
        mach.bind_tracer(Binder(mach))
        mach.add("A")
    assert logs["p"] == logs["pg"]
    assert logs["p"][:2] == [("handler_start", "AState"), ("handler_end", "AState")]



class Reasons(Tracer):
    """``transition_end`` only (the plain path keeps it): each transition's outcome and why."""

    sees_rejected_autos = False

    def __init__(self, out: list[Any]) -> None:
        self.out = out

    def transition_end(self, tx: Any) -> None:
        self.out.append(("end", tuple(tx.called_states), tuple(tx.target_states), tx.is_accepted, tx.reason,
                         tx.handler))


def test_negotiation_handlers_in_place_match_the_general_path() -> None:
    # negotiation on the plain path calls each handler in place; every kind of return, and a tracer bound by one
    # of them, must come out as on the general path: the calls in order, results, reasons, hooks, the states
    logs: dict[str, list[Any]] = {}

    def bindings(mach: Machine, ret: dict[str, Any]) -> list[dict[str, Any]]:
        out = logs.setdefault(mach.id, [])

        def neg(name: str, which: int) -> Any:
            def fn(e: Any) -> Any:
                out.append((name, which, e.transition.is_auto))
                r = ret.get(f"{name}{which}")
                if r == "raise":
                    raise RuntimeError(f"{name} failed")
                if r == "tracer":
                    if not any(isinstance(t, AllHooks) for t in mach._tracers):
                        mach.bind_tracer(AllHooks(out))
                    return None
                return r
            return fn

        return [{n: neg(n, 1) for n in ("AEnter", "BEnter", "AnyEnter", "CEnter")},
                {n: neg(n, 2) for n in ("AEnter", "BEnter")}]

    cases = [
        {},  # every handler accepts
        {"AEnter1": "yes"},  # neither None nor True nor False: accepted, the next binding still runs
        {"AEnter1": True, "AEnter2": False},  # canceled by the second binding
        {"AEnter1": "raise"},  # canceled, Exception follows
        {"BEnter1": False},  # the auto state B turned down: partial acceptance, BEnter2 skipped
        {"AEnter1": "tracer"},  # a tracer bound mid-negotiation gets this handler's end and the rest
        {"AnyEnter1": False},
    ]
    outcome: dict[str, list[Any]] = {}
    for i, ret in enumerate(cases):
        plain, general = pair(lambda m: {}, mach_id=f"n{i}")
        for mach in (plain, general):
            mach.bind_tracer(Reasons(logs.setdefault(mach.id, [])))
            for b in bindings(mach, ret):
                mach.bind_handlers(b)
            results = [mach.add("A"), mach.add("C"), mach.remove("A")]
            outcome[mach.id] = [results, sorted(mach.active_states()), repr(mach.err)]
        assert plain._plain == (ret != {"AEnter1": "tracer"})
        assert logs[f"n{i}"] == logs[f"n{i}g"], ret
        assert outcome[f"n{i}"] == outcome[f"n{i}g"], ret
    assert ("AEnter", 2, False) in logs["n1"]
    assert ("AEnter", 2, False) not in logs["n3"] and "Exception" in outcome["n3"][1]
    assert ("BEnter", 2, True) not in logs["n4"] and ("BEnter", 1, True) in logs["n4"]
    assert ("handler_end", "AEnter") in logs["n5"]
    assert ("end", ("A",), ("A",), False, "AEnter returned False", "AEnter") in logs["n2"]


def test_negotiation_timeout_in_place_matches_the_general_path() -> None:
    # a handler timeout of 1 ns: every handler runs past it, so the first one cancels the transition
    out: dict[str, list[Any]] = {}
    for mach in (Machine(schema(), id="t", handler_timeout=1e-9), Machine(schema(), id="tg", handler_timeout=1e-9)):
        if mach.id == "tg":
            mach.when("Never")
        log = out.setdefault(mach.id, [])
        mach.bind_tracer(Reasons(log))
        mach.bind_handlers({"AEnter": lambda e, log=log: log.append("AEnter"),
                            "AnyEnter": lambda e, log=log: log.append("AnyEnter")})
        assert mach.add("A") == CANCELED
        log.append(sorted(mach.active_states()))
    assert out["t"] == out["tg"]
    assert out["t"] == ["AEnter", ("end", ("A",), ("A",), False, "AEnter timed out", "AEnter"), []]


class Queued(TxOnly):
    """Transition hooks and ``mutation_queued`` (as the history a served machine keeps): still the plain path."""

    def mutation_queued(self, mach: Machine, mutation: Any) -> None:
        self.out.append(("queued", mutation.type, mutation.called, mutation.is_auto))


def test_mutation_queued_keeps_the_plain_path_and_is_told_of_every_mutation_as_on_the_general_path() -> None:
    for rejected in (True, False):
        logs: dict[str, list[tuple[Any, ...]]] = {}
        plain, general = pair(lambda mach: {"BState": lambda e: None})
        for mach in (plain, general):
            mach.bind_tracer(Queued(logs.setdefault(mach.id, []), rejected))
            mach.add("C")
            mach.add("A")  # B follows: its auto transition is told as queued
            mach.remove("C")  # D's auto transition, rejected: told only to a tracer that sees it
            mach.add("A", args={"again": 1})
        assert plain._plain
        assert logs["p"] == logs["pg"]
        assert ("queued", 0, ("B", "D"), True) in logs["p"]
        # 4 called, B's auto; D's rejected auto after adding C and after removing C only for a tracer that sees it
        assert [h[0] for h in logs["p"]].count("queued") == (7 if rejected else 5)


def test_a_mutation_queued_hook_that_turns_a_feature_on_sends_the_rest_to_the_general_path() -> None:
    logs: dict[str, list[tuple[Any, ...]]] = {}
    made: dict[str, Any] = {}

    class Waits(Queued):
        def mutation_queued(self, mach: Machine, mutation: Any) -> None:
            super().mutation_queued(mach, mutation)
            if mutation.is_auto and mach.id not in made:  # the first waiter, made as B's auto is told
                made[mach.id] = mach.when("C")

    plain, general = pair(lambda mach: {})
    for mach in (plain, general):
        mach.bind_tracer(Waits(logs.setdefault(mach.id, []), False))
        assert mach.add("A") == EXECUTED  # B follows, told as queued; the hook makes a waiter
        assert not mach._plain
        mach.add("C")
        assert mach.is_active("A", "B", "C")
        assert made[mach.id].wait(0)
    assert logs["p"] == logs["pg"]


def test_an_eval_queued_while_a_plain_transition_runs_is_run_as_an_eval() -> None:
    """Another thread's ``eval`` during a plain machine's transition is prepended to the queue; the plain loop used
    to run it as a transition of type EVAL (its function never called, every state deactivated)."""
    go, started = threading.Event(), threading.Event()

    class H:
        def BState(self, e: Event) -> None:
            started.set()
            assert go.wait(5)

    mach = Machine({"A": State(), "B": State()}, handlers=H())
    mach.add("A")
    assert mach._plain
    t = threading.Thread(target=mach.add, args=("B",))
    t.start()
    assert started.wait(5)
    ran: list[list[str]] = []
    got: list[bool] = []
    t2 = threading.Thread(target=lambda: got.append(mach.eval(lambda: ran.append(mach.active_states()), timeout=5)))
    t2.start()
    deadline = time.monotonic() + 5
    while mach.queue_len == 0 and time.monotonic() < deadline:  # the eval is prepended, then waits
        time.sleep(0.001)
    go.set()
    t.join(5)
    t2.join(5)
    assert got == [True]
    assert ran == [["A", "B"]]
    assert mach.active_states() == ["A", "B"]


def test_no_hook_or_handler_runs_under_the_machine_lock() -> None:
    """The plain path keeps the lock from the queue's claim to the clock write when nothing runs in between; a
    transition hook or a handler in between gets it released first."""
    owned: list[tuple[str, bool]] = []

    def note(where: str, mach: Machine) -> None:
        owned.append((where, mach._lock._is_owned()))  # type: ignore[attr-defined]

    class T(Tracer):
        def transition_init(self, tx: Any) -> None:
            note("init", tx.machine)

        def transition_start(self, tx: Any) -> None:
            note("start", tx.machine)

        def transition_end(self, tx: Any) -> None:
            note("end", tx.machine)

    class H:
        def BEnter(self, e: Event) -> None:
            note("BEnter", e.machine)

        def BState(self, e: Event) -> None:
            note("BState", e.machine)

        def CState(self, e: Event) -> None:
            note("CState", e.machine)

    for tracers in ([], [T()]):
        mach = Machine({"A": State(), "B": State(), "C": State(auto=True, require=("A",))}, handlers=H(),
                       tracers=tracers)
        assert mach._plain
        mach.add("A")
        mach.add("B")
        mach.remove("A")
        assert mach.active_states() == ["B"] and not mach._lock._is_owned()  # type: ignore[attr-defined]
    assert owned and not any(held for _, held in owned)
    assert {w for w, _ in owned} == {"init", "start", "end", "BEnter", "BState", "CState"}


def test_the_plain_claim_of_a_busy_queue_runs_nothing() -> None:
    """``Machine.add`` on a plain machine whose queue another thread holds runs nothing: ``drain_plain`` hands the
    mutation to ``mutation_queue.mutate_general``, which queues it; the machine is left as it was, the lock
    released, and the queue's holder runs it."""
    from machine.mutation_queue import drain

    mach = Machine({"A": State(), "B": State()})
    mach.add("A")
    with mach._lock:
        mach._processing = True  # as if another thread ran the queue
    before = (mach.active_states(), mach.machine_tick)
    assert mach.add("B") >= Result.QUEUED
    assert (mach.active_states(), mach.machine_tick) == before
    assert not mach._lock._is_owned()  # type: ignore[attr-defined]
    drain(mach)  # the holder takes it from the queue
    assert mach.is_active("B") and not mach._processing


def test_the_auto_decision_kept_on_a_plan_serves_a_tracer_bound_later() -> None:
    """``Plan.auto`` (the auto transition after a plan, decided once per plan on the plain path) holds no tracer
    state: a tracer bound after the plans were cached sees the same transitions, rejected autos included, as one
    bound from the start, and detaching it leaves the same states."""
    schema = {"A": State(), "B": State(require=("A",)), "C": State(auto=True, require=("B",)),
              "D": State(auto=True, require=("Z",)), "Z": State()}

    class Seen(Tracer):
        def __init__(self) -> None:
            self.txs: list[tuple[list[str], bool, bool]] = []

        def transition_end(self, tx: Any) -> None:
            self.txs.append((tx.called_states, tx.is_auto, tx.is_accepted))

    def cycle(mach: Machine) -> None:
        mach.add("A")
        mach.add("B")
        mach.remove("A")

    early = Seen()
    m1 = Machine(schema, tracers=[early])
    late = Seen()
    m2 = Machine(schema)
    for _ in range(3):
        cycle(m2)  # the plans and their auto decisions are cached now
    m2.bind_tracer(late)
    cycle(m1)
    cycle(m2)
    assert late.txs == early.txs and (["C", "D"], True, False) in late.txs and (["C", "D"], True, True) in late.txs
    m2.detach_tracer(late)
    cycle(m2)
    assert len(late.txs) == len(early.txs) and m2.active_states() == m1.active_states() == []
