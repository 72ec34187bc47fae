"""``arpc dbg``: a live full-screen inspector of remote machines (and ``--replay`` of a recording).

Split by role: :mod:`.model` (what is known, bounded), :mod:`.rec` (a log record and the ring that keeps them),
:mod:`.sources` (live connections, the feed), :mod:`.record`
(``--record`` / ``--replay`` files), :mod:`.layout` (the panes), :mod:`.keys`, :mod:`.app` (the Application) and
:mod:`.command` (the command line). prompt_toolkit is imported only when the screen opens.
"""

from __future__ import annotations

from collections.abc import Sequence


def run_dbg(args: Sequence[str]) -> int:
    """``arpc dbg ARGS``: the exit code."""
    from .command import run

    return run(args)


__all__ = ["run_dbg"]
