"""A Grafana dashboard (JSON model) for the metrics of ``transport.metrics``; stdlib only.

``dashboard(["worker-1", "worker-2"])`` returns a dict to ``json.dump`` and import in Grafana (Dashboards ->
Import). Its ``machine`` variable lists every machine that reports metrics; the ids given are selected at load.
"""

from __future__ import annotations

from typing import Any

#: (title, panel type, unit, [(PromQL with $M for the machine matcher, legend)]), in display order.
PANELS: tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...] = (
    ("Transitions / s", "timeseries", "ops", (
        ("sum by (machine, result) (rate({p}_transitions_total{{$M}}[1m]))", "{{machine}} {{result}}"),)),
    ("Canceled share", "timeseries", "percentunit", (
        ("sum by (machine) (rate({p}_transitions_total{{$M,result=\"canceled\"}}[5m])) / "
         "sum by (machine) (rate({p}_transitions_total{{$M}}[5m]))", "{{machine}}"),)),
    ("Queue length", "timeseries", "short", (("{p}_queue_length{{$M}}", "{{machine}}"),)),
    ("Mutations queued / s", "timeseries", "ops", (
        ("sum by (machine) (rate({p}_mutations_queued_total{{$M}}[1m]))", "{{machine}}"),)),
    ("Exceptions / s by type", "timeseries", "ops", (
        ("sum by (machine, type) (rate({p}_exceptions_total{{$M}}[5m]))", "{{machine}} {{type}}"),)),
    ("Handler duration p99", "timeseries", "s", (
        ("histogram_quantile(0.99, sum by (le, handler) (rate({p}_handler_seconds_bucket{{$M}}[5m])))",
         "{{handler}}"),)),
    ("Active states", "state-timeline", "short", (("{p}_state_active{{$M}}", "{{machine}} {{state}}"),)),
    ("Endpoint sessions", "timeseries", "short", (("sum({p}_endpoint_sessions)", "sessions"),)),
    ("Endpoint requests / s", "timeseries", "reqps", (
        ("sum by (kind) (rate({p}_endpoint_requests_total[1m]))", "{{kind}}"),
        ("sum(rate({p}_endpoint_errors_total[1m]))", "errors"))),
    ("Bad frames and pushes / s", "timeseries", "ops", (
        ("sum(rate({p}_endpoint_bad_frames_total[1m]))", "bad frames"),
        ("sum(rate({p}_endpoint_pushes_total[1m]))", "messages sent"))),
    ("Endpoint bytes / s", "timeseries", "Bps", (
        ("sum by (direction) (rate({p}_endpoint_bytes_total[1m]))", "{{direction}}"),)),
)


def dashboard(machines: list[str] | None = None, *, title: str = "asyncmachine", prefix: str = "am",
              datasource: str = "Prometheus") -> dict[str, Any]:
    """The dashboard as a dict: one row of panels per entry of ``PANELS``, two panels a row, 12 units wide."""
    ds = {"type": "prometheus", "uid": datasource}
    panels = []
    for i, (ptitle, ptype, unit, queries) in enumerate(PANELS):
        targets = [{"refId": chr(ord("A") + j), "datasource": ds, "legendFormat": legend,
                    "expr": expr.format(p=prefix).replace("$M", 'machine=~"$machine"')}
                   for j, (expr, legend) in enumerate(queries)]
        panels.append({"id": i + 1, "type": ptype, "title": ptitle, "datasource": ds, "targets": targets,
                       "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                       "gridPos": {"x": 12 * (i % 2), "y": 8 * (i // 2), "w": 12, "h": 8}})
    chosen = list(machines or [])
    var = {"name": "machine", "label": "machine", "type": "query", "datasource": ds,
           "query": f"label_values({prefix}_transitions_total, machine)", "refresh": 2, "multi": True,
           "includeAll": True,
           "current": ({"text": chosen, "value": chosen} if chosen else {"text": ["All"], "value": ["$__all"]})}
    return {"title": title, "uid": None, "tags": ["asyncmachine"], "timezone": "browser", "schemaVersion": 39,
            "refresh": "10s", "time": {"from": "now-1h", "to": "now"}, "templating": {"list": [var]},
            "panels": panels}
