"""Hooks that carry a trace context in mutation requests (body key ``tc``, a W3C ``traceparent``).

Both stay None (one global lookup per mutation) until ``transport.otel.propagate()`` sets them, so the transport
needs no tracing library. ``inject()`` returns the caller's current trace context or None; ``attach(tc)`` makes it
current on the server while the mutation runs and returns a function that restores the previous one."""

from __future__ import annotations

from collections.abc import Callable

MAX_TC = 256  # characters of a tc value; a longer one is ignored

inject: Callable[[], str | None] | None = None
attach: Callable[[str], Callable[[], None]] | None = None
