"""Engine metrics: parsing vLLM/SGLang exposition text, scraping real sims, backing off."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from llmops.config.router import LitellmParams, ModelEntry, resolve_backends
from llmops.router.pool import PoolSnapshot, build_snapshot
from llmops.router.scrape import EngineScraper, parse_engine_load
from tests.conftest import StartRouter, StartSim, router_config, serving

VLLM_TWO_ENGINES = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen"} 3.0
vllm:num_requests_running{engine="1",model_name="qwen"} 4.0
vllm:num_requests_waiting{engine="0",model_name="qwen"} 1.0
vllm:num_requests_waiting{engine="1",model_name="qwen"} 2.0 1700000000000
vllm:gpu_cache_usage_perc{engine="0",model_name="qwen"} 0.5
vllm:gpu_cache_usage_perc{engine="1",model_name="qwen"} 0.7
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="qwen"} 5.0
vllm:num_requests_running_extra{model_name="qwen"} 99
"""

SGLANG = """\
sglang:num_running_reqs{model_name="a"} 2
sglang:num_queue_reqs{model_name="a"} 5
sglang:token_usage{model_name="a"} 0.25
sglang:num_running_reqs{model_name="b"} 7
sglang:num_queue_reqs{model_name="b"} 0
sglang:token_usage{model_name="b"} 0.75
"""


def test_vllm_series_are_summed_and_kv_averaged_under_either_name() -> None:
    assert parse_engine_load(VLLM_TWO_ENGINES, "qwen") == (7.0, 3.0, pytest.approx(0.6))
    renamed = VLLM_TWO_ENGINES.replace("gpu_cache_usage_perc", "kv_cache_usage_perc")
    assert parse_engine_load(renamed, None) == (7.0, 3.0, pytest.approx(0.6))


def test_sglang_names_and_the_model_filter() -> None:
    assert parse_engine_load(SGLANG, "a") == (2.0, 5.0, 0.25)
    assert parse_engine_load(SGLANG, "b") == (7.0, 0.0, 0.75)
    # No series for this model name: the whole endpoint is the engine.
    assert parse_engine_load(SGLANG, "other") == (9.0, 5.0, 0.5)


def test_text_without_engine_metrics_is_an_error() -> None:
    with pytest.raises(ValueError, match="no vLLM or SGLang"):
        parse_engine_load("# nothing here\nprocess_cpu_seconds_total 3\n")
    running, waiting, kv = parse_engine_load("vllm:num_requests_running 1\n")
    assert (running, waiting, kv) == (1.0, 0.0, None)


def snapshot_for(*urls: str, model: str = "m") -> PoolSnapshot:
    entries = [(ModelEntry(model, LitellmParams(api_base=f"{u}/v1")), "test") for u in urls]
    return build_snapshot(resolve_backends(entries), None, 1)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
async def test_scraper_reads_a_busy_sim(
    start_sim: StartSim, http: aiohttp.ClientSession, engine: str
) -> None:
    sim = await start_sim(model="m", engine=engine, itl_ms=20, max_num_seqs=2)
    snapshot = snapshot_for(sim.url)
    scraper = EngineScraper(http, lambda: snapshot, interval_s=0.5, timeout_s=1.0)
    body = {"model": "m", "prompt": "hi", "max_tokens": 200, "ignore_eos": True}

    async def one() -> None:
        async with http.post(f"{sim.url}/v1/completions", json=body) as response:
            await response.read()

    load = [asyncio.create_task(one()) for _ in range(5)]
    try:
        await asyncio.sleep(0.2)
        await scraper.scrape_once()
    finally:
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
    engine_load = snapshot.states[0].engine
    assert engine_load is not None
    assert (engine_load.running, engine_load.waiting) == (2.0, 3.0)
    assert engine_load.kv_cache_usage is not None and engine_load.kv_cache_usage > 0
    assert engine_load.fresh_until == pytest.approx(engine_load.scraped_at + 1.5)


@pytest.fixture
async def no_metrics_server() -> AsyncIterator[tuple[str, list[float]]]:
    """An OpenAI-ish server with no /metrics (404), recording when it was asked."""
    asked: list[float] = []

    async def metrics(_request: web.Request) -> web.Response:
        asked.append(time.monotonic())
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async with serving(app) as url:
        yield url, asked


async def test_backends_without_metrics_are_asked_less_and_less(
    http: aiohttp.ClientSession, no_metrics_server: tuple[str, list[float]]
) -> None:
    url, asked = no_metrics_server
    snapshot = snapshot_for(url)
    scraper = EngineScraper(http, lambda: snapshot, interval_s=0.05, timeout_s=1.0)
    task = asyncio.create_task(scraper.run())
    await asyncio.sleep(1.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # Without back-off that is ~24 scrapes; with doubling pauses 0.05+0.1+0.2+0.4 = 0.75 s: 5.
    assert 3 <= len(asked) <= 6
    gaps = [b - a for a, b in itertools.pairwise(asked)]
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps))
    assert snapshot.states[0].engine is None


async def test_status_and_metrics_export_engine_gauges_and_their_age(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m", engine="sglang")
    url = await start_router(router_config([("m", sim.url)], scrape={"interval": 0.1}))
    deadline = time.monotonic() + 5
    while True:
        async with http.get(f"{url}/status") as response:
            engine = (await response.json())["backends"][0]["engine"]
        if engine["age_s"] is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert engine["running"] == 0 and engine["waiting"] == 0 and engine["kv_cache_usage"] == 0
    assert 0 <= engine["age_s"] < 1
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    backend = f"m@{sim.url.removeprefix('http://')}"
    assert f'llmops_router_engine_running{{backend="{backend}",model="m"}} 0.0' in text
    assert f'llmops_router_engine_metrics_age_seconds{{backend="{backend}",model="m"}}' in text


def test_label_values_may_hold_braces_and_escaped_quotes() -> None:
    text = 'vllm:num_requests_running{note="a}b \\" c",model_name="q"} 2\n'
    assert parse_engine_load(text, "q") == (2.0, 0.0, None)
