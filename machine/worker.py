"""The optional handler thread: handlers run on it, so the runner can give up on one that hangs."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class Job:
    """One handler call handed to the worker."""

    __slots__ = ("fn", "arg", "done", "ret", "exc", "abandoned", "on_late")

    def __init__(self, fn: Callable[[Any], Any], arg: Any) -> None:
        self.fn = fn
        self.arg = arg
        self.done = threading.Event()
        self.ret: Any = None
        self.exc: Exception | None = None
        self.abandoned = False
        self.on_late: Callable[[], Any] | None = None


class HandlerWorker:
    """A daemon thread running handler calls one at a time."""

    def __init__(self, name: str) -> None:
        self._q: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def ident(self) -> int | None:
        """The worker thread's ident."""
        return self._thread.ident

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> Job:
        """Queue ``fn(arg)``; wait on ``job.done``."""
        job = Job(fn, arg)
        self._q.put(job)
        return job

    def stop(self) -> None:
        """End the thread once its current job returns."""
        self._q.put(None)

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            try:
                job.ret = job.fn(job.arg)
            except Exception as exc:  # handed to the runner, which turns it into the Exception state
                job.exc = exc
            job.done.set()
            if job.abandoned:
                if job.on_late is not None:
                    job.on_late()
                return  # an abandoned worker ends: a new one took its place
