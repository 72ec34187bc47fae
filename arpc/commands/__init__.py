"""The command table: one set of click commands serving the one-shot CLI and the REPL.

Each command is a click command whose callback gets the :class:`Cx` (session + printer) and returns a
:class:`arpc.format.Result` (lines for plain / REPL output, one JSON document, an exit code). Streaming commands
(``watch``, ``script``) emit partial results themselves. :func:`dispatch` runs one command line and turns every
failure into a one-line error and an exit code; it never raises (except :class:`arpc.errors.ExitRepl`).

Modules: ``registry`` (the table, ``help`` and the cheatsheet generated from it), ``common`` (shared parameters),
``dispatch``; the commands by group in ``mutations``, ``waiting``, ``inspecting``, ``history`` and ``shell``.
Importing this package fills the table (then ordered by group, as ``help`` lists it).
"""

from . import history, inspecting, mutations, shell, waiting  # noqa: F401 - each module adds its commands to the table
from .dispatch import dispatch, run_line, split_line
from .registry import (
                       COMMANDS,
                       GROUPS,
                       ArpcCommand,
                       Cx,
                       HelpRequested,
                       cheatsheet_lines,
                       command,
                       help_lines,
                       order_by_group,
)

order_by_group()

__all__ = ["COMMANDS", "GROUPS", "ArpcCommand", "Cx", "HelpRequested", "cheatsheet_lines", "command", "dispatch",
           "help_lines", "run_line", "split_line"]
