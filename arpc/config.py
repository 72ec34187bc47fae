"""REPL settings from the environment: history file, editing mode (emacs / vi), colour."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from .record import record as dataclass

HISTORY_FILE = "~/.arpc_history"


@dataclass
class ReplConfig:
    history_path: str
    editing_mode: str = "emacs"  # or "vi"
    color: bool = True


def inputrc_mode(path: str) -> str | None:
    """``vi`` / ``emacs`` when the readline init file sets ``editing-mode``, else None."""
    try:
        with open(os.path.expanduser(path), encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    mode = None
    for m in re.finditer(r"^\s*set\s+editing-mode\s+(vi|emacs)\b", text, re.MULTILINE):
        mode = m.group(1)
    return mode


def load_config(env: Mapping[str, str] | None = None, *, color: bool = True) -> ReplConfig:
    """``ARPC_HISTORY`` (history file), ``ARPC_EDITING_MODE`` (vi / emacs; else ``~/.inputrc`` or ``INPUTRC``),
    ``NO_COLOR`` (any value: no colours)."""
    env = os.environ if env is None else env
    history = os.path.expanduser(env.get("ARPC_HISTORY") or HISTORY_FILE)
    mode = (env.get("ARPC_EDITING_MODE") or "").strip().lower()
    if mode not in ("vi", "emacs"):
        mode = inputrc_mode(env.get("INPUTRC") or "~/.inputrc") or "emacs"
    if env.get("NO_COLOR"):
        color = False
    return ReplConfig(history_path=history, editing_mode=mode, color=color)
