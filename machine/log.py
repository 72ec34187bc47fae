"""Log levels, the per-machine logger, and log text of user values that never raises."""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

_configured = False


class LogLevel(enum.IntEnum):
    """How much a machine logs: the spec's levels 0-5."""

    NOTHING = 0
    EXTERNAL = 1
    CHANGES = 2
    OPS = 3
    DECISIONS = 4
    EVERYTHING = 5

    def __str__(self) -> str:
        return self.name.lower()


_NOTHING = LogLevel.NOTHING  # a module global: read through the enum class it costs about 100 ns a machine

# os.environ.get goes through the Mapping ABC and encodes the key on every call: a third of a machine's creation.
# The environ's own dict (CPython keeps it in step with setenv/putenv through os.environ) is one lookup.
_ENV_DATA: dict[Any, Any] | None = getattr(os.environ, "_data", None)
_AM_LOG_KEY: Any = os.environ.encodekey("AM_LOG") if hasattr(os.environ, "encodekey") else None


def _am_log() -> str:
    if _ENV_DATA is not None and _AM_LOG_KEY is not None:
        raw = _ENV_DATA.get(_AM_LOG_KEY)
        return str(os.environ.decodevalue(raw)) if raw else ""
    return os.environ.get("AM_LOG", "")


def parse_level(value: int | str | LogLevel | None) -> LogLevel:
    """A level from an int, a name (any case) or None (then env ``AM_LOG``, else NOTHING)."""
    if value is None:
        value = _am_log() or 0
        if value == 0:
            return _NOTHING
    if isinstance(value, str):
        v = value.strip()
        if v.isdigit():
            return LogLevel(max(0, min(5, int(v))))
        try:
            return LogLevel[v.upper()]
        except KeyError:
            raise ValueError(f"unknown log level: {value!r}") from None
    return LogLevel(max(0, min(5, int(value))))


def machine_logger(mach_id: str, level: LogLevel) -> logging.Logger:
    """The stdlib logger ``machine.<id>``; when logging is wanted but nothing is configured, log to stderr."""
    global _configured
    import logging  # imported on first use: logging is slow to import and most machines never log

    logger = logging.getLogger(f"machine.{mach_id}")
    if level > LogLevel.NOTHING and not _configured:
        root = logging.getLogger()
        parent = logging.getLogger("machine")
        if not root.handlers and not parent.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            parent.addHandler(handler)
            parent.setLevel(logging.INFO)
        _configured = True
    return logger


def release_logger(logger: logging.Logger) -> None:
    """Drop a disposed machine's logger from ``logging``'s registry unless the user configured it.

    The registry keeps every logger for ever: a daemon that makes a machine per job (fresh ids) would grow it
    without end. A logger with handlers, filters, a level or ``propagate`` off is the user's and stays.
    """
    import logging

    reg = logging.Logger.manager.loggerDict
    if (reg.get(logger.name) is logger and not logger.handlers and not logger.filters
            and logger.level == logging.NOTSET and logger.propagate):
        reg.pop(logger.name, None)  # one atomic dict operation; a getLogger later makes a fresh one


class LazyLogger:
    """A stand-in for ``logging.getLogger(name)`` that imports logging on first use."""

    __slots__ = ("_name", "_logger")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: logging.Logger | None = None

    def __getattr__(self, attr: str) -> Any:
        lg = self._logger
        if lg is None:
            import logging

            lg = self._logger = logging.getLogger(self._name)
        return getattr(lg, attr)


def fmt_args(args: Mapping[str, Any] | None, max_len: int = 20) -> str:
    """`` (k=v k2=v2)`` for a log line: sorted keys, values clipped to ``max_len``, ``err_trace`` left out."""
    if not args:
        return ""
    try:
        parts = []
        for k in sorted(args):
            if k in ("err_trace",):
                continue
            try:
                v = str(args[k])
            except Exception:  # a user's value must not break the transition being logged
                v = f"<{type(args[k]).__name__}>"
            if len(v) > max_len:
                v = v[: max_len - 3] + "..." if max_len >= 5 else v[:max_len]
            parts.append(f"{k}={v}")
    except Exception:  # keys that do not sort
        return " (args not printable)"
    return f" ({' '.join(parts)})" if parts else ""


def safe_repr(obj: object) -> str:
    """``repr(obj)``, or its type's name when that raises: for log lines about a user's objects."""
    try:
        return repr(obj)
    except Exception:
        return f"<{type(obj).__name__}>"
