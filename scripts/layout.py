"""Checks the layout rules of DESIGN.md: no module over MAX_LINES, imports flow arpc -> transport -> machine.

Run as `scripts/layout` (exit 1 and one line per violation) or import `violations(root)` (tests/test_layout.py).
Rules:
- every module of machine/, transport/, arpc/ has at most MAX_LINES lines;
- machine imports only the standard library (and itself);
- transport never imports arpc; machine never imports transport or arpc;
- the optional extras (metrics, tracing) are imported only inside functions, never at module level.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_LINES = 600
PACKAGES = ("machine", "transport", "arpc")
# What each package may import from the project: a lower layer, never a higher one.
ALLOWED = {"machine": {"machine"}, "transport": {"machine", "transport"}, "arpc": {"machine", "transport", "arpc"}}
EXTRAS = {"prometheus_client", "opentelemetry"}


def _imports(tree: ast.Module, module: str, is_pkg: bool) -> Iterator[tuple[int, str, bool]]:
    """(line, top-level name, at module level) for every import in the tree, relative ones resolved."""
    top_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0], id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base = parts if is_pkg else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name.split(".")[0], id(node) in top_level


def violations(root: Path) -> list[str]:
    """Every broken rule under ``root`` (a checkout), one readable line each; empty when the layout holds."""
    found: list[str] = []
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root)
            text = path.read_text(encoding="utf-8")
            lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
            if lines > MAX_LINES:
                found.append(f"{rel}: {lines} lines (at most {MAX_LINES}: split it by concern)")
            parts = list(rel.with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            module = ".".join(parts[:-1] if is_pkg else parts)
            tree = ast.parse(text, str(rel))
            for line, name, at_top in _imports(tree, module, is_pkg):
                if name in PACKAGES and name not in ALLOWED[pkg]:
                    found.append(f"{rel}:{line}: imports {name} (a higher layer: arpc -> transport -> machine)")
                elif pkg == "machine" and name not in PACKAGES and name not in stdlib:
                    found.append(f"{rel}:{line}: imports {name} (machine uses the standard library only)")
                if name in EXTRAS and at_top:
                    found.append(f"{rel}:{line}: imports the optional extra {name} at module level (import when used)")
    return found


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    found = violations(root)
    for line in found:
        print(line)
    if found:
        print(f"layout: {len(found)} violation(s)", file=sys.stderr)
        return 1
    print("layout: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
