"""Active health checks: ``GET /health`` and the model listed in ``GET /v1/models``, per backend.

Probes run in the background, concurrently under a cap, and never block requests.
``failure_threshold`` consecutive failures mark a backend unhealthy; ``success_threshold``
consecutive passes bring it back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import aiohttp

from llmops.router.breaker import reset
from llmops.router.pool import BackendState
from llmops.router.state import RouterState

log = logging.getLogger("llmops.router")


async def probe(
    session: aiohttp.ClientSession, state: BackendState, timeout_s: float
) -> str | None:
    """Why ``state``'s backend is not healthy, or None if it is."""
    backend = state.backend
    headers = {"Authorization": f"Bearer {backend.api_key}"} if backend.api_key else None
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    models_url = f"{backend.api_base}/models"
    try:
        async with session.get(f"{backend.root_url}/health", timeout=timeout) as response:
            if response.status != 200:
                return f"/health answered {response.status}"
        async with session.get(models_url, headers=headers, timeout=timeout) as response:
            if response.status != 200:
                return f"/v1/models answered {response.status}"
            listing = await response.json(content_type=None)
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except aiohttp.ClientError as exc:
        return f"{type(exc).__name__}: {exc}"
    except ValueError:
        return "/v1/models is not JSON"
    served = _served_models(listing)
    if backend.upstream_model not in served:
        listed = ", ".join(sorted(served)) or "none"
        return f"model {backend.upstream_model!r} is not served (serves: {listed})"
    return None


def _served_models(listing: object) -> set[str]:
    if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        return set()
    return {str(m.get("id")) for m in listing["data"] if isinstance(m, dict)}


def apply_probe(router: RouterState, state: BackendState, problem: str | None) -> None:
    """Update ``state`` with one probe result, recording a change of health as an event."""
    config = router.config.health_check
    if problem is None:
        state.probe_failures = 0
        state.probe_successes += 1
        if not state.healthy and state.probe_successes >= config.success_threshold:
            state.healthy = True
            reset(state)
            message = f"backend {state.id} is healthy again"
            router.events.record("recovered", "info", message, state.id)
        return
    state.probe_successes = 0
    state.probe_failures += 1
    if state.healthy and state.probe_failures >= config.failure_threshold:
        state.healthy = False
        state.record_error(f"health check: {problem}")
        message = f"backend {state.id} is unhealthy: {problem}"
        router.events.record("unhealthy", "error", message, state.id)


async def check_all(router: RouterState, states: Iterable[BackendState]) -> None:
    """Probe ``states`` once, concurrently under the configured cap."""
    config = router.config.health_check
    limit = asyncio.Semaphore(config.max_concurrent)

    async def one(state: BackendState) -> None:
        async with limit:
            problem = await probe(router.session, state, config.timeout)
        apply_probe(router, state, problem)

    await asyncio.gather(*(one(s) for s in states))


async def admit_new_backends(router: RouterState, states: Iterable[BackendState]) -> None:
    """Probe backends that have just appeared; those that pass join at once, others later."""
    config = router.config.health_check
    fresh = list(states)
    results = await asyncio.gather(*(probe(router.session, s, config.timeout) for s in fresh))
    for state, problem in zip(fresh, results, strict=True):
        state.healthy = problem is None
        state.probe_successes = 1 if problem is None else 0
        if problem is not None:
            state.record_error(f"health check: {problem}")
            message = f"backend {state.id} is not ready: {problem}"
            router.events.record("unhealthy", "warning", message, state.id)


async def run_health_checks(router: RouterState) -> None:
    """Probe every backend each ``health_check.interval`` until cancelled."""
    while True:
        config = router.config.health_check
        await asyncio.sleep(config.interval)
        if config.enabled:
            try:
                await check_all(router, router.snapshot.states)
            except Exception:  # never let one bad round stop health checking
                log.exception("health check round failed")
