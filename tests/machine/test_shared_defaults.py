"""A new machine starts with shared empty defaults (queue, clock, handler cache, bindings, state contexts, dispose
callbacks) and replaces each with its own on first write: one machine's use must never show in another's."""

from __future__ import annotations

from typing import Any

from machine import Machine, State
from machine.execution import NO_BOUND, NO_CTXS, zero_clock
from machine.handlers import NO_BINDINGS
from machine.mutation import NO_QUEUE
from machine.mutation_queue import NO_CALLBACKS

SCHEMA = {
    "A": State(),
    "B": State(require=("A",)),
    "C": State(auto=True, require=("B",)),
}


def _shared_still_empty(n: int) -> None:
    assert NO_QUEUE == ()
    assert NO_CTXS == {}
    assert NO_BINDINGS == []
    assert NO_CALLBACKS == []
    assert NO_BOUND == {}
    assert zero_clock(n) == [0] * n


def test_one_machines_use_leaves_a_sibling_and_the_shared_defaults_untouched() -> None:
    used, fresh = Machine(SCHEMA), Machine(SCHEMA)
    n = len(used.state_names)
    seen: list[str] = []

    class H:
        def AState(self, e: Any) -> None:
            e.machine.add("B")  # queued from a handler: the first write to the queue

        def CState(self, e: Any) -> None:
            seen.append("C")

    used.bind_handlers(H())
    ctx = used.state_ctx("A")
    ended: list[bool] = []
    used.on_dispose(lambda: ended.append(True))
    assert used.add("A") == 0
    assert used.active_states() == ["A", "B", "C"] and seen == ["C"]
    assert ctx.done  # A's tick changed

    assert fresh.time() == [0] * n and fresh.active_states() == [] and fresh.queue_len == 0
    assert fresh.state_ctx("A") is not ctx
    _shared_still_empty(n)

    used.dispose()
    assert ended == [True] and fresh.time() == [0] * n
    assert not fresh.disposed and fresh.add("A") == 0 and fresh.active_states() == ["A"]
    _shared_still_empty(n)


def test_a_machine_built_after_others_were_used_starts_clean() -> None:
    for _ in range(3):
        m = Machine(SCHEMA)
        m.add("A")
        m.add("B")
        m.on_dispose(lambda: None)
        m.dispose()
    m = Machine(SCHEMA)
    assert m.time() == [0] * len(m.state_names) and m.queue_len == 0 and m.active_states() == []
    assert m.add("B") == 1  # canceled: requires A
    _shared_still_empty(len(m.state_names))
