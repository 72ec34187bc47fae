"""The Prometheus metrics tracer: counts, bounded labels, and the /metrics endpoint scraped over real HTTP."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request
from typing import Any

import pytest

from machine import Machine, State
from transport import TransportError

prom = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from transport.metrics import MetricsTracer, serve_metrics  # noqa: E402


class Handlers:
    def BEnter(self, e: Any) -> bool:
        return False

    def CState(self, e: Any) -> None:
        raise RuntimeError("disk full")


def _mach(mid: str) -> Machine:
    return Machine({"A": State(), "B": State(), "C": State()}, id=mid, handlers=Handlers())


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def _scrape(addr: str) -> str:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
        body: bytes = r.read()
    return body.decode()


def test_counts_transitions_errors_states_and_handlers_scraped_over_http() -> None:
    t = MetricsTracer()
    m = _mach("m1")
    t.watch(m)
    m.add("A")
    m.add("B")      # canceled by BEnter
    m.add("C")      # CState raises: C is rolled back (canceled) and Exception is added
    assert m.is_active("Exception") and not m.is_active("C")
    server = t.serve("127.0.0.1:0")
    try:
        s = _samples(_scrape(server.address))
    finally:
        server.stop()
    key = (("machine", "m1"),)
    assert s["am_transitions_total", key + (("result", "canceled"),)] == 2      # B and C
    assert s["am_transitions_total", key + (("result", "executed"),)] == 2      # A and Exception
    assert s["am_exceptions_total", key + (("type", "RuntimeError"),)] == 1
    assert s["am_state_active", key + (("state", "A"),)] == 1
    assert s["am_state_active", key + (("state", "B"),)] == 0
    assert s["am_state_tick", key + (("state", "A"),)] == 1
    assert s["am_queue_length", key] == 0
    assert s["am_mutations_queued_total", key] == 4  # A, B, C and the Exception from the raising handler
    assert s["am_handler_seconds_count", (("handler", "BEnter"), ("machine", "m1"))] == 1
    assert s["am_handler_seconds_count", (("handler", "CState"), ("machine", "m1"))] == 1
    assert s["am_machines", ()] == 1


def test_labels_are_capped_and_later_machines_are_aggregated() -> None:
    t = MetricsTracer(max_machines=2)
    machs = [_mach(f"m{i}") for i in range(5)]
    for m in machs:
        t.watch(m)
        m.add("A")
    s = _samples(prom.generate_latest(t.registry).decode())
    labels = {dict(k[1]).get("machine") for k in s if k[0] == "am_transitions_total"}
    assert labels == {"m0", "m1", "_other"}
    assert s["am_transitions_total", (("machine", "_other"), ("result", "executed"))] == 3
    # per-state gauges only for machines with their own label
    assert {dict(k[1])["machine"] for k in s if k[0] == "am_state_active"} == {"m0", "m1"}


def test_aggregate_counts_every_machine_under_one_label() -> None:
    t = MetricsTracer(aggregate=True)
    for i in range(3):
        m = _mach(f"a{i}")
        t.watch(m)
        m.add("A")
    s = _samples(prom.generate_latest(t.registry).decode())
    assert s["am_transitions_total", (("machine", "_all"), ("result", "executed"))] == 3
    assert not [k for k in s if k[0] == "am_state_active"]


def test_a_disposed_machine_leaves_the_metrics() -> None:
    t = MetricsTracer()
    m = _mach("gone")
    t.watch(m)
    m.add("A")
    m.dispose()
    text = prom.generate_latest(t.registry).decode()
    assert 'machine="gone"' not in text
    assert _samples(text)["am_machines", ()] == 0


def test_a_taken_port_and_a_bad_address_are_clear_errors() -> None:
    t = MetricsTracer()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(TransportError) as ei:
            serve_metrics(t.registry, f"127.0.0.1:{port}")
        assert ei.value.code == "bind" and str(port) in str(ei.value)
    for bad in ("9464", "localhost:", "h:99999", "h:x"):
        with pytest.raises(ValueError, match="invalid metrics address"):
            serve_metrics(t.registry, bad)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_exposition() -> None:
    t = MetricsTracer()
    m = _mach("p1")
    t.watch(m)
    m.add("A")
    m.add("C")
    run = subprocess.run(["promtool", "check", "metrics"], input=prom.generate_latest(t.registry),
                         capture_output=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_grafana_dashboard_queries_only_metrics_that_exist() -> None:
    import json
    import re

    from transport.grafana import dashboard

    t = MetricsTracer()
    m = _mach("g1")
    t.watch(m)
    m.add("A")
    m.add("C")
    from transport import connect, expose
    from transport.metrics import EndpointCollector

    with expose(m, history=0) as ep, connect(ep.address) as c:
        c.machines()
        t.registry.register(EndpointCollector(ep))
        exposed = {name for name, _ in _samples(prom.generate_latest(t.registry).decode())}
    board = json.loads(json.dumps(dashboard(["g1"])))      # JSON-safe
    assert board["templating"]["list"][0]["current"]["value"] == ["g1"]
    exprs = [tg["expr"] for p in board["panels"] for tg in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"\bam_[a-z_]+", e)}
    assert names and names <= exposed, names - exposed
    assert all('machine=~"$machine"' in e for e in exprs if "am_endpoint_" not in e)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_expose_serves_endpoint_and_machine_metrics_from_a_daemon_process(tmp_path: Any) -> None:
    import sys
    import textwrap

    from tr_util import readline

    from transport import connect

    script = tmp_path / "d.py"
    script.write_text(textwrap.dedent("""
        import sys
        from machine import Machine, State
        from transport import expose
        m = Machine({"A": State(), "B": State()}, id="w1")
        ep = expose(m, metrics="127.0.0.1:0")
        print(ep.address, ep.metrics.address, flush=True)
        sys.stdin.readline()
        ep.stop()
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        addr, maddr = readline(proc.stdout, 10).split()
        with connect(addr) as c:
            r = c.machine("w1")
            _scrape(maddr)            # the first scrape starts watching the served machines
            r.add("A")
            r.add("B", args={"x": 1})
            s = _samples(_scrape(maddr))
        lab = (("address", addr),)
        assert s["am_endpoint_sessions", lab] >= 1
        assert s["am_endpoint_requests_total", (("address", addr), ("kind", "add"))] == 2
        assert s["am_endpoint_requests_total", (("address", addr), ("kind", "hello"))] >= 1
        assert s["am_endpoint_bytes_total", (("address", addr), ("direction", "in"))] > 0
        assert s["am_endpoint_reply_cache_entries", lab] == 2
        assert s["am_transitions_total", (("machine", "w1"), ("result", "executed"))] == 2
        assert s["am_state_active", (("machine", "w1"), ("state", "B"))] == 1
        if shutil.which("promtool"):
            run = subprocess.run(["promtool", "check", "metrics"], input=_scrape(maddr).encode(),
                                 capture_output=True, timeout=30)
            assert run.returncode == 0, run.stdout + run.stderr
    finally:
        if proc.stdin is not None:
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.wait(10)


def test_a_taken_metrics_port_fails_expose_and_frees_its_address() -> None:
    from transport import expose

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(TransportError) as ei:
            expose(_mach("x"), addr="tcp://127.0.0.1:0", metrics=f"127.0.0.1:{port}")
        assert ei.value.code == "bind"


def test_without_the_extras_the_tracers_say_which_to_install() -> None:
    import sys

    code = ("import sys; sys.modules['prometheus_client'] = None; sys.modules['opentelemetry'] = None\n"
            "from transport.metrics import MetricsTracer\nfrom transport.otel import OtelTracer\n"
            "for make in (MetricsTracer, OtelTracer):\n"
            "    try:\n        make()\n    except ImportError as e:\n        print(e)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "metrics need the 'metrics' extra: pip install 'asyncmachine[metrics]'",
        "traces need the 'otel' extra: pip install 'asyncmachine[otel]'"]
