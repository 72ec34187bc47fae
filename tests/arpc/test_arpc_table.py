"""The command table is the one declaration: help and the cheatsheet list every command; the package layout
(subpackages installed, no module of arpc over 600 lines)."""

from __future__ import annotations

from pathlib import Path

from arpc.commands import COMMANDS, cheatsheet_lines, help_lines

ARPC = Path(__file__).resolve().parents[2] / "arpc"


def test_cheatsheet_and_help_list_every_command():
    cheat = [ln.split()[0] for ln in cheatsheet_lines() if ln and not ln[0].isupper() and ln[0] != "-"]
    listed = [ln.split()[0] for ln in help_lines() if ln.startswith("  ")]
    assert sorted(cheat) == sorted(COMMANDS) == sorted(listed)
    assert "diagram" in cheat and "exit" in cheat


def test_no_module_over_600_lines():
    big = {str(p.relative_to(ARPC)): n for p in ARPC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert big == {}
