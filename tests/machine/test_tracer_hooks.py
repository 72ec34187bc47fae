"""The hooks table a machine keeps of its tracers: only overridden hooks, found once per tracer class."""

from __future__ import annotations

import gc
import weakref

from machine import Machine, Tracer
from machine.tracer import _OVERRIDES, hooks_of


class Ends(Tracer):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def transition_end(self, tx):  # type: ignore[no-untyped-def]
        self.seen.append("end:" + ",".join(tx.mutation.called))


class EndsAndStarts(Ends):
    def transition_start(self, tx):  # type: ignore[no-untyped-def]
        self.seen.append("start")


def test_a_subclass_s_inherited_override_counts_and_no_other_hook_does() -> None:
    a, b = Ends(), EndsAndStarts()
    hooks = hooks_of([a, b, a])
    assert sorted(k for k in hooks if not k.startswith(" ")) == ["transition_end", "transition_start"]
    assert [h.__self__ for h in hooks["transition_end"]] == [a, b, a]  # type: ignore[attr-defined]
    assert [h.__self__ for h in hooks["transition_start"]] == [b]  # type: ignore[attr-defined]


def test_a_tracer_class_bound_to_many_machines_calls_each_machine_s_own_instance() -> None:
    ms = [Machine({"Foo": {}}, id=f"m{i}") for i in range(3)]
    ts = [EndsAndStarts() for _ in ms]
    for m, t in zip(ms, ts, strict=True):
        m.bind_tracer(t)
    ms[1].add("Foo")
    assert ts[0].seen == [] and ts[2].seen == []
    assert ts[1].seen == ["start", "end:Foo"]


def test_a_tracer_class_made_at_run_time_is_not_kept_alive_by_the_table() -> None:
    def make() -> weakref.ref[type]:
        cls = type("Made", (Tracer,), {"transition_end": lambda self, tx: None})
        m = Machine({"Foo": {}})
        m.bind_tracer(cls())
        assert cls in _OVERRIDES
        m.dispose()
        return weakref.ref(cls)

    ref = make()
    gc.collect()
    assert ref() is None
