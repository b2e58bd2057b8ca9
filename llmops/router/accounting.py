"""What is recorded about requests: a failed attempt (errors, metrics, breaker) and, once
per finished request, the access log line and the router's numbers."""

from __future__ import annotations

from llmops.router.accesslog import access_log
from llmops.router.breaker import record_failure
from llmops.router.exchange import Exchange
from llmops.router.metrics import record_exchange
from llmops.router.pool import BackendState
from llmops.router.state import RouterState
from llmops.router.upstream import UpstreamFailure


def finish_exchange(router: RouterState, exchange: Exchange, now: float) -> None:
    exchange.finished_at = now
    if exchange.cancelled:
        router.cancelled += 1
    record_exchange(router, exchange)
    if router.access_formatter is not None:
        access_log.info(router.access_formatter(exchange))


def account_failure(
    router: RouterState, backend: BackendState, failure: UpstreamFailure
) -> UpstreamFailure:
    """Count a failed attempt: the metric always; the backend's errors and its breaker only
    for the backend's own trouble."""
    router.metrics.failed(backend, failure.kind)
    if failure.local:
        return failure
    backend.record_error(failure.message)
    if failure.status >= 500:
        record_failure(backend, failure.kind, router.config.circuit_breaker, router.events)
    return failure
