"""Mermaid diagrams of a schema's relations, so a machine can be looked at instead of read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .schema import State, compiled_for

if TYPE_CHECKING:
    from .machine import Machine

# relation -> Mermaid edge: require solid, add thick, remove crossed, after dotted
_EDGES = (("require", "-->"), ("add", "==>"), ("remove", "--x"), ("after", "-.->"))


def diagram(source: Machine | Mapping[str, State | Mapping[str, Any]]) -> str:
    """A Mermaid ``flowchart`` of the states and their relations (parsed, as the machine uses them).

    Auto and multi states say so in their label; given a machine, its active states are highlighted.
    """
    from .machine import Machine

    if isinstance(source, Machine):
        schema, active = source.schema, set(source.active_states())
    else:
        schema, active = compiled_for(source).schema, set()
    ids = {name: f"s{i}" for i, name in enumerate(schema)}
    lines = ["flowchart LR"]
    for name, st in schema.items():
        flags = [f for f, on in (("auto", st.auto), ("multi", st.multi)) if on]
        label = f"{name} ({', '.join(flags)})" if flags else name
        lines.append(f'    {ids[name]}["{label}"]')
    for name, st in schema.items():
        for rel, arrow in _EDGES:
            for target in getattr(st, rel):
                if target in ids:
                    lines.append(f"    {ids[name]} {arrow}|{rel}| {ids[target]}")
                else:  # an unknown required state stays in the schema (it can never activate)
                    lines.append(f'    {ids[name]} {arrow}|{rel}| missing_{target}["{target} ?"]')
    if active:
        lines.append("    classDef active fill:#9f9,stroke:#393")
        lines.append("    class " + ",".join(ids[n] for n in schema if n in active) + " active")
    return "\n".join(lines) + "\n"
