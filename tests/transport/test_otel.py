"""The OpenTelemetry tracer: spans per transition and per handler, checked with the SDK's in-memory exporter."""

from __future__ import annotations

from typing import Any

import pytest

from machine import Machine, State

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

from transport.otel import OtelTracer  # noqa: E402


@pytest.fixture
def spans() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_a_span_per_transition_with_handler_children(spans: Any) -> None:
    provider, exporter = spans
    other = Machine({"X": State()}, id="inner")

    class H:
        def BEnter(self, e: Any) -> bool:
            return False

        def AState(self, e: Any) -> None:
            other.add("X")      # runs inline: its transition nests below this handler's span

        def CState(self, e: Any) -> None:
            raise RuntimeError("disk full")

    m = Machine({"A": State(), "B": State(), "C": State()}, id="outer", handlers=H())
    t = OtelTracer(tracer_provider=provider)
    t.watch(m)
    t.watch(other)
    m.add("A")
    m.add("B")
    m.add("C")
    got = exporter.get_finished_spans()
    txs = [s for s in got if s.name == "am.transition" and s.attributes["am.machine"] == "outer"]
    assert [(list(s.attributes["am.called"]), s.attributes["am.result"]) for s in txs] == [
        (["A"], "executed"), (["B"], "canceled"), (["C"], "canceled"), (["Exception"], "executed")]
    assert list(txs[0].attributes["am.added"]) == ["A"]
    a_handler = next(s for s in got if s.name == "am.handler" and s.attributes["am.handler"] == "AState")
    assert a_handler.parent.span_id == txs[0].context.span_id
    inner = next(s for s in got if s.name == "am.transition" and s.attributes["am.machine"] == "inner")
    assert inner.parent.span_id == a_handler.context.span_id
    assert inner.context.trace_id == txs[0].context.trace_id
    b_enter = next(s for s in got if s.name == "am.handler" and s.attributes["am.handler"] == "BEnter")
    assert b_enter.parent.span_id == txs[1].context.span_id
    err_span = txs[3]
    assert err_span.status.status_code == StatusCode.ERROR and "disk full" in err_span.status.description
    assert any(ev.name == "exception" for ev in err_span.events)


def test_a_transition_continues_the_callers_current_span(spans: Any) -> None:
    provider, exporter = spans
    m = Machine({"A": State()}, id="m")
    OtelTracer(tracer_provider=provider).watch(m)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("request") as parent:
        m.add("A")
    tx = next(s for s in exporter.get_finished_spans() if s.name == "am.transition")
    assert tx.parent.span_id == parent.get_span_context().span_id
