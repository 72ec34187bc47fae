"""The plain path makes its ``Transition``, ``Mutation`` and ``Event`` in place (a function call cost 2% of a
mutation each), not with ``new_transition``, ``new_mutation`` and ``new_event``. These tests keep the copies in
step: each object the plain path makes has every slot set, to what the module function would have set."""

from __future__ import annotations

from typing import Any

from machine import Event, Machine, State, Tracer, Transition
from machine.mutation import new_mutation
from machine.transition import new_event, new_transition


def _slots(obj: Any) -> dict[str, Any]:
    return {s: getattr(obj, s) for s in type(obj).__slots__}  # AttributeError for a slot left unset


def test_the_plain_path_sets_every_slot_as_the_module_functions_do() -> None:
    seen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    class Init(Tracer):
        def transition_init(self, tx: Transition) -> None:  # right after the plain path made tx
            want = new_transition(tx._mach, tx._seq, tx.mutation, tx.plan, tx._before, tx.time_before)
            seen.append(("tx", _slots(tx), _slots(want)))
            m = tx.mutation
            if not m.is_auto:  # made by mutate; an auto one by the plain path's loop
                wm = new_mutation(m.type, m.called, m.args, m.queue_tick)
            else:
                wm = new_mutation(m.type, m.called, None, 0, True)
            seen.append(("mutation", _slots(m), _slots(wm)))

    class H:
        def AEnter(self, e: Event) -> None:
            seen.append(("neg event", _slots(e), _slots(new_event(e.name, e.transition, e._state))))

        def BState(self, e: Event) -> None:
            seen.append(("final event", _slots(e), _slots(new_event(e.name, e.transition, e._state))))

    mach = Machine({"A": State(), "B": State(auto=True, require=("A",))}, handlers=H(), tracers=[Init()])
    assert mach._plain  # the path under test
    assert mach.add("A", args={"k": 1}) == 0
    assert mach.is_active("A", "B")
    kinds = [k for k, _, _ in seen]
    assert kinds == ["tx", "mutation", "neg event", "tx", "mutation", "final event"]
    for kind, got, want in seen:
        assert got == want, kind
