"""The REPL with stdin not a terminal (``arpc ADDR < cmds``, ``echo list | arpc ADDR``): one command a line, plain
output as in one-shot mode (no ``=> ``), stop at the first failing line with its exit code (``--keep-going``: run
every line, exit with the first failure's code). No prompt_toolkit."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from .commands import Cx, run_line
from .errors import INTERRUPTED, OK, ExitRepl
from .format import Printer
from .session import Session


def run_piped(session: Session, printer: Printer, *, keep_going: bool = False, detail: bool = False,
              lines: Iterable[str] | None = None) -> int:
    """Run the lines of stdin (or ``lines``); the exit code of the first failure (0: none failed)."""
    plain = Printer(json_mode=printer.json_mode)
    cx = Cx(session, plain, repl=True)
    session.open()
    for failure in session.failures(detail):
        plain.warn(failure)
    first = OK
    for line in sys.stdin if lines is None else lines:
        if not line.strip():
            continue
        try:
            code = run_line(cx, line)
        except ExitRepl:
            break
        except KeyboardInterrupt:
            return INTERRUPTED
        if code != OK:
            first = first or code
            if not keep_going or code == INTERRUPTED:
                break
    return first
