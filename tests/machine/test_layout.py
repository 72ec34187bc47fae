"""The core's layout (issue 16): no module of ``machine`` over 600 lines; ``machine`` imports only the standard
library and itself (never ``transport`` or ``arpc``, which are built on it)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import machine

PKG = Path(machine.__file__).parent
MAX_LINES = 600


def test_no_module_of_machine_passes_600_lines() -> None:
    long = {p.name: n for p in PKG.glob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_machine_imports_only_the_stdlib_and_itself() -> None:
    bad = []
    for p in PKG.glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "machine" and top not in sys.stdlib_module_names:
                    bad.append(f"{p.name}: {name}")
    assert bad == []
