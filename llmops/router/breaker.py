"""Passive ejection: a backend that keeps failing requests is taken out for a cool-down.

Only failures that say the backend is in trouble count (5xx, timeouts, connection errors);
a client's mistake (4xx) never does. After the cool-down one trial request (half-open)
decides: success closes the breaker, failure opens it again.
"""

from __future__ import annotations

import time

from llmops.config.router import CircuitBreakerConfig
from llmops.router.events import EventLog
from llmops.router.pool import BackendState


def record_success(state: BackendState, events: EventLog) -> None:
    state.consecutive_failures = 0
    if state.half_open:
        state.half_open = False
        message = f"backend {state.id} passed its trial request: back in rotation"
        events.record("recovered", "info", message, state.id)


def record_failure(
    state: BackendState, kind: str, config: CircuitBreakerConfig, events: EventLog
) -> None:
    state.consecutive_failures += 1
    if state.ejected_until is not None:
        return
    if state.half_open or state.consecutive_failures >= config.failure_threshold:
        state.half_open = False
        state.ejected_until = time.monotonic() + config.cooldown
        events.record(
            "ejected",
            "warning",
            f"backend {state.id} ejected for {config.cooldown:g}s after "
            f"{state.consecutive_failures} consecutive failures (last: {kind})",
            state.id,
        )


def reset(state: BackendState) -> None:
    """Forget past failures (the backend was found healthy again by active checks)."""
    state.consecutive_failures = 0
    state.ejected_until = None
    state.half_open = False
