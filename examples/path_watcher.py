"""A path watcher (after the seeds' PATH Watcher): a machine watches a directory and reports each change.

No extra dependency: a thread polls the directory with ``os.scandir``. The thread is tied to the ``Watching``
state through its state context, so it stops by itself when Watching ends (or the machine is disposed).

States:
- ``Init`` adds ``Watching`` (the seed's ``Init: {Add: Watching}``); ``Watching`` starts the poller;
- ``ChangeDetected`` (multi) is added once per change, with ``{"change", "name", "kind"}`` as args;
- ``Idle`` means "a poll found nothing new"; a change removes it, the next quiet poll adds it back.

The example creates a temporary directory, starts the watcher, then creates, modifies and deletes files,
waiting after each step (bounded) with ``when_args`` for the machine to see exactly that change. It prints
what the machine saw and stops cleanly.

Run: .venv/bin/python examples/path_watcher.py
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from machine import Event, Machine, State, StateNames, Waiter


class S(StateNames):
    Init: str
    Watching: str
    ChangeDetected: str
    Idle: str


SCHEMA = {
    S.Init: State(add=(S.Watching,)),
    S.Watching: State(require=(S.Init,), after=(S.Init,)),
    S.ChangeDetected: State(multi=True, require=(S.Watching,), remove=(S.Idle,)),
    S.Idle: State(require=(S.Watching,), remove=(S.ChangeDetected,)),
}

POLL = 0.02  # seconds between two scans
TIMEOUT = 5.0  # every wait of this example is bounded

Snapshot = dict[str, tuple[str, int, int]]  # name -> (kind, size, mtime_ns)


def scan(path: str) -> Snapshot:
    """One level of ``path``: what is there, with enough to notice a modification."""
    out: Snapshot = {}
    with os.scandir(path) as it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted between listing and stat
                continue
            out[entry.name] = ("dir" if entry.is_dir(follow_symlinks=False) else "file", st.st_size, st.st_mtime_ns)
    return out


def diff(old: Snapshot, new: Snapshot) -> list[tuple[str, str, str]]:
    """(change, name, kind) for every created, deleted or modified entry, sorted by name."""
    changes = []
    for name in sorted(old.keys() | new.keys()):
        if name not in old:
            changes.append(("created", name, new[name][0]))
        elif name not in new:
            changes.append(("deleted", name, old[name][0]))
        elif old[name] != new[name] and new[name][0] == "file":
            changes.append(("modified", name, "file"))
    return changes


class Watcher:
    """Handlers. ``seen`` is what the machine saw, in order."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: list[tuple[str, str, str]] = []
        self.thread: threading.Thread | None = None

    def WatchingState(self, e: Event) -> None:
        mach = e.machine
        ctx = mach.state_ctx(S.Watching)  # done when Watching ends, or the machine is disposed

        def poll() -> None:
            last = scan(self.path)
            mach.add(S.Idle)  # baseline taken
            while not ctx.wait(POLL):  # wait() returns True once the context is done: then stop
                try:
                    now = scan(self.path)
                except OSError as exc:  # e.g. the directory itself vanished
                    mach.add_err(exc)
                    return
                changes = diff(last, now)
                last = now
                for change, name, kind in changes:
                    mach.add(S.ChangeDetected, args={"change": change, "name": name, "kind": kind})
                if not changes:
                    mach.add(S.Idle)  # a no-op while Idle is active

        self.thread = threading.Thread(target=poll, name="path-watcher", daemon=True)
        self.thread.start()

    def ChangeDetectedState(self, e: Event) -> None:
        a = e.args
        self.seen.append((a["change"], a["name"], a["kind"]))
        print(f"  machine saw: {a['change']:8} {a['kind']:4} {a['name']}")


def expect(w: Waiter, what: str) -> None:
    if not w.wait(TIMEOUT):
        raise TimeoutError(f"the watcher did not see: {what}")


def main() -> None:
    root = tempfile.mkdtemp(prefix="am-watch-")
    watcher = Watcher(root)
    mach = Machine(SCHEMA, id="watcher", handlers=watcher)
    try:
        print(f"watching {root}")
        mach.add(S.Init)  # adds Watching, which starts the poller
        expect(mach.when(S.Idle), "the first scan")
        print(f"  {mach}")

        def step(label: str, action: Callable[[], object], *changes: tuple[str, str]) -> None:
            # subscribe first, then act: the change can't slip between the action and the wait
            waiters = [mach.when_args(S.ChangeDetected, {"change": c, "name": n}) for c, n in changes]
            print(f"{label}")
            action()
            for (c, n), w in zip(changes, waiters, strict=True):
                expect(w, f"{c} {n}")

        p = Path(root)

        def append(name: str, text: str) -> None:
            with (p / name).open("a") as f:
                f.write(text)

        step("create a.txt", lambda: (p / "a.txt").write_text("hello\n"), ("created", "a.txt"))
        def create_two() -> None:
            (p / "b.txt").write_text("b")
            (p / "logs").mkdir()

        step("create b.txt and logs/", create_two, ("created", "b.txt"), ("created", "logs"))
        step("append to a.txt", lambda: append("a.txt", "more lines\n" * 10), ("modified", "a.txt"))
        step("delete b.txt", lambda: (p / "b.txt").unlink(), ("deleted", "b.txt"))
        step("rename a.txt -> c.txt", lambda: (p / "a.txt").rename(p / "c.txt"),
             ("deleted", "a.txt"), ("created", "c.txt"))
        step("remove logs/", lambda: (p / "logs").rmdir(), ("deleted", "logs"))

        expect(mach.when(S.Idle), "a quiet scan")
        # clocks: a state's tick grows by one on each activation and deactivation (odd = active)
        print(f"settled: {mach.string_all()}")
        print(f"the machine saw {len(watcher.seen)} changes: "
              + ", ".join(f"{c} {n}" for c, n, _ in watcher.seen))
    finally:
        mach.dispose()  # ends Watching's context: the poller returns from ctx.wait() and exits
        if watcher.thread is not None:
            watcher.thread.join(TIMEOUT)
            print(f"disposed; poller thread stopped: {not watcher.thread.is_alive()}")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
