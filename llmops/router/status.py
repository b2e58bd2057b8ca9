"""The versioned ``/status`` JSON that the TUI, the web page and scripts read (DESIGN.md).

Built on demand from state the request path keeps anyway (counters, windows, scrapes);
percentiles are computed here, over each backend's recent samples, never per request.
"""

from __future__ import annotations

import time
from typing import Any

from llmops import __version__
from llmops.router.pool import BackendState
from llmops.router.state import RouterState
from llmops.router.windows import STATUS_WINDOW_S, p50_p95

STATUS_VERSION = 1
RECENT_EVENTS = 50


def build_status(router: RouterState) -> dict[str, Any]:
    """A point-in-time view of the router, its models and backends."""
    states = router.snapshot.states
    now = time.monotonic()
    rps = {s.id: s.windows.rps(now) for s in states}
    ttft_by_id = {s.id: s.windows.ttft_ms.values(now) for s in states}
    all_ttft = [v for values in ttft_by_id.values() for v in values]
    return {
        "version": STATUS_VERSION,
        "router": {
            "uptime_s": round(time.time() - router.started_at, 3),
            "strategy": router.config.routing.strategy,
            "config_generation": router.snapshot.generation,
            "version": __version__,
        },
        "totals": {
            "requests": sum(s.requests for s in states),
            "errors": sum(s.errors for s in states),
            "in_flight": sum(s.in_flight for s in states),
            "rps": round(sum(rps.values()), 2),
            "ttft_ms": p50_p95(all_ttft),
        },
        "models": [
            {
                "name": name,
                "backends": len(group),
                "healthy": sum(1 for s in group if s.state == "healthy"),
                "in_flight": sum(s.in_flight for s in group),
                "rps": round(sum(rps[s.id] for s in group), 2),
            }
            for name, group in sorted(router.snapshot.by_model.items())
        ],
        "backends": [_backend_status(router, s, now, ttft_by_id[s.id]) for s in states],
        "events": [
            {"at": e.at, "level": e.level, "backend": e.backend, "message": e.message}
            for e in router.events.recent(RECENT_EVENTS)
        ],
    }


def _backend_status(
    router: RouterState, state: BackendState, now: float, ttft_ms: list[float]
) -> dict[str, Any]:
    backend = state.backend
    engine = state.engine
    return {
        "id": backend.id,
        "model": backend.model,
        "url": backend.api_base,
        "state": state.state,
        "weight": backend.weight,
        "in_flight": state.in_flight,
        "requests": state.requests,
        "errors": state.errors,
        "last_error": state.last_error,
        "rpm": {"limit": backend.rpm_limit, "used": _rpm_used(router, state, now)},
        "latency_ms": p50_p95(state.windows.latency_ms.values(now)),
        "ttft_ms": p50_p95(ttft_ms),
        "engine": {
            "running": None if engine is None else engine.running,
            "waiting": None if engine is None else engine.waiting,
            "kv_cache_usage": None if engine is None else engine.kv_cache_usage,
            "age_s": None if engine is None else round(now - engine.scraped_at, 3),
        },
    }


def _rpm_used(router: RouterState, state: BackendState, now: float) -> int:
    """Requests in the current limit window when a limit is set, else in the last minute."""
    if state.backend.rpm_limit is not None:
        return router.limits.requests_in_window(state.id)
    return int(state.windows.requests.total(now) * 60 / STATUS_WINDOW_S)
