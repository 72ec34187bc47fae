"""The cost of telemetry on the core: transitions/s of the 6-state file flow with no tracer, a kept history, the
Prometheus metrics tracer, and the OpenTelemetry tracer (SDK provider, spans recorded and dropped; and the global
provider with no SDK set, what an unconfigured process pays). Called from scripts/bench.py (section `telemetry`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def variants(workflow: Callable[..., Callable[[int], int]]) -> dict[str, Callable[[int], int]]:
    """Name -> a timed run of the workflow flow on a machine with that tracer bound (``workflow`` builds it)."""
    from opentelemetry.sdk.trace import TracerProvider

    from machine import Machine, State
    from transport.metrics import MetricsTracer
    from transport.otel import OtelTracer

    def build(bind: Callable[[Any], None] | None) -> Callable[[int], int]:
        def make(schema: Any, handlers: Any) -> Any:
            m = Machine(schema, handlers=handlers)
            if bind is not None:
                bind(m)
            return m

        return workflow(make, State)

    metrics = MetricsTracer()
    sdk = OtelTracer(tracer_provider=TracerProvider())
    proxy = OtelTracer()  # the global provider while no SDK is set: a proxy whose spans record nothing
    return {
        "no tracer": build(None),
        "history kept (1000)": build(lambda m: m.keep_history(1000)),
        "metrics (prometheus)": build(metrics.watch),
        "otel, SDK provider": build(sdk.watch),
        "otel, global provider, no SDK": build(proxy.watch),
    }
