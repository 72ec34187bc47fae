"""OpenTelemetry traces for machines (extra ``otel``: ``pip install asyncmachine[otel]``; bring your own SDK).

``OtelTracer`` makes a span per transition (``am.transition``) with a child span per handler (``am.handler``).
The transition span's parent is the OpenTelemetry context current on the thread that runs the transition; a
handler's span is current while the handler runs, so a machine that a handler mutates inline nests below it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from machine import Machine, Tracer
from machine.transition import tick_changes

if TYPE_CHECKING:
    from machine.transition import Transition


def _require() -> Any:
    try:
        from opentelemetry import trace
    except ImportError as e:
        raise ImportError("traces need the 'otel' extra: pip install 'asyncmachine[otel]'") from e
    return trace


class OtelTracer(Tracer):
    """A tracer that records transitions and handlers as OpenTelemetry spans.

    ``tracer_provider`` defaults to the global one. Bind it with ``mach.bind_tracer(t)`` (or ``watch(mach)``).
    A span per transition carries ``am.machine``, ``am.called``, ``am.mutation``, ``am.added``, ``am.removed``
    and ``am.result``. A handler that raised cancels its transition; the error is recorded (an exception event,
    status ERROR) on the span of the transition that adds ``Exception``.
    Safe to share between machines and threads.
    """

    def __init__(self, *, tracer_provider: Any = None, name: str = "asyncmachine") -> None:
        trace = _require()
        from opentelemetry import context

        self._trace = trace
        self._context = context
        self._tracer = trace.get_tracer(name, tracer_provider=tracer_provider)
        self._lock = threading.Lock()
        # id(transition) -> span; (thread, id(transition)) -> (handler span, context token)
        self._tx: dict[int, Any] = {}
        self._handlers: dict[tuple[int, int], tuple[Any, Any]] = {}

    def watch(self, mach: Machine) -> None:
        """Bind to ``mach``; with a no-op tracer provider nothing is bound (its spans would be dropped anyway)."""
        if isinstance(self._tracer, self._trace.NoOpTracer):
            return
        mach.bind_tracer(self)

    def transition_init(self, tx: Transition) -> None:
        m = tx.mutation
        span = self._tracer.start_span("am.transition", attributes={
            "am.machine": tx.machine.id, "am.mutation": str(m.type), "am.called": list(m.called),
            "am.auto": bool(m.is_auto)})
        with self._lock:
            self._tx[id(tx)] = span

    def handler_start(self, tx: Transition, binding: str, handler: str) -> None:
        with self._lock:
            parent = self._tx.get(id(tx))
        if parent is None:
            return
        ctx = self._trace.set_span_in_context(parent)
        span = self._tracer.start_span("am.handler", context=ctx,
                                       attributes={"am.machine": tx.machine.id, "am.handler": handler})
        token = self._context.attach(self._trace.set_span_in_context(span))
        with self._lock:
            self._handlers[threading.get_ident(), id(tx)] = (span, token)

    def handler_end(self, tx: Transition, binding: str, handler: str) -> None:
        with self._lock:
            pair = self._handlers.pop((threading.get_ident(), id(tx)), None)
        if pair is None:
            return
        span, token = pair
        self._context.detach(token)
        span.end()

    def transition_end(self, tx: Transition) -> None:
        with self._lock:
            span = self._tx.pop(id(tx), None)
        if span is None:
            return
        m = tx.mutation
        span.set_attribute("am.result", "executed" if tx.is_accepted else "canceled")
        if tx.is_accepted and tx.is_completed:
            added, removed, _ = tick_changes(tx.machine.state_names, tx.time_before, tx.time_after)
            span.set_attribute("am.added", added)
            span.set_attribute("am.removed", removed)
        err = m.args.get("err") if m.args and "Exception" in m.called else None
        if isinstance(err, BaseException):
            span.record_exception(err)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(err)[:200]))
        span.end()


def propagate(enable: bool = True) -> None:
    """Carry the trace context in every remote mutation of this process (client side) and continue it in the
    transitions a daemon of this process runs for its clients (server side): the remote transition's span is then
    the child of the caller's span. Call it in both processes; ``propagate(False)`` stops it."""
    from . import tracecontext

    if not enable:
        tracecontext.inject = tracecontext.attach = None
        return
    _require()
    from opentelemetry import context
    from opentelemetry import propagate as otel_propagate

    def inject() -> str | None:
        carrier: dict[str, str] = {}
        otel_propagate.inject(carrier)
        return carrier.get("traceparent")

    def attach(tc: str) -> Callable[[], None]:
        token = context.attach(otel_propagate.extract({"traceparent": tc}))
        return lambda: context.detach(token)

    tracecontext.inject, tracecontext.attach = inject, attach
