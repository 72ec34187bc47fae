"""The plain path's caches on the hot path: the last plan of a mutation type and called states
(``Compiled.recent``, used only from the very active-states tuple it was made from) and the bound handlers of a
plan (``Machine._bound``). Each test makes a cached entry stale and checks the machine does not use it."""

from __future__ import annotations

from machine import Event, Machine, Result, State, Tracer, Transition


def _schema() -> dict[str, State]:
    return {"A": State(), "B": State(remove=("A",)), "C": State(require=("A",))}


def test_a_recent_plan_is_not_used_from_other_active_states() -> None:
    mach = Machine(_schema())
    assert mach._plain
    assert mach.add("C") == Result.CANCELED  # C requires A: the plan of add C from () is kept as the recent one
    mach.add("A")
    assert mach.add("C") == Result.EXECUTED and mach.active_states() == ["A", "C"]
    mach.add("B")  # removes A, and C with it
    assert mach.active_states() == ["B"]
    assert mach.add("C") == Result.CANCELED and mach.active_states() == ["B"]
    # the same type and called states, from different active states, on two machines of one schema at once
    other = Machine(_schema())
    other.add("A")
    assert other.add("C") == Result.EXECUTED and mach.add("C") == Result.CANCELED
    assert other.active_states() == ["A", "C"] and mach.active_states() == ["B"]


def test_a_recent_add_plan_is_not_used_for_a_remove_or_a_set_of_the_same_states() -> None:
    mach = Machine(_schema())
    mach.add("A")
    mach.add("A")  # a repeated add: its plan is the recent one for (add, A) from (A,)
    assert mach.remove("A") == Result.EXECUTED and mach.active_states() == []
    mach.add("A")
    mach.add("C")
    assert mach.set("A") == Result.EXECUTED and mach.active_states() == ["A"]


def test_a_recent_plan_is_not_used_for_a_check_or_an_auto_mutation() -> None:
    mach = Machine({"A": State(), "B": State(require=("A",)), "C": State(auto=True, require=("B",))})
    mach.add("A")
    mach.add("B")  # C, auto, follows from (A, B)
    assert mach.active_states() == ["A", "B", "C"]
    mach.remove("B")  # C goes with it
    assert mach.add("B") == Result.EXECUTED  # the recent plan of add B from (A,)
    mach.remove("B")
    # a check from the same states: answered from its own plan, nothing applied
    assert mach.can_add("B") == Result.EXECUTED and mach.active_states() == ["A"]
    assert mach.can_add("C") == Result.CANCELED
    mach.remove("A")
    assert mach.add("C") == Result.CANCELED  # the recent plan of add C from (): C requires B
    mach.add("A")
    mach.add("B")  # the auto add of C from (A, B): its own plan, not the recent non-auto one
    assert mach.active_states() == ["A", "B", "C"]


def test_a_schema_change_drops_the_recent_plans() -> None:
    mach = Machine(_schema())
    for _ in range(2):
        mach.add("A")
        assert mach.add("B") == Result.EXECUTED and mach.active_states() == ["B"]  # B removes A
        mach.remove("B")
    mach.add("A")
    # same states, B no longer removes A: the recent plan of add B from (A,) belongs to the old schema
    mach.set_schema({"Exception": State(multi=True), "A": State(), "B": State(), "C": State(require=("A",)),
                     "D": State()})
    assert mach.add("B") == Result.EXECUTED and mach.active_states() == ["A", "B"]


def test_handlers_bound_later_are_called_from_cached_plans() -> None:
    calls: list[str] = []

    class H:
        def AState(self, e: Event) -> None:
            calls.append("A")

    class H2:
        def AEnter(self, e: Event) -> bool:
            calls.append("enter")
            return False

    mach = Machine(_schema())
    for _ in range(2):  # plans and bound handlers cached
        mach.add("A")
        mach.remove("A")
    mach.bind_handlers(H())
    mach.add("A")
    mach.remove("A")
    assert calls == ["A"]
    mach.bind_handlers(H2())
    assert mach.add("A") == Result.CANCELED and calls == ["A", "enter"]
    mach.detach_handlers(mach._bindings[-1].obj)  # H2 off: add A goes through again
    assert mach.add("A") == Result.EXECUTED and calls == ["A", "enter", "A"]


def test_handlers_bound_and_detached_by_a_handler_serve_the_next_transitions() -> None:
    calls: list[str] = []

    class Later:
        def BState(self, e: Event) -> None:
            calls.append("later B")

    later = Later()

    class H:
        def AState(self, e: Event) -> None:
            calls.append("A")
            e.machine.bind_handlers(later)

        def BEnd(self, e: Event) -> None:
            calls.append("B end")
            e.machine.detach_handlers(later)

    mach = Machine({"A": State(), "B": State()}, handlers=H())
    for _ in range(2):  # the plan of add B cached with its handlers (none) before Later is bound
        mach.add("B")
        mach.remove("B")
    calls.clear()
    mach.add("A")
    mach.add("B")
    mach.remove("B")  # detaches Later from BEnd
    mach.add("B")
    assert calls == ["A", "later B", "B end"]


def test_a_tracer_bound_and_detached_mid_run_sees_the_transitions_between() -> None:
    seen: list[tuple[str, ...]] = []

    class T(Tracer):
        def transition_end(self, tx: Transition) -> None:
            seen.append(tx.target)

    t = T()

    class H:
        def AState(self, e: Event) -> None:
            e.machine.bind_tracer(t)

        def AEnd(self, e: Event) -> None:
            e.machine.detach_tracer(t)

    mach = Machine({"A": State(), "B": State()}, handlers=H())
    for _ in range(2):  # plans cached, with their auto decision, before the tracer is bound
        mach.add("B")
        mach.remove("B")
    mach.add("A")  # the tracer bound from A's final handler: this transition's end is seen too
    mach.add("B")
    mach.remove("A")  # detached from AEnd
    mach.remove("B")
    assert seen == [("A",), ("B", "A")]  # remove A not seen: detached in its negotiation
    assert mach._plain


def test_the_recent_plan_is_kept_for_the_active_states_it_is_looked_up_from() -> None:
    """A plan made from a tuple equal to, but not the same as, the active states the machine comes back to (here
    the first add A's) is re-tagged with those, so the identity check finds it from the second round on."""
    from machine.mutation import MutationType

    mach = Machine({"A": State(remove=("B",)), "B": State(remove=("A",))})
    mach.add("A")
    for _ in range(3):
        before = mach._active
        mach.add("B")
        mach.add("A")
    assert mach._c.recent[MutationType.ADD][("B",)].before is before is mach._active
