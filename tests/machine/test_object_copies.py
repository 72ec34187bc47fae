"""Mutation, Transition and Event are made by module functions on the hot paths (``__new__`` delegates to them);
copying one still works as for any slotted object, and the copy holds the same fields."""

from __future__ import annotations

import copy
from typing import Any

from machine import Event, Machine, Mutation, MutationType, State, Tracer, Transition


def test_a_mutation_copies_with_its_fields() -> None:
    m = Mutation(MutationType.REMOVE, ("A", "B"), {"x": 1}, queue_tick=7, is_check=True)
    m.result = 0
    c = copy.copy(m)
    assert c is not m
    fields = ("type", "called", "args", "queue_tick", "is_auto", "is_check", "fn", "done", "result")
    assert [getattr(c, f) for f in fields] == [getattr(m, f) for f in fields]
    d = copy.deepcopy(m)
    assert d.args == {"x": 1} and d.args is not m.args and d.queue_tick == 7 and d.result == 0


def test_a_transition_and_an_event_copy_with_their_fields() -> None:
    seen: list[Any] = []

    class Keep(Tracer):
        def transition_end(self, tx: Transition) -> None:
            seen.append(copy.copy(tx))

    class H:
        def AState(self, e: Event) -> None:
            seen.append((e, copy.copy(e)))

    mach = Machine({"A": State(), "B": State()}, handlers=H(), tracers=[Keep()])
    mach.add("A", args={"k": 2})
    (e, ec), tx = seen
    assert isinstance(ec, Event) and ec is not e
    assert (ec.name, ec.transition, ec.args) == ("AState", e.transition, {"k": 2})
    assert isinstance(tx, Transition) and tx is not e.transition
    assert tx.id == e.transition.id and tx.machine is mach and tx.is_completed and tx.is_accepted
    assert tx.target_states == ["A"] and tx.time_after == mach.time() and tx.args == {"k": 2}


def test_a_subclass_makes_its_own_instances_and_runs_its_init() -> None:
    """``__new__`` delegates to the module functions, which make the base class: a subclass's call returned a base
    instance (not of the subclass, its ``__init__`` never run)."""
    txs: list[Transition] = []

    class H:
        def AState(self, e: Event) -> None:
            txs.append(e.transition)

    mach = Machine({"A": State()}, handlers=H())
    mach.add("A", args={"k": 1})
    tx = txs[0]

    class MyMutation(Mutation):
        pass

    class MyTransition(Transition):
        pass

    class MyEvent(Event):
        def __init__(self, name: str, transition: Transition, state: str | None = None) -> None:
            super().__init__(name, transition, state)  # as a subclass written for an __init__ does
            self.extra = 5

    m = MyMutation(MutationType.ADD, ("A",), None, 3)
    assert type(m) is MyMutation and m.queue_tick == 3 and m.called == ("A",)
    t = MyTransition(mach, 9, tx.mutation, tx.plan, (), [0])
    assert type(t) is MyTransition and t.target_states == ["A"] and t.mutation is tx.mutation
    e = MyEvent("AState", tx, "A")
    assert type(e) is MyEvent and e.extra == 5 and e.name == "AState" and e.args == {"k": 1}
    assert type(copy.copy(e)) is MyEvent and copy.copy(e).extra == 5
    assert type(Event("AState", tx)) is Event  # the base class as before
