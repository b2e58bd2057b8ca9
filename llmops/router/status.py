"""The versioned ``/status`` JSON that the TUI, the web page and scripts read (DESIGN.md)."""

from __future__ import annotations

import time
from typing import Any

from llmops import __version__
from llmops.router.pool import BackendState
from llmops.router.state import RouterState

STATUS_VERSION = 1


def build_status(router: RouterState) -> dict[str, Any]:
    """A point-in-time view of the router, its models and backends."""
    states = router.snapshot.states
    now = time.time()
    return {
        "version": STATUS_VERSION,
        "router": {
            "uptime_s": round(now - router.started_at, 3),
            "strategy": router.config.routing.strategy,
            "config_generation": router.snapshot.generation,
            "version": __version__,
        },
        "totals": {
            "requests": sum(s.requests for s in states),
            "errors": sum(s.errors for s in states),
            "in_flight": sum(s.in_flight for s in states),
            "rps": None,
            "ttft_ms": {"p50": None, "p95": None},
        },
        "models": [
            {
                "name": name,
                "backends": len(group),
                "healthy": sum(1 for s in group if s.state == "healthy"),
                "in_flight": sum(s.in_flight for s in group),
                "rps": None,
            }
            for name, group in sorted(router.snapshot.by_model.items())
        ],
        "backends": [_backend_status(s) for s in states],
        "events": [],
    }


def _backend_status(state: BackendState) -> dict[str, Any]:
    backend = state.backend
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
        "rpm": {"limit": backend.rpm_limit, "used": None},
        "latency_ms": {"p50": None, "p95": None},
        "ttft_ms": {"p50": None, "p95": None},
        "engine": {"running": None, "waiting": None, "kv_cache_usage": None, "age_s": None},
    }
