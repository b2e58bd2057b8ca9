"""One access-log line per request, as JSON or text, written off the hot path's back.

Lines are built with one f-string (or one orjson call) and written to the
``llmops.access`` logger only when the access log is enabled.
"""

from __future__ import annotations

import logging
import time

import orjson

from llmops.router.exchange import Exchange

access_log = logging.getLogger("llmops.access")


def format_json(exchange: Exchange) -> str:
    return orjson.dumps(
        {
            "ts": round(time.time(), 3),
            "request_id": exchange.request_id,
            "model": exchange.model,
            "backend": exchange.backend_id,
            "status": exchange.status,
            "retries": max(0, exchange.attempts - 1),
            "stream": exchange.stream,
            "ttft_ms": _ms(exchange.ttft_s),
            "total_ms": _ms(exchange.total_s),
            "error": exchange.error_kind,
            "cancelled": exchange.cancelled,
        }
    ).decode()


def format_text(exchange: Exchange) -> str:
    ttft = _ms(exchange.ttft_s)
    total = _ms(exchange.total_s)
    return (
        f"{exchange.request_id} model={exchange.model} backend={exchange.backend_id or '-'} "
        f"status={exchange.status} retries={max(0, exchange.attempts - 1)} "
        f"stream={int(exchange.stream)} ttft_ms={'-' if ttft is None else ttft} "
        f"total_ms={'-' if total is None else total}"
        + (f" error={exchange.error_kind}" if exchange.error_kind else "")
        + (" cancelled=1" if exchange.cancelled else "")
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


FORMATTERS = {"json": format_json, "text": format_text}
