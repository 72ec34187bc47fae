"""The README's python blocks run as shown (in order, sharing one namespace like a reader's session)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_blocks_run() -> None:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    ns: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), ns)


def test_readme_first_screen_shows_the_two_commands() -> None:
    first = "\n".join(README.read_text().splitlines()[:40])
    assert "scripts/demo" in first and "scripts/test" in first
