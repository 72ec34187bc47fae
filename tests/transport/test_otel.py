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


def test_a_remote_mutation_continues_the_callers_trace_in_a_daemon_process(spans: Any, tmp_path: Any) -> None:
    import json
    import subprocess
    import sys
    import textwrap

    from tr_util import readline

    from transport import connect
    from transport.otel import propagate

    script = tmp_path / "d.py"
    script.write_text(textwrap.dedent("""
        import json, sys
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from machine import Machine, State
        from transport import expose
        from transport.otel import OtelTracer, propagate
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        propagate()
        m = Machine({"A": State()}, id="w")
        OtelTracer(tracer_provider=provider).watch(m)
        ep = expose(m)
        print(ep.address, flush=True)
        sys.stdin.readline()
        print(json.dumps([[s.name, s.context.trace_id, s.parent.span_id if s.parent else 0]
                          for s in exporter.get_finished_spans()]), flush=True)
        ep.stop()
    """))
    provider, _ = spans
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    propagate()
    try:
        assert proc.stdout is not None and proc.stdin is not None
        addr = readline(proc.stdout, 10).strip()
        with connect(addr) as c:
            r = c.machine("w")
            with provider.get_tracer("test").start_as_current_span("caller") as caller:
                r.add("A")
        proc.stdin.write("\n")
        proc.stdin.flush()
        remote = json.loads(readline(proc.stdout, 10))
    finally:
        propagate(False)
        proc.wait(10)
    ctx = caller.get_span_context()
    (tx,) = [s for s in remote if s[0] == "am.transition"]
    assert tx[1] == ctx.trace_id and tx[2] == ctx.span_id


def test_without_propagation_no_trace_context_is_sent() -> None:
    from transport import tracecontext

    assert tracecontext.inject is None and tracecontext.attach is None


def test_an_exporter_that_raises_never_breaks_a_transition() -> None:
    from opentelemetry.sdk.trace.export import SpanExporter

    class Broken(SpanExporter):
        def export(self, spans: Any) -> Any:
            raise RuntimeError("collector down")

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Broken()))
    m = Machine({"A": State(), "B": State()}, id="m")
    OtelTracer(tracer_provider=provider).watch(m)
    assert m.add("A") == 0 and m.add("B") == 0 and m.is_active("A", "B")
    assert not m.is_err()
