"""The router's own Prometheus metrics (``GET /metrics``), in a per-app registry.

Two kinds: what the request path observes (latency, TTFT and overhead histograms, requests
by status, retries, failures by kind) through label children resolved once per backend,
and what already lives in the router's state (in-flight, health state, engine gauges,
limiter decisions, config generation), read only when Prometheus scrapes. Label values
come from the config (models, backends) or small fixed sets (statuses, failure kinds,
states), so cardinality is bounded by the fleet, never by the traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmops.router.exchange import Exchange
from llmops.router.pool import BackendState, PoolSnapshot

if TYPE_CHECKING:
    from llmops.router.state import RouterState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("healthy", "unhealthy", "draining", "ejected", "probing")
_STATUSES = frozenset({200, 400, 401, 403, 404, 408, 413, 422, 429, 500, 502, 503, 504})
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


def status_label(status: int) -> str:
    """A bounded status label: common codes as themselves, anything else by class."""
    return str(status) if status in _STATUSES else f"{status // 100}xx"


def failure_label(kind: str) -> str:
    """A failure kind as a label; ``http_503`` becomes ``503``, like the request statuses."""
    code = kind.removeprefix("http_")
    return status_label(int(code)) if code != kind and code.isdigit() else kind


@dataclass(eq=False, slots=True)
class BackendInstruments:
    """One backend's label children, resolved once: observing is then a method call."""

    model: str
    backend: str
    duration: Histogram
    ttft: Histogram
    requests: Counter
    failures: Counter
    by_status: dict[int, Counter] = field(default_factory=dict)
    by_failure: dict[str, Counter] = field(default_factory=dict)

    def finished(self, status: int, duration_s: float) -> None:
        child = self.by_status.get(status)
        if child is None:
            child = self.by_status[status] = self.requests.labels(
                self.model, self.backend, status_label(status)
            )
        child.inc()
        self.duration.observe(duration_s)

    def failed(self, kind: str) -> None:
        child = self.by_failure.get(kind)
        if child is None:
            child = self.by_failure[kind] = self.failures.labels(
                self.model, self.backend, failure_label(kind)
            )
        child.inc()


class RouterMetrics:
    """The registry behind ``/metrics`` and the instruments the request path uses."""

    def __init__(self, router: Callable[[], RouterState]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        labels = ("model", "backend")
        self._duration = Histogram(
            "llmops_router_request_duration_seconds",
            "Time from a request's arrival to its last byte, per backend that served it.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._ttft = Histogram(
            "llmops_router_ttft_seconds",
            "Time from a streamed request's arrival to its first byte from the engine.",
            labels,
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "llmops_router_overhead_seconds",
            "Router time spent before a request is sent upstream (parse, limits, choice).",
            buckets=_OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self._requests = Counter(
            "llmops_router_requests",
            "Requests answered, by model, backend and HTTP status.",
            (*labels, "status"),
            registry=self.registry,
        )
        self._failures = Counter(
            "llmops_router_upstream_failures",
            "Failed attempts by kind (connect, *_timeout, disconnected, HTTP status).",
            (*labels, "kind"),
            registry=self.registry,
        )
        self._retries = Counter(
            "llmops_router_retries",
            "Attempts after the first one, by model.",
            ("model",),
            registry=self.registry,
        )
        self._router = router
        self._instruments: dict[str, BackendInstruments] = {}
        self._retries_by_model: dict[str, Counter] = {}
        self._indexed: PoolSnapshot | None = None
        self._by_id: dict[str, BackendState] = {}
        self.registry.register(_StateCollector(router))

    def backend(self, state: BackendState) -> BackendInstruments:
        instruments = self._instruments.get(state.id)
        if instruments is None:
            model, backend = state.backend.model, state.id
            instruments = self._instruments[state.id] = BackendInstruments(
                model,
                backend,
                self._duration.labels(model, backend),
                self._ttft.labels(model, backend),
                self._requests,
                self._failures,
            )
        return instruments

    def failed(self, state: BackendState, kind: str) -> None:
        self.backend(state).failed(kind)

    def retried(self, model: str, times: int = 1) -> None:
        child = self._retries_by_model.get(model)
        if child is None:
            child = self._retries_by_model[model] = self._retries.labels(model)
        child.inc(times)

    def state_by_id(self, snapshot: PoolSnapshot, backend_id: str) -> BackendState | None:
        """A backend's live state by id, from an index rebuilt once per snapshot."""
        if self._indexed is not snapshot:
            self._by_id = {s.id: s for s in snapshot.states}
            self._indexed = snapshot
        return self._by_id.get(backend_id)

    def forget_backends(self, live_ids: set[str]) -> None:
        """Drop the series of backends a reload removed (bounded by the live fleet)."""
        for backend_id in self._instruments.keys() - live_ids:
            gone = self._instruments.pop(backend_id)
            labels = (gone.model, gone.backend)
            for metric in (self._duration, self._ttft):
                metric.remove(*labels)
            for status in gone.by_status:
                self._requests.remove(*labels, status_label(status))
            for kind in gone.by_failure:
                self._failures.remove(*labels, failure_label(kind))

    def render(self) -> bytes:
        self.forget_backends({s.id for s in self._router().snapshot.states})
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Gauges and counters the router keeps anyway, read at scrape time (no hot-path cost)."""

    def __init__(self, router: Callable[[], RouterState]) -> None:
        self._router = router

    def collect(self) -> Iterable[Metric]:
        router = self._router()
        states = router.snapshot.states
        labels = ["model", "backend"]
        in_flight = GaugeMetricFamily(
            "llmops_router_in_flight", "Requests being served, per backend.", labels=labels
        )
        health = GaugeMetricFamily(
            "llmops_router_backend_state",
            "1 for the backend's current state (healthy, unhealthy, draining, ejected, probing).",
            labels=[*labels, "state"],
        )
        running = GaugeMetricFamily(
            "llmops_router_engine_running",
            "The engine's running requests, last scrape.",
            labels=labels,
        )
        waiting = GaugeMetricFamily(
            "llmops_router_engine_waiting",
            "The engine's queued requests, last scrape.",
            labels=labels,
        )
        kv = GaugeMetricFamily(
            "llmops_router_engine_kv_cache_usage",
            "The engine's KV-cache usage (0-1).",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "llmops_router_engine_metrics_age_seconds",
            "Seconds since the engine's metrics were last read.",
            labels=labels,
        )
        now = time.monotonic()
        for state in states:
            values = [state.backend.model, state.id]
            in_flight.add_metric(values, state.in_flight)
            current = state.state
            for name in STATES:
                health.add_metric([*values, name], 1.0 if current == name else 0.0)
            engine = state.engine
            if engine is not None:
                running.add_metric(values, engine.running)
                waiting.add_metric(values, engine.waiting)
                if engine.kv_cache_usage is not None:
                    kv.add_metric(values, engine.kv_cache_usage)
                age.add_metric(values, now - engine.scraped_at)
        yield from (in_flight, health, running, waiting, kv, age)

        generation = GaugeMetricFamily(
            "llmops_router_config_generation", "Config generations applied (1 = as started)."
        )
        generation.add_metric([], router.snapshot.generation)
        yield generation
        cancelled = CounterMetricFamily(
            "llmops_router_cancellations", "Requests whose client went away before the end."
        )
        cancelled.add_metric([], router.cancelled)
        yield cancelled
        stream_errors = CounterMetricFamily(
            "llmops_router_stream_errors", "Streams that failed after their first byte."
        )
        stream_errors.add_metric([], router.stream_errors)
        yield stream_errors
        handoffs = CounterMetricFamily(
            "llmops_router_lane_handoffs",
            "Client connections handed from the fast lane to the general HTTP path (requests "
            "other than POST /v1/..., chunked or compressed bodies, Expect, HTTP/1.0).",
        )
        handoffs.add_metric([], router.lane_handoffs)
        yield handoffs

        limiter = router.limits
        decisions = CounterMetricFamily(
            "llmops_router_ratelimit_decisions",
            "Rate-limit checks by scope (key, backend) and decision (allowed, limited).",
            labels=["scope", "decision"],
        )
        for (scope, limited), count in sorted(limiter.decisions.items()):
            decisions.add_metric([scope, "limited" if limited else "allowed"], count)
        yield decisions
        shared = GaugeMetricFamily(
            "llmops_router_ratelimit_shared",
            "1 when rate limits are shared through Redis, 0 when local (none or unreachable).",
        )
        shared.add_metric([], 1.0 if limiter.mode == "shared" else 0.0)
        yield shared


def record_exchange(router: RouterState, exchange: Exchange) -> None:
    """Once per finished request: the backend's ``/status`` windows and request metrics."""
    metrics = router.metrics
    if exchange.chosen_at is not None:
        metrics.overhead.observe(exchange.chosen_at - exchange.started_at)
    if exchange.attempts > 1:
        metrics.retried(exchange.model, exchange.attempts - 1)
    if exchange.backend_id is None:
        return
    state = metrics.state_by_id(router.snapshot, exchange.backend_id)
    if state is None:  # removed by a reload while the request ran
        return
    now = time.monotonic()
    windows = state.windows
    windows.requests.add(now)
    instruments = metrics.backend(state)
    total_s = exchange.total_s
    if total_s is not None:
        windows.latency_ms.add(now, total_s * 1000)
        instruments.finished(exchange.status, total_s)
    ttft_s = exchange.ttft_s
    if exchange.stream and ttft_s is not None:
        windows.ttft_ms.add(now, ttft_s * 1000)
        instruments.ttft.observe(ttft_s)
