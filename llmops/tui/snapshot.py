"""Typed snapshots of the router's ``/status`` JSON (schema version 1, see DESIGN.md).

Parsing is tolerant: a field that is missing, null or of the wrong type becomes ``None`` (or
an empty list) instead of failing, because a dashboard that shows ``-`` for one number is
more useful than one that shows nothing. Only a body that is not a JSON object, or one that
declares another schema version, is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from llmops.errors import DashboardError

SUPPORTED_VERSION = 1
STATES = ("healthy", "unhealthy", "draining", "ejected", "probing")


@dataclass(frozen=True)
class Percentiles:
    p50: float | None = None
    p95: float | None = None


@dataclass(frozen=True)
class EngineStats:
    running: int | None = None
    waiting: int | None = None
    kv_cache_usage: float | None = None  # fraction 0..1
    age_s: float | None = None


@dataclass(frozen=True)
class RouterInfo:
    uptime_s: float | None = None
    strategy: str | None = None
    config_generation: int | None = None
    version: str | None = None


@dataclass(frozen=True)
class Totals:
    requests: int | None = None
    errors: int | None = None
    in_flight: int | None = None
    rps: float | None = None
    ttft_ms: Percentiles = Percentiles()


@dataclass(frozen=True)
class ModelStatus:
    name: str
    backends: int | None = None
    healthy: int | None = None
    in_flight: int | None = None
    rps: float | None = None


@dataclass(frozen=True)
class BackendStatus:
    id: str
    model: str | None = None
    url: str | None = None
    state: str | None = None
    weight: float | None = None
    in_flight: int | None = None
    requests: int | None = None
    errors: int | None = None
    last_error: str | None = None
    rpm_limit: int | None = None
    rpm_used: int | None = None
    latency_ms: Percentiles = Percentiles()
    ttft_ms: Percentiles = Percentiles()
    engine: EngineStats = EngineStats()


@dataclass(frozen=True)
class RouterEvent:
    at: float | None  # Unix time in seconds
    level: str
    backend: str | None
    message: str


@dataclass(frozen=True)
class StatusSnapshot:
    """One answer of ``/status``; ``received_at`` is the local Unix time it arrived."""

    version: int
    received_at: float
    router: RouterInfo = RouterInfo()
    totals: Totals = Totals()
    models: tuple[ModelStatus, ...] = ()
    backends: tuple[BackendStatus, ...] = ()
    events: tuple[RouterEvent, ...] = ()

    def backend(self, backend_id: str) -> BackendStatus | None:
        return next((b for b in self.backends if b.id == backend_id), None)


def parse_status(data: object, received_at: float) -> StatusSnapshot:
    """Build a snapshot from decoded ``/status`` JSON; raise DashboardError if it is not one."""
    if not isinstance(data, Mapping):
        raise DashboardError(f"/status is not a JSON object (got {type(data).__name__})")
    version = data.get("version")
    if version != SUPPORTED_VERSION or isinstance(version, bool):
        raise DashboardError(
            f"/status schema version {version!r} is not supported "
            f"(this dashboard reads version {SUPPORTED_VERSION}); upgrade llmops"
        )
    router = _mapping(data.get("router"))
    totals = _mapping(data.get("totals"))
    return StatusSnapshot(
        version=SUPPORTED_VERSION,
        received_at=received_at,
        router=RouterInfo(
            uptime_s=_float(router.get("uptime_s")),
            strategy=_str(router.get("strategy")),
            config_generation=_int(router.get("config_generation")),
            version=_str(router.get("version")),
        ),
        totals=Totals(
            requests=_int(totals.get("requests")),
            errors=_int(totals.get("errors")),
            in_flight=_int(totals.get("in_flight")),
            rps=_float(totals.get("rps")),
            ttft_ms=_percentiles(totals.get("ttft_ms")),
        ),
        models=tuple(m for m in map(_model, _list(data.get("models"))) if m is not None),
        backends=_unique_backends(_list(data.get("backends"))),
        events=tuple(e for e in map(_event, _list(data.get("events"))) if e is not None),
    )


def _unique_backends(items: list[object]) -> tuple[BackendStatus, ...]:
    # The table keys rows by id, so a duplicate id would crash it; keep the first.
    seen: set[str] = set()
    backends = []
    for item in items:
        backend = _backend(item)
        if backend is not None and backend.id not in seen:
            seen.add(backend.id)
            backends.append(backend)
    return tuple(backends)


def _backend(item: object) -> BackendStatus | None:
    if not isinstance(item, Mapping):
        return None
    url = _str(item.get("url"))
    backend_id = _str(item.get("id")) or _int_str(item.get("id")) or url
    if backend_id is None:
        return None
    rpm = _mapping(item.get("rpm"))
    engine = _mapping(item.get("engine"))
    return BackendStatus(
        id=backend_id,
        model=_str(item.get("model")),
        url=url,
        state=_str(item.get("state")),
        weight=_float(item.get("weight")),
        in_flight=_int(item.get("in_flight")),
        requests=_int(item.get("requests")),
        errors=_int(item.get("errors")),
        last_error=_str(item.get("last_error")) or None,
        rpm_limit=_int(rpm.get("limit")),
        rpm_used=_int(rpm.get("used")),
        latency_ms=_percentiles(item.get("latency_ms")),
        ttft_ms=_percentiles(item.get("ttft_ms")),
        engine=EngineStats(
            running=_int(engine.get("running")),
            waiting=_int(engine.get("waiting")),
            kv_cache_usage=_fraction(engine.get("kv_cache_usage")),
            age_s=_float(engine.get("age_s")),
        ),
    )


def _model(item: object) -> ModelStatus | None:
    if not isinstance(item, Mapping):
        return None
    name = _str(item.get("name"))
    if name is None:
        return None
    return ModelStatus(
        name=name,
        backends=_int(item.get("backends")),
        healthy=_int(item.get("healthy")),
        in_flight=_int(item.get("in_flight")),
        rps=_float(item.get("rps")),
    )


def _event(item: object) -> RouterEvent | None:
    if not isinstance(item, Mapping):
        return None
    message = _str(item.get("message"))
    if message is None:
        return None
    return RouterEvent(
        at=_timestamp(item.get("at")),
        level=(_str(item.get("level")) or "info").lower(),
        backend=_str(item.get("backend")) or _int_str(item.get("backend")),
        message=message,
    )


def _timestamp(value: object) -> float | None:
    """Unix seconds; an ISO 8601 string is accepted too since DESIGN.md leaves the format open."""
    number = _float(value)
    if number is not None:
        # Milliseconds since the epoch are > 1e11 for any date after 1973.
        return number / 1000 if number > 1e11 else number
    if isinstance(value, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _percentiles(value: object) -> Percentiles:
    data = _mapping(value)
    return Percentiles(p50=_float(data.get("p50")), p95=_float(data.get("p95")))


def _fraction(value: object) -> float | None:
    # vLLM reports KV usage as 0..1; tolerate a router that forwards a 0..100 percentage.
    number = _float(value)
    if number is None or number < 0:
        return None
    return number / 100 if number > 1 else number


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int_str(value: object) -> str | None:
    number = _int(value)
    return None if number is None else str(number)


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    # Beyond 64 bits it is garbage, not a counter; it would also overflow float formatting.
    if isinstance(value, int) and abs(value) < 2**63:
        return value
    return None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None
