"""What happens once per finished request: the access log line and the router's numbers."""

from __future__ import annotations

from llmops.router.accesslog import access_log
from llmops.router.exchange import Exchange
from llmops.router.metrics import record_exchange
from llmops.router.state import RouterState


def finish_exchange(router: RouterState, exchange: Exchange, now: float) -> None:
    exchange.finished_at = now
    record_exchange(router, exchange)
    if router.access_formatter is not None:
        access_log.info(router.access_formatter(exchange))
