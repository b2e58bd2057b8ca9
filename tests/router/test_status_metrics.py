"""``/status`` (the versioned JSON of DESIGN.md) and ``/metrics`` against real sims."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from llmops.router.metrics import failure_label, status_label
from tests.conftest import StartRouter, StartSim, router_config

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}
STREAM = {**CHAT, "stream": True, "ignore_eos": True}

STATUS_KEYS = {"version", "router", "totals", "models", "backends", "events"}
ROUTER_KEYS = {"uptime_s", "strategy", "config_generation", "version"}
TOTALS_KEYS = {"requests", "errors", "in_flight", "rps", "ttft_ms"}
MODEL_KEYS = {"name", "backends", "healthy", "in_flight", "rps"}
BACKEND_KEYS = {
    "id", "model", "url", "state", "weight", "in_flight", "requests", "errors", "last_error",
    "rpm", "latency_ms", "ttft_ms", "engine",
}  # fmt: skip
ENGINE_KEYS = {"running", "waiting", "kv_cache_usage", "age_s"}
EVENT_KEYS = {"at", "level", "backend", "message"}
FAST_HEALTH = {"interval": 0.3, "timeout": 0.2, "failure_threshold": 1, "success_threshold": 1}


async def get_status(http: aiohttp.ClientSession, url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(f"{url}/status", headers=headers) as response:
        assert response.status == 200
        return await response.json()


async def metric_samples(http: aiohttp.ClientSession, url: str) -> dict[str, list[Any]]:
    async with http.get(f"{url}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    matching = [s.value for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert matching, f"no {name} with {labels}"
    return float(sum(matching))


async def test_status_has_exactly_the_v1_shape_and_real_numbers(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sims = [await start_sim(model="m", ttft_ms=30, itl_ms=5) for _ in range(2)]
    url = await start_router(
        router_config([("m", s.url) for s in sims], auth={"admin_tokens": ["root"]})
    )
    async with http.get(f"{url}/status") as response:
        assert response.status == 401  # admin tokens configured: /status needs one
    for _ in range(6):
        async with http.post(f"{url}/v1/chat/completions", json=STREAM) as response:
            assert response.status == 200
            await response.read()
    async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
        await response.read()

    status = await get_status(http, url, "root")
    assert set(status) == STATUS_KEYS and status["version"] == 1
    assert set(status["router"]) == ROUTER_KEYS
    assert status["router"]["strategy"] == "least-load"
    assert set(status["totals"]) == TOTALS_KEYS
    assert set(status["totals"]["ttft_ms"]) == {"p50", "p95"}
    assert status["totals"]["requests"] == 7 and status["totals"]["in_flight"] == 0
    assert status["totals"]["rps"] > 0
    # TTFT is measured from the router's side: the engine's 30 ms plus the path.
    assert 25 <= status["totals"]["ttft_ms"]["p50"] <= status["totals"]["ttft_ms"]["p95"] < 1000
    (model,) = status["models"]
    assert set(model) == MODEL_KEYS
    assert model == {**model, "name": "m", "backends": 2, "healthy": 2, "in_flight": 0}
    assert len(status["backends"]) == 2
    for backend in status["backends"]:
        assert set(backend) == BACKEND_KEYS
        assert set(backend["engine"]) == ENGINE_KEYS
        assert set(backend["rpm"]) == {"limit", "used"}
        assert backend["rpm"]["limit"] is None
        assert backend["state"] == "healthy"
    assert sum(b["rpm"]["used"] for b in status["backends"]) == 7
    assert sum(b["requests"] for b in status["backends"]) == 7
    latencies = [b["latency_ms"]["p50"] for b in status["backends"] if b["requests"]]
    assert all(v is not None and v >= 30 for v in latencies)


async def test_metrics_count_requests_latency_ttft_retries_and_failures(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    good = await start_sim(model="m", ttft_ms=5, itl_ms=2)
    bad = await start_sim(model="m", fail_rate=1.0)
    config = router_config(
        [("m", good.url), ("m", bad.url)],
        routing={"strategy": "simple-shuffle", "num_retries": 2},
        health_check={"enabled": False},
        circuit_breaker={"failure_threshold": 1000},
    )
    url = await start_router(config)
    for _ in range(10):
        async with http.post(f"{url}/v1/chat/completions", json=STREAM) as response:
            assert response.status == 200
            await response.read()
    samples = await metric_samples(http, url)
    good_id = f"m@{good.url.removeprefix('http://')}"
    bad_id = f"m@{bad.url.removeprefix('http://')}"
    assert value(samples, "llmops_router_requests_total", backend=good_id, status="200") == 10
    assert value(samples, "llmops_router_ttft_seconds_count", backend=good_id) == 10
    assert value(samples, "llmops_router_request_duration_seconds_count", backend=good_id) == 10
    failures = value(samples, "llmops_router_upstream_failures_total", backend=bad_id, kind="500")
    assert failures >= 1
    assert value(samples, "llmops_router_retries_total", model="m") == failures
    assert value(samples, "llmops_router_overhead_seconds_count") == 10
    assert value(samples, "llmops_router_in_flight", backend=good_id) == 0
    assert value(samples, "llmops_router_config_generation") == 1
    assert value(samples, "llmops_router_backend_state", backend=good_id, state="healthy") == 1


async def test_an_unhealthy_backend_shows_in_status_and_metrics_within_one_interval(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sims = [await start_sim(model="m") for _ in range(2)]
    url = await start_router(router_config([("m", s.url) for s in sims], health_check=FAST_HEALTH))
    victim = f"m@{sims[0].url.removeprefix('http://')}"
    sims[0].set_mode("hang")  # /health stops answering: the probe times out
    changed_at = time.monotonic()
    while True:
        status = await get_status(http, url)
        states = {b["id"]: b["state"] for b in status["backends"]}
        if states[victim] == "unhealthy":
            break
        assert time.monotonic() - changed_at < 3, states
        await asyncio.sleep(0.05)
    # One interval (0.3 s) plus the probe timeout (0.2 s), with scheduling slack.
    assert time.monotonic() - changed_at < 0.3 + 0.2 + 0.4
    samples = await metric_samples(http, url)
    assert value(samples, "llmops_router_backend_state", backend=victim, state="unhealthy") == 1
    assert value(samples, "llmops_router_backend_state", backend=victim, state="healthy") == 0
    assert status["models"][0]["healthy"] == 1
    assert any(e["backend"] == victim for e in status["events"])
    assert all(set(e) == EVENT_KEYS for e in status["events"])
    sims[0].set_mode("ok")


def test_labels_stay_within_fixed_sets() -> None:
    assert [status_label(s) for s in (200, 429, 451, 599, 307)] == [
        "200",
        "429",
        "4xx",
        "5xx",
        "3xx",
    ]
    assert failure_label("http_503") == "503" and failure_label("http_418") == "4xx"
    assert failure_label("ttfb_timeout") == "ttfb_timeout"


async def test_a_reload_drops_the_series_of_removed_backends(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    keep, drop = [await start_sim(model="m", ttft_ms=1, itl_ms=1) for _ in range(2)]
    config = router_config(
        [("m", keep.url), ("m", drop.url)], routing={"strategy": "simple-shuffle"}
    )
    url = await start_router(config)
    for _ in range(12):
        async with http.post(f"{url}/v1/chat/completions", json=STREAM) as response:
            await response.read()
    drop_id = f"m@{drop.url.removeprefix('http://')}"
    samples = await metric_samples(http, url)
    assert value(samples, "llmops_router_requests_total", backend=drop_id) > 0
    # The fixture wrote the config here; the router reloads it on demand.
    (tmp_path / "router-1.yaml").write_text(yaml.safe_dump(router_config([("m", keep.url)])))
    async with http.post(f"{url}/admin/reload") as response:
        assert response.status == 200
    samples = await metric_samples(http, url)
    assert not any(
        s.labels.get("backend") == drop_id for series in samples.values() for s in series
    )
    assert value(samples, "llmops_router_config_generation") == 2
    status = await get_status(http, url)
    assert [b["id"] for b in status["backends"]] == [f"m@{keep.url.removeprefix('http://')}"]
