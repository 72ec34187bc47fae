"""Every ```python block of docs/manual.md runs as-is.

Each block is one test, named after the nearest heading above it. A block runs with a fresh namespace (as if
it were a script of its own), with its line numbers matching the manual, so a traceback points at the manual.
Blocks that are not meant to run use ```text, ```pycon or ```sh instead.
"""

from __future__ import annotations

import re
import runpy
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MANUAL = ROOT / "docs" / "manual.md"
EXAMPLE = ROOT / "examples" / "file_processing.py"
BLOCK_TIMEOUT = 30  # seconds per block; every block is meant to take well under one

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Block:
    heading: str  # the nearest heading above the block
    lang: str  # the fence's info string ("python", "text", ...)
    line: int  # 1-based line of the first line of code
    code: str


def parse(text: str) -> list[Block]:
    """Fenced code blocks with their language and nearest heading; headings inside blocks are ignored."""
    blocks: list[Block] = []
    heading = "(top)"
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence is None:
            h = _HEADING.match(line)
            if h is not None:
                heading = h.group(2)
            i += 1
            continue
        indent, marker, lang = fence.groups()
        start = i + 1
        i = start
        while i < len(lines) and not lines[i].strip().startswith(marker):
            i += 1
        if i >= len(lines):
            raise ValueError(f"{MANUAL.name}:{start}: unclosed code fence")
        body = [ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[start:i]]
        blocks.append(Block(heading, lang.lower(), start + 1, "\n".join(body) + "\n"))
        i += 1
    return blocks


def _slug(heading: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")
    return s or "block"


def python_blocks() -> list[tuple[str, Block]]:
    """(test id, block) for every python block; ids are heading slugs, numbered when a heading has several."""
    out: list[tuple[str, Block]] = []
    seen: dict[str, int] = {}
    for b in parse(MANUAL.read_text(encoding="utf-8")):
        if b.lang not in ("python", "py", "python3"):
            continue
        slug = _slug(b.heading)
        seen[slug] = seen.get(slug, 0) + 1
        out.append((slug if seen[slug] == 1 else f"{slug}-{seen[slug]}", b))
    return out


BLOCKS = python_blocks()


def run_block(block: Block) -> dict[str, object]:
    """Exec a block as a script of its own; returns its namespace."""
    # pad so that line numbers in tracebacks are the manual's
    code = compile("\n" * (block.line - 1) + block.code, str(MANUAL), "exec")
    ns: dict[str, object] = {"__name__": "__doc_block__", "__file__": str(MANUAL)}
    exec(code, ns)
    return ns


def test_the_manual_has_python_blocks() -> None:
    assert len(BLOCKS) >= 20, "docs/manual.md lost its runnable examples"


def test_fences_are_balanced_and_labelled() -> None:
    # every block says what it is, so nothing runnable is skipped by accident
    unlabelled = [b.line for b in parse(MANUAL.read_text(encoding="utf-8")) if not b.lang]
    assert not unlabelled, f"code blocks without a language at lines {unlabelled}"


@pytest.mark.timeout(BLOCK_TIMEOUT)
@pytest.mark.parametrize("block", [b for _, b in BLOCKS], ids=[i for i, _ in BLOCKS])
def test_block_runs(block: Block) -> None:
    run_block(block)


def test_worked_example_matches_the_example_file() -> None:
    """The manual's copy of examples/file_processing.py keeps its schema and handlers."""
    mine = [b for _, b in BLOCKS if "class Worker" in b.code and "SCHEMA = {" in b.code]
    assert len(mine) == 1, "the worked example block (class Worker + SCHEMA) is missing or duplicated"
    ns = run_block(mine[0])
    example = runpy.run_path(str(EXAMPLE), run_name="__example__")
    assert ns["SCHEMA"] == example["SCHEMA"]
    assert ns["S"].names() == example["S"].names()  # type: ignore[attr-defined]

    def handlers(cls: object) -> list[str]:
        return sorted(n for n in vars(cls) if n.endswith(("Enter", "Exit", "State", "End")))

    assert handlers(ns["Worker"]) == handlers(example["Worker"])
