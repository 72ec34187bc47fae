"""A machine's history ring stays out of the garbage collector's way: a daemon keeping a million records must not
make every full collection scan them (issue 13: the screen of ``arpc dbg`` lagged behind such pauses)."""

from __future__ import annotations

import gc

from machine import Machine, State


def test_records_kept_are_not_tracked_by_the_garbage_collector() -> None:
    m = Machine({"Foo": State(remove=("Bar",)), "Bar": State(remove=("Foo",)), "Baz": State(require=("Foo",))},
                id="h")
    m.keep_history(5000)
    m.add("Foo")
    gc.collect()
    before = len(gc.get_objects())
    for i in range(5000):
        m.add("Bar" if i % 2 else "Foo")
    m.add("Baz")  # canceled (Foo not active after Bar): its record keeps the transition until read
    gc.collect()
    gc.collect()  # a record is untracked in the pass after its clocks (tuples in a tuple)
    grown = len(gc.get_objects()) - before
    assert grown < 500, grown  # two tracked objects a record before (10,010)
    recs = m.history.records(limit=3)
    assert [r["result"] for r in recs] == ["executed", "executed", "canceled"]
    assert recs[-1]["reason"] and recs[-2]["added"] in (["Foo"], ["Bar"])
