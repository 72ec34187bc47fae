"""Views of a machine for people: Mermaid diagrams of a schema's relations, and ``inspect``'s text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .schema import State, compiled_for

if TYPE_CHECKING:
    from .api import MachineApi
    from .machine import Machine

# relation -> Mermaid edge: require solid, add thick, remove crossed, after dotted
_EDGES = (("require", "-->"), ("add", "==>"), ("remove", "--x"), ("after", "-.->"))


def diagram(source: MachineApi | Mapping[str, State | Mapping[str, Any]]) -> str:
    """A Mermaid ``flowchart`` of the states and their relations (parsed, as the machine uses them).

    Auto and multi states say so in their label; given a machine (local or a mirror), its active states are
    highlighted.
    """
    if isinstance(source, Mapping):
        schema, active = compiled_for(source).schema, set()
    else:
        schema, active = source.schema, set(source.active_states())
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


def inspect_text(mach: Machine, states: tuple[str, ...]) -> str:
    """See ``Machine.inspect``."""
    out = []
    t, index, schema = mach._time, mach._c.index, mach._c.schema
    for name in states or mach._c.names:
        st = schema[name]
        tick = t[index[name]]
        out.append(f"{tick & 1} {name}\n")
        out.append(f"    |{'Tick':<9}{tick}\n")
        if st.auto:
            out.append(f"    |{'Auto':<9}true\n")
        if st.multi:
            out.append(f"    |{'Multi':<9}true\n")
        for label, rel in (("Add", st.add), ("Require", st.require), ("Remove", st.remove), ("After", st.after)):
            if rel:
                out.append(f"    |{label:<9}{' '.join(rel)}\n")
    return "".join(out)


def string_all(mach: Machine) -> str:
    """See ``Machine.string_all``."""
    t, names = mach._time, mach._c.names
    on = " ".join(f"{n}:{t[i]}" for i, n in enumerate(names) if t[i] & 1)
    off = " ".join(f"{n}:{t[i]}" for i, n in enumerate(names) if not t[i] & 1)
    return f"({on}) [{off}]"
