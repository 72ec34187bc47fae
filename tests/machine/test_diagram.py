"""machine.diagram: Mermaid output of a schema's relations."""

from __future__ import annotations

from machine import Machine, State, diagram


def test_diagram_lists_states_and_every_relation() -> None:
    schema = {
        "A": State(auto=True, require=("C",)),
        "B": State(multi=True, add=("C",)),
        "C": State(after=("D",), remove=("D",)),
        "D": State(require=("Nope",)),
    }
    out = diagram(schema)
    lines = out.splitlines()
    assert lines[0] == "flowchart LR"
    assert '    s0["A (auto)"]' in lines and '    s1["B (multi)"]' in lines
    assert '    s4["Exception (multi)"]' in lines
    assert "    s0 -->|require| s2" in lines
    assert "    s1 ==>|add| s2" in lines
    assert "    s2 --x|remove| s3" in lines
    assert "    s2 -.->|after| s3" in lines
    assert '    s3 -->|require| missing_Nope["Nope ?"]' in lines


def test_diagram_of_a_machine_highlights_active_states() -> None:
    m = Machine({"A": State(), "B": State(remove=("A",))})
    m.add("A")
    out = diagram(m)
    assert "class s0 active" in out
    m.add("B")
    assert "class s1 active" in diagram(m)
