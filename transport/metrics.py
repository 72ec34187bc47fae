"""Prometheus metrics for machines (extra ``metrics``: ``pip install asyncmachine[metrics]``).

``MetricsTracer`` counts what its hooks see in plain ints (a dict update per transition, no lock of
prometheus_client's on the machine's thread) and builds the metric families only when scraped. States, ticks and
queue lengths are read from the machines at scrape time, so they cost nothing between scrapes.

Label cardinality is bounded: the first ``max_machines`` machines get their own ``machine`` label; every later one
is counted under ``machine="_other"``. ``aggregate=True`` counts every machine under ``machine="_all"`` (for a fleet
of machines that share a schema). Per-state gauges exist only for machines with their own label.
"""

from __future__ import annotations

import threading
from bisect import bisect_left as _bisect
from collections.abc import Iterable, Iterator
from time import perf_counter as _now
from typing import TYPE_CHECKING, Any

from machine import Machine, Tracer

if TYPE_CHECKING:
    from machine.mutation import Mutation
    from machine.transition import Transition

from .errors import TransportError

#: Upper bounds (seconds) of the handler-duration histogram's buckets.
BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
OTHER = "_other"
ALL = "_all"
#: Exception types counted apart per label; later new types count as ``_other``.
MAX_ERROR_TYPES = 50


def _require() -> Any:
    try:
        import prometheus_client
    except ImportError as e:
        raise ImportError("metrics need the 'metrics' extra: pip install 'asyncmachine[metrics]'") from e
    return prometheus_client


class _Stats:
    """What one machine has counted. Written only by the thread that runs the machine's queue (one at a time), so
    the hooks take no lock; the scraper copies it (a torn read at worst shows a count one transition old)."""

    __slots__ = ("label", "executed", "canceled", "queued", "errors", "handlers", "t0")

    def __init__(self, label: str) -> None:
        self.label = label
        self.executed = 0
        self.canceled = 0
        self.queued = 0
        self.errors: dict[str, int] = {}
        # handler name -> [count per bucket..., count above the last bucket, sum of seconds]
        self.handlers: dict[str, list[float]] = {}
        self.t0 = 0.0       # the running handler's start: a machine runs one handler at a time

    def fold(self, other: _Stats) -> None:
        """Add ``other``'s counts to these (an aggregate keeps the counts of machines that are gone)."""
        self.executed += other.executed
        self.canceled += other.canceled
        self.queued += other.queued
        for k, n in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + n
        for name, h in other.handlers.items():
            mine = self.handlers.setdefault(name, [0.0] * len(h))
            for i, v in enumerate(h):
                mine[i] += v


class MetricsTracer(Tracer):
    """A tracer that keeps Prometheus metrics of every machine it watches; also a prometheus_client collector.

    ``watch(mach)`` binds it to a machine. ``registry`` (a ``CollectorRegistry``) defaults to a new one of its own,
    available as ``.registry``; ``serve(addr)`` serves it over HTTP. Safe to share between machines and threads.
    """

    sees_rejected_autos = False  # counting auto transitions that could never happen would only cost

    def __init__(self, *, registry: Any = None, max_machines: int = 1000, aggregate: bool = False,
                 prefix: str = "am") -> None:
        prom = _require()
        if max_machines < 0:
            raise ValueError("max_machines must be >= 0")
        self._lock = threading.Lock()   # guards the tables below, not the counts (see _Stats)
        self._max = max_machines
        self._aggregate = aggregate
        self._prefix = prefix
        self._own = 0                                # machines with a label of their own
        self._stats: dict[Machine, _Stats] = {}      # every watched machine (keyed by identity)
        self._gone: dict[str, _Stats] = {}           # aggregate labels: counts of disposed machines
        self.registry = registry if registry is not None else prom.CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- machines ------------------------------------------------------------------------------------------

    def watch(self, mach: Machine) -> None:
        """Bind to ``mach`` and start counting it (idempotent)."""
        with self._lock:
            if mach in self._stats:
                return
            if self._aggregate:
                label = ALL
            elif self._own < self._max:
                label = mach.id
                self._own += 1
            else:
                label = OTHER
            self._stats[mach] = _Stats(label)
        mach.bind_tracer(self)

    def unwatch(self, mach: Machine) -> None:
        """Stop counting ``mach`` and unbind; its own label's series go away (aggregates keep their counts)."""
        mach.detach_tracer(self)
        self._forget(mach)

    def _forget(self, mach: Machine) -> None:
        with self._lock:
            st = self._stats.pop(mach, None)
            if st is None:
                return
            if st.label in (ALL, OTHER):
                self._gone.setdefault(st.label, _Stats(st.label)).fold(st)
            else:
                self._own -= 1

    # -- tracer hooks (the machine's thread) ------------------------------------------------------------------

    def machine_init(self, mach: Machine) -> None:
        self.watch(mach)

    def mutation_queued(self, mach: Machine, mutation: Mutation) -> None:
        st = self._stats.get(mach)
        if st is not None:
            st.queued += 1

    def transition_end(self, tx: Transition) -> None:
        st = self._stats.get(tx.machine)
        if st is None:
            return
        if not tx.is_accepted:
            st.canceled += 1
            return
        st.executed += 1
        m = tx.mutation
        if "Exception" in m.called and m.args:
            e = m.args.get("err")
            err = type(e).__name__ if isinstance(e, BaseException) else "unknown"
            if err not in st.errors and len(st.errors) >= MAX_ERROR_TYPES:
                err = OTHER
            st.errors[err] = st.errors.get(err, 0) + 1

    def handler_start(self, tx: Transition, binding: str, handler: str) -> None:
        st = self._stats.get(tx.machine)
        if st is not None:
            st.t0 = _now()

    def handler_end(self, tx: Transition, binding: str, handler: str) -> None:
        st = self._stats.get(tx.machine)
        if st is None or not st.t0:
            return
        took = _now() - st.t0
        st.t0 = 0.0
        h = st.handlers.get(handler)
        if h is None:
            h = st.handlers[handler] = [0.0] * (len(BUCKETS) + 2)
        h[_bisect(BUCKETS, took)] += 1
        h[-1] += took

    def machine_dispose(self, mach_id: str) -> None:
        with self._lock:
            gone = [m for m in self._stats if m.id == mach_id and m.disposed]
        for m in gone:
            self._forget(m)

    # -- the collector (the scraping thread) -------------------------------------------------------------------

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        p = self._prefix
        trans = CounterMetricFamily(f"{p}_transitions", "Transitions by result", labels=["machine", "result"])
        queued = CounterMetricFamily(f"{p}_mutations_queued", "Mutations queued", labels=["machine"])
        errors = CounterMetricFamily(f"{p}_exceptions", "Exceptions added, by type", labels=["machine", "type"])
        hist = HistogramMetricFamily(f"{p}_handler_seconds", "Handler durations", labels=["machine", "handler"])
        qlen = GaugeMetricFamily(f"{p}_queue_length", "Mutations waiting in the queue", labels=["machine"])
        active = GaugeMetricFamily(f"{p}_state_active", "1 when the state is active", labels=["machine", "state"])
        ticks = GaugeMetricFamily(f"{p}_state_tick", "The state's tick (odd = active)", labels=["machine", "state"])
        machs = GaugeMetricFamily(f"{p}_machines", "Machines watched", labels=[])
        with self._lock:
            watched = list(self._stats.items())
            totals = {label: _Stats(label) for label in self._gone}
            for label, st in self._gone.items():
                totals[label].fold(st)
        own = []
        for mach, st in watched:
            totals.setdefault(st.label, _Stats(st.label)).fold(st)
            if st.label not in (ALL, OTHER):
                own.append(mach)
        for label, st in sorted(totals.items()):
            trans.add_metric([label, "executed"], st.executed)
            trans.add_metric([label, "canceled"], st.canceled)
            queued.add_metric([label], st.queued)
            for typ, n in sorted(st.errors.items()):
                errors.add_metric([label, typ], n)
            for name, h in sorted(st.handlers.items()):
                cum, buckets = 0.0, []
                for i, bound in enumerate(BUCKETS):
                    cum += h[i]
                    buckets.append((repr(bound), cum))
                buckets.append(("+Inf", cum + h[len(BUCKETS)]))
                hist.add_metric([label, name], buckets, h[-1])
        for mach in own:
            if mach.disposed:
                continue
            qlen.add_metric([mach.id], mach.queue_len)
            for state, tick in mach.clock().items():
                active.add_metric([mach.id, state], tick & 1)
                ticks.add_metric([mach.id, state], tick)
        machs.add_metric([], len(watched))
        yield from (trans, queued, errors, hist, qlen, active, ticks, machs)

    # -- serving ------------------------------------------------------------------------------------------------

    def serve(self, addr: str = "127.0.0.1:9464") -> MetricsServer:
        """Serve ``/metrics`` over HTTP on ``host:port`` (loopback unless told otherwise); see ``serve_metrics``."""
        return serve_metrics(self.registry, addr)


class MetricsServer:
    """A running HTTP endpoint for a registry; ``address`` is ``host:port``, ``stop()`` closes it."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self.tracer: MetricsTracer | None = None  # the machines' tracer, when serve_endpoint_metrics made it
        self._server = server
        self._thread = thread
        host, port = server.server_address[:2]
        self.address = f"{host}:{port}"

    def stop(self) -> None:
        """Close the listening socket and wait for the serving thread (at most 2 s); unbind the tracer."""
        if self.tracer is not None:
            for m in list(self.tracer._stats):
                try:
                    self.tracer.unwatch(m)
                except ValueError:
                    pass
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)


def parse_host_port(addr: str) -> tuple[str, int]:
    """``host:port`` (port 0 = any free port) -> (host, port); a clear ``ValueError`` otherwise."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid metrics address {addr!r}: expected host:port, e.g. 127.0.0.1:9464")
    return host.strip("[]"), int(port)


def serve_metrics(registry: Any, addr: str = "127.0.0.1:9464") -> MetricsServer:
    """Serve ``registry`` at ``http://addr/metrics`` on a daemon thread.

    Raises ``ValueError`` for a malformed address, ``TransportError`` (code ``bind``) when it cannot bind.
    """
    prom = _require()
    host, port = parse_host_port(addr)
    try:
        server, thread = prom.start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise TransportError(f"cannot serve metrics on {addr}: {e.strerror or e}", "bind") from e
    return MetricsServer(server, thread)


class EndpointCollector:
    """A prometheus_client collector of an endpoint's figures, read at scrape time (the I/O thread keeps plain
    ints): sessions, requests by kind, bad frames, errors, messages and bytes, and what the sessions hold (reply
    caches, seq-record gaps, pending when_args, backlog bytes). It also makes ``tracer`` watch every machine the
    endpoint serves (a machine added later is watched from the next scrape on)."""

    def __init__(self, ep: Any, tracer: MetricsTracer | None = None, prefix: str = "am") -> None:
        self.ep = ep
        self.tracer = tracer
        self.prefix = prefix

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        ep, loop, p = self.ep, self.ep._loop, self.prefix
        if self.tracer is not None:
            for m in ep.machines:
                if not m.disposed:
                    self.tracer.watch(m)
        addr = [ep.address]
        sessions = list(loop.sessions.values())

        def gauge(name: str, doc: str, value: float) -> Any:
            g = GaugeMetricFamily(f"{p}_endpoint_{name}", doc, labels=["address"])
            g.add_metric(addr, value)
            return g

        def counter(name: str, doc: str, value: float) -> Any:
            c = CounterMetricFamily(f"{p}_endpoint_{name}", doc, labels=["address"])
            c.add_metric(addr, value)
            return c

        reqs = CounterMetricFamily(f"{p}_endpoint_requests", "Requests by kind", labels=["address", "kind"])
        for kind, n in sorted(dict(loop.kinds).items()):
            reqs.add_metric([ep.address, kind], n)
        byts = CounterMetricFamily(f"{p}_endpoint_bytes", "Frame bytes by direction",
                                   labels=["address", "direction"])
        byts.add_metric([ep.address, "in"], loop.bytes_in)
        byts.add_metric([ep.address, "out"], loop.bytes_out)
        yield reqs
        yield byts
        yield gauge("sessions", "Client sessions", len(sessions))
        yield gauge("machines", "Machines served", len(ep.machines))
        yield counter("errors", "Requests answered with an error", loop.errors)
        yield counter("bad_frames", "Frames that could not be decoded", loop.bad_frames)
        yield counter("pushes", "Messages sent (replies and pushes)", loop.sent)
        yield gauge("reply_cache_entries", "Mutation results kept for retries, all sessions",
                    sum(len(s.replies) for s in sessions))
        yield gauge("seq_record_gaps", "Gap ranges in the sessions' seq records",
                    sum(len(s.seqs.gaps) for s in sessions))
        yield gauge("when_args_waiters", "Pending server-side when_args waiters",
                    sum(len(s.args_waiters) for s in sessions))
        yield gauge("backlog_bytes", "Push bytes libzmq still holds for the sessions",
                    sum(s.backlog.bytes for s in sessions))


def serve_endpoint_metrics(ep: Any, addr: str, **tracer_kw: Any) -> MetricsServer:
    """Serve the metrics of ``ep`` and of every machine it serves at ``http://addr/metrics`` (what
    ``expose(..., metrics=addr)`` does); the server stops with the endpoint."""
    tracer = MetricsTracer(**tracer_kw)
    tracer.registry.register(EndpointCollector(ep, tracer))
    server = tracer.serve(addr)
    server.tracer = tracer
    return server
