"""MachineApi: a local machine and a mirror both satisfy it (mypy --strict proves the signatures, see
machine/api.py and transport/remote.py; this checks the members at run time and the same answers from both)."""

from __future__ import annotations

import pytest

from machine import Machine, MachineApi, State
from transport import connect, expose

SCHEMA = {"A": State(), "B": State(require=("A",)), "C": State(remove=("A",))}


def _same(m: MachineApi) -> tuple[object, ...]:
    return (m.state_names, m.active_states(), m.clock(), m.is_active("A", "B"), m.any_active("C", "B"),
            m.not_active("C"), m.has("A", "Nope"), m.switch("C", "B", "A"), m.tick("A"), m.index("C"), str(m),
            m.string_all(), m.is_err(), m.parent_id, m.tags)


def test_a_machine_and_its_mirror_are_both_machine_apis_and_agree() -> None:
    m = Machine(SCHEMA, id="api", tags=("t",))
    m.add("A", "B")
    assert isinstance(m, MachineApi)
    with expose(m) as ep, connect(ep.address) as c:
        r = c.machine("api")
        assert isinstance(r, MachineApi)
        assert _same(r) == _same(m)
        r.add("C")
        assert _same(r) == _same(m) and m.is_active("C")
        assert r.when("C").wait(1) and m.when("C").wait(1)


def test_something_that_is_not_a_machine_is_not_a_machine_api() -> None:
    assert not isinstance(object(), MachineApi)
    with pytest.raises(TypeError):
        issubclass(int, MachineApi)    # a Protocol with properties: isinstance only, as documented
