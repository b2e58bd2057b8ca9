"""One router made of N worker processes sharing a port (``llmops router serve --workers N``).

Every worker is a full router. What must not be multiplied or split is arranged here:
- worker 0 (the leader) alone probes backends and scrapes engine metrics; the others copy
  its view of each backend twice a second, so backends see one router's checks, not N;
- ``/status`` and ``/metrics`` answer for the whole router whichever worker gets the request:
  it asks its peers over their private unix sockets and merges the answers;
- a drain, undrain or reload sent to any worker is applied by all of them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from llmops.router.pool import BackendState
from llmops.router.scrape import EngineLoad
from llmops.router.state import RouterState

log = logging.getLogger("llmops.router")

FOLLOW_INTERVAL_S = 0.5
_PEER_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


@dataclass(frozen=True)
class WorkerRole:
    index: int
    count: int
    socket_dir: Path

    @property
    def leader(self) -> bool:
        return self.index == 0

    def socket_path(self, index: int) -> Path:
        return self.socket_dir / f"worker-{index}.sock"

    @property
    def peers(self) -> list[int]:
        return [i for i in range(self.count) if i != self.index]


# -- what a worker tells its peers -------------------------------------------------------------
def backend_facts(states: list[BackendState]) -> dict[str, dict[str, Any]]:
    """The leader's view of each backend that followers copy: health and engine load."""
    facts: dict[str, dict[str, Any]] = {}
    for state in states:
        engine = state.engine
        facts[state.id] = {
            "healthy": state.healthy,
            "drained": state.drained,
            "last_error": state.last_error,
            "engine": None
            if engine is None
            else [
                engine.running,
                engine.waiting,
                engine.kv_cache_usage,
                engine.scraped_at,
                engine.fresh_until,
                engine.in_flight_at_scrape,
            ],
        }
    return facts


def apply_facts(states: list[BackendState], facts: dict[str, dict[str, Any]]) -> None:
    """Copy the leader's view onto this worker's backends (monotonic clocks are system-wide)."""
    for state in states:
        fact = facts.get(state.id)
        if fact is None:
            continue
        state.healthy = bool(fact["healthy"])
        state.drained = bool(fact["drained"])
        if fact["last_error"] and state.last_error is None:
            state.last_error = fact["last_error"]
        engine = fact["engine"]
        state.engine = None if engine is None else EngineLoad(*engine)


# -- merging peers' answers --------------------------------------------------------------------
def merge_status(views: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``/status`` from each worker's own, the leader's first.

    Counters add up; states, engine numbers and settings come from the leader (the others copy
    them); a percentile is the request-weighted mean of the workers' (an approximation: raw
    samples stay in each worker).
    """
    merged = dict(views[0])
    merged["router"] = {
        **views[0]["router"],
        "workers": len(views),
        "config_generation": max(v["router"]["config_generation"] for v in views),
    }
    merged["totals"] = _merge_counts([v["totals"] for v in views])
    merged["models"] = _merge_by_key(views, "models", "name")
    merged["backends"] = _merge_by_key(views, "backends", "id")
    events = {(e["at"], e["message"]): e for v in views for e in v.get("events", [])}
    merged["events"] = [events[k] for k in sorted(events)][-50:]
    return merged


_SUMMED = ("requests", "errors", "in_flight", "rps")


def _merge_counts(items: list[dict[str, Any]]) -> dict[str, Any]:
    merged = dict(items[0])
    for key in _SUMMED:
        if key in merged:
            values: list[float] = [item[key] for item in items if item.get(key) is not None]
            merged[key] = round(sum(values), 2) if len(values) == len(items) else None
    weights = [item.get("requests") or 0 for item in items]
    for key in ("ttft_ms", "latency_ms"):
        if key in merged:
            merged[key] = {
                p: _weighted([item[key].get(p) for item in items], weights) for p in ("p50", "p95")
            }
    if isinstance(merged.get("rpm"), dict) and merged["rpm"].get("used") is not None:
        used = [item["rpm"].get("used") or 0 for item in items]
        merged["rpm"] = {**merged["rpm"], "used": sum(used)}
    return merged


def _merge_by_key(views: list[dict[str, Any]], field: str, key: str) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for view in views:
        for item in view.get(field, []):
            groups.setdefault(item[key], []).append(item)
    return [_merge_counts(items) for items in groups.values()]


def _weighted(values: list[float | None], weights: list[int]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None and w > 0]
    if not pairs:
        known = [v for v in values if v is not None]
        return known[0] if known else None
    return round(sum(v * w for v, w in pairs) / sum(w for _, w in pairs), 2)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (.*)$")


def merge_metrics(texts: list[str]) -> str:
    """Prometheus text of every worker, each sample labelled with its ``worker``.

    HELP and TYPE lines are kept once per metric; queries sum over ``worker``.
    """
    seen_meta: set[str] = set()
    meta: list[str] = []
    samples: dict[str, list[str]] = {}
    order: list[str] = []
    for index, text in enumerate(texts):
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and line not in seen_meta:
                    seen_meta.add(line)
                    meta.append(line)
                    if parts[2] not in samples:
                        samples[parts[2]] = []
                        order.append(parts[2])
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name, labels, value = match.groups()
            inner = labels[1:-1] if labels else ""
            labelled = f'{name}{{worker="{index}"{"," + inner if inner else ""}}} {value}'
            family = _family(name, samples)
            samples.setdefault(family, [])
            if family not in order:
                order.append(family)
            samples[family].append(labelled)
    out: list[str] = []
    for family in order:
        out.extend(m for m in meta if m.split(" ", 3)[2] == family)
        out.extend(samples[family])
    return "\n".join(out) + "\n"


def _family(name: str, known: dict[str, list[str]]) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_total", "_created"):
        if name.endswith(suffix) and name[: -len(suffix)] in known:
            return name[: -len(suffix)]
    return name


# -- talking to peers --------------------------------------------------------------------------
async def ask_peers(
    role: WorkerRole, method: str, path: str, json: Any = None
) -> list[tuple[int, Any]]:
    """Send one internal request to every peer; answers of the peers that replied, in order."""

    async def one(index: int) -> tuple[int, Any] | None:
        connector = aiohttp.UnixConnector(path=str(role.socket_path(index)))
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=_PEER_TIMEOUT) as session,
                session.request(method, f"http://worker{path}", json=json) as response,
            ):
                if response.content_type == "application/json":
                    return index, await response.json()
                return index, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("worker %d did not answer %s: %s", index, path, exc)
            return None

    answers = await asyncio.gather(*(one(i) for i in role.peers))
    return [a for a in answers if a is not None]


async def follow_leader(router: RouterState, role: WorkerRole) -> None:
    """Keep copying the leader's view of the backends (followers only)."""
    connector = aiohttp.UnixConnector(path=str(role.socket_path(0)))
    async with aiohttp.ClientSession(connector=connector, timeout=_PEER_TIMEOUT) as session:
        while True:
            try:
                async with session.get("http://worker/internal/facts") as response:
                    apply_facts(router.snapshot.states, await response.json())
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass  # the leader is starting or restarting: keep the last view
            await asyncio.sleep(FOLLOW_INTERVAL_S)


def internal_app(router: RouterState, status: Any, metrics: Any, reload: Any) -> web.Application:
    """What peers may ask a worker, on its private unix socket."""

    async def facts(request: web.Request) -> web.Response:
        return web.json_response(backend_facts(router.snapshot.states))

    async def local_status(request: web.Request) -> web.Response:
        return web.json_response(status())

    async def local_metrics(request: web.Request) -> web.Response:
        return web.Response(text=metrics())

    async def drain(request: web.Request) -> web.Response:
        body = await request.json()
        for state in router.snapshot.states:
            if state.id == body["id"]:
                state.drained = bool(body["drained"])
        return web.json_response({"ok": True})

    async def local_reload(request: web.Request) -> web.Response:
        return web.json_response({"reloaded": await reload()})

    app = web.Application()
    app.router.add_get("/internal/facts", facts)
    app.router.add_get("/internal/status", local_status)
    app.router.add_get("/internal/metrics", local_metrics)
    app.router.add_post("/internal/drain", drain)
    app.router.add_post("/internal/reload", local_reload)
    return app
