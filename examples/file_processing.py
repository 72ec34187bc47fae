"""The seeds' file-processing flow, doing real work: count the lines of every file given (default: this repo's
docs and sources), one file at a time, with the machine's transitions logged as they happen.

Run: .venv/bin/python examples/file_processing.py [FILE...]
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from machine import Event, LogLevel, Machine, State, StateNames


class S(StateNames):
    Start: str
    FileSelected: str
    ProcessingFile: str
    FileProcessed: str
    InProgress: str
    Done: str


SCHEMA = {
    S.Start: State(),
    S.FileSelected: State(multi=True, require=(S.Start,), remove=(S.Done,)),
    S.ProcessingFile: State(require=(S.FileSelected,), remove=(S.FileProcessed,)),
    S.FileProcessed: State(remove=(S.ProcessingFile,)),
    S.InProgress: State(auto=True, require=(S.ProcessingFile,)),
    S.Done: State(remove=(S.FileSelected, S.ProcessingFile, S.FileProcessed)),
}


class Worker:
    """Handlers: selecting a file starts processing; processing runs in a thread guarded by a state context."""

    def __init__(self, files: list[Path]) -> None:
        self.files = list(files)
        self.results: dict[str, int] = {}

    def FileSelectedState(self, e: Event) -> None:
        e.machine.add(S.ProcessingFile, args=e.args)

    def ProcessingFileEnter(self, e: Event) -> bool:
        # negotiation: refuse to process a file that does not exist
        return Path(e.args["path"]).is_file()

    def ProcessingFileState(self, e: Event) -> None:
        mach, path = e.machine, e.args["path"]
        ctx = mach.state_ctx(S.ProcessingFile)

        def work() -> None:  # blocking I/O stays out of the handler
            try:
                n = sum(1 for _ in open(path, "rb"))
            except OSError as exc:
                mach.add_err(exc)
                return
            if not ctx.done:  # the state may have ended meanwhile
                self.results[path] = n
                mach.add(S.FileProcessed, args={"path": path, "lines": n})

        threading.Thread(target=work, daemon=True).start()

    def FileProcessedState(self, e: Event) -> None:
        if self.files:
            e.machine.add(S.FileSelected, args={"path": str(self.files.pop(0))})
        else:
            e.machine.add(S.Done)


def run(files: list[Path], log_level: Any = LogLevel.CHANGES) -> dict[str, int]:
    """Process ``files``; returns {path: line count}."""
    worker = Worker(files)
    mach = Machine(SCHEMA, id="files", handlers=worker, log_level=log_level)
    mach.add(S.Start)
    if worker.files:
        mach.add(S.FileSelected, args={"path": str(worker.files.pop(0))})
    else:
        mach.add(S.Done)
    if not mach.when(S.Done).wait(timeout=30):
        raise TimeoutError(f"not done: {mach.string_all()}")
    mach.dispose()
    return worker.results


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    files = [Path(a) for a in sys.argv[1:]] or sorted([root / "README.md", *root.glob("machine/*.py")])
    results = run(files)
    for path, n in results.items():
        print(f"{n:6d}  {path}")
    print(f"{sum(results.values()):6d}  total in {len(results)} files")


if __name__ == "__main__":
    main()
