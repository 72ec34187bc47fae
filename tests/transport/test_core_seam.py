"""Transport reaches the core only through public names and the mirror interface (machine/mirror.py): no
``obj._name`` where ``_name`` is a private member of a core class and not one of transport's own, and no
``from machine... import _name``. Without types, a name both define (``_id``, ``_lock``, ``_loop``, ``_tx``, ...)
can't be told apart: those are left to review."""

from __future__ import annotations

import ast
from pathlib import Path

import machine
from machine import ctx_waiter, history, mutation, transition

ROOT = Path(__file__).resolve().parents[2]


def _private_names(classes: list[type]) -> set[str]:
    names: set[str] = set()
    for cls in classes:
        for klass in cls.__mro__:
            if klass.__module__.split(".")[0] != "machine":
                continue
            names.update(n for n in getattr(klass, "__slots__", ()) if n.startswith("_") and not n.startswith("__"))
            names.update(n for n in vars(klass) if n.startswith("_") and not n.startswith("__"))
    return names


def _attrs(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, name, on self/cls) for each ``x._name`` in the tree."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            out.append((node.lineno, node.attr, own))
    return out


def test_transport_uses_no_private_name_of_the_core() -> None:
    core = _private_names([machine.Machine, ctx_waiter.Ctx, ctx_waiter.Waiter, transition.Transition,
                           transition.Event, mutation.Mutation, history.History])
    files = sorted((ROOT / "transport").rglob("*.py"))
    trees = {f: ast.parse(f.read_text(), str(f)) for f in files}
    # transport's own private members (set on self somewhere in transport) are its business
    own = {name for t in trees.values() for _, name, on_self in _attrs(t) if on_self}
    own |= {n.name for t in trees.values() for n in ast.walk(t)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("_")}
    found = []
    for f, tree in trees.items():
        rel = f.relative_to(ROOT)
        for line, name, on_self in _attrs(tree):
            if not on_self and name in core and name not in own:
                found.append(f"{rel}:{line}: .{name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "machine":
                found += [f"{rel}:{node.lineno}: imports {a.name}" for a in node.names if a.name.startswith("_")]
    assert found == []


def test_the_check_sees_the_reach_ins_it_forbids() -> None:
    core = _private_names([machine.Machine, ctx_waiter.Waiter, ctx_waiter.Ctx])
    for name in ("_time", "_on_cancel", "_add_callback", "_processing", "_called"):
        assert name in core
    tree = ast.parse("def f(m, w):\n    return m._time, w._on_cancel, self._x\n")
    assert [(n, s) for _, n, s in _attrs(tree)] == [("_time", False), ("_on_cancel", False), ("_x", True)]
