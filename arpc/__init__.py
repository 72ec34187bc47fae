"""arpc: the shell (REPL) and one-shot CLI for remote asyncmachine machines.

``arpc ADDR...`` opens the REPL, ``arpc ADDR -- CMD ARGS`` runs one command and exits. Both modes share one
command table (:mod:`arpc.commands`). Keep this module free of imports: the one-shot CLI must start fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
