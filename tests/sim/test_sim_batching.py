"""Continuous batching against a real sim: pacing, queueing, KV limits, disconnects, scale."""

from __future__ import annotations

import asyncio
import itertools
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from llmops.openai import SSEParser
from tests.conftest import leave_streams_midway

CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "one two three"}]}


async def token_times(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[float]:
    """Send a stream like ``llmops bench`` does; the arrival time of each content chunk."""
    started = time.perf_counter()
    times = [started]
    parser = SSEParser()
    async with http.post(f"{url}/v1/chat/completions", json={**body, "stream": True}) as response:
        async for chunk in response.content.iter_any():
            now = time.perf_counter()
            for data in parser.feed(chunk):
                if data == b"[DONE]":
                    continue
                choices = orjson.loads(data)["choices"]
                if choices and choices[0]["delta"].get("content"):
                    times.append(now)
    return times


async def stats(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/sim/stats") as response:
        result: dict[str, Any] = await response.json()
        return result


async def metric(http: aiohttp.ClientSession, url: str, name_and_labels: str) -> float:
    async with http.get(f"{url}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name_and_labels + " "):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name_and_labels} not in /metrics")


async def eventually(check: Callable[[], Any], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_lone_stream_ttft_and_itl_match_the_options(start_sim, http) -> None:
    sim = await start_sim(ttft_ms=100, itl_ms=20)
    ttfts_s, mean_gaps_s = [], []
    for _ in range(3):  # load on a shared box only ever adds delay: keep the best of three
        times = await token_times(http, sim.url, {**CHAT, "max_tokens": 64, "ignore_eos": True})
        assert len(times) == 1 + 64
        ttfts_s.append(times[1] - times[0])
        mean_gaps_s.append(statistics.mean(b - a for a, b in itertools.pairwise(times[1:])))
    # Generous bounds for CI; measured by hand on a quiet box: within 3% of 100 ms and 20 ms.
    assert 0.9 < min(ttfts_s) / 0.100 < 1.25
    assert 0.9 < min(mean_gaps_s) / 0.020 < 1.15


async def test_max_num_seqs_keeps_the_rest_waiting(start_sim, http) -> None:
    sim = await start_sim(max_num_seqs=2, ttft_ms=10, itl_ms=25)
    body = {**CHAT, "max_tokens": 30, "ignore_eos": True}
    tasks = [asyncio.create_task(token_times(http, sim.url, body)) for _ in range(4)]

    async def two_and_two() -> bool:
        running = await metric(
            http, sim.url, 'vllm:num_requests_running{engine="0",model_name="sim-model"}'
        )
        waiting = await metric(
            http, sim.url, 'vllm:num_requests_waiting{engine="0",model_name="sim-model"}'
        )
        return (running, waiting) == (2.0, 2.0)

    await eventually(two_and_two)
    results = await asyncio.gather(*tasks)
    assert [len(times) for times in results] == [31] * 4
    # The two that waited started only after the first two finished (~30 steps).
    first_tokens = sorted(times[1] - times[0] for times in results)
    assert first_tokens[2] > 0.8 * 30 * 0.025
    assert (await stats(http, sim.url))["completed"] == 4


async def test_kv_cache_limit_queues_sequences_and_reports_usage(start_sim, http) -> None:
    # Each sequence holds 3 prompt + 20 output = 23 tokens; 50 fit two at a time.
    sim = await start_sim(kv_cache_tokens=50, ttft_ms=10, itl_ms=30)
    body = {**CHAT, "max_tokens": 20, "ignore_eos": True}
    tasks = [asyncio.create_task(token_times(http, sim.url, body)) for _ in range(3)]
    labels = '{engine="0",model_name="sim-model"}'

    async def one_waits_and_cache_fills() -> bool:
        snapshot = sim.engine.snapshot()
        return snapshot.running == 2 and snapshot.waiting == 1 and snapshot.kv_used_tokens > 6

    await eventually(one_waits_and_cache_fills)
    usage = await metric(http, sim.url, f"vllm:kv_cache_usage_perc{labels}")
    assert 0.12 < usage <= 1.0
    await asyncio.gather(*tasks)
    assert await metric(http, sim.url, f"vllm:kv_cache_usage_perc{labels}") == 0.0


async def test_prefill_of_long_prompts_slows_the_running_batch(start_sim, http) -> None:
    sim = await start_sim(ttft_ms=10, itl_ms=10, prefill_ms_per_token=0.1)
    body = {**CHAT, "max_tokens": 40, "ignore_eos": True}
    running = asyncio.create_task(token_times(http, sim.url, body))
    await eventually(lambda: _decoding(sim))
    long_prompt = {"messages": [{"role": "user", "content": "w " * 2000}], "max_tokens": 1}
    async with http.post(f"{sim.url}/v1/chat/completions", json=long_prompt) as response:
        assert response.status == 200
    times = await running
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    # 2,000 prompt tokens x 0.1 ms stretch one step from 10 ms to ~210 ms.
    assert max(gaps) > 0.15
    assert statistics.median(gaps) < 0.05


async def _decoding(sim: Any) -> bool:
    return bool(sim.engine.snapshot().generation_tokens_total > 1)


@pytest.mark.parametrize(
    ("engine", "abort_metric"),
    [
        ("vllm", 'vllm:request_success_total{engine="0",finished_reason="abort",model_name="m"}'),
        ("sglang", 'sglang:num_aborted_requests_total{model_name="m"}'),
    ],
)
async def test_disconnects_mid_stream_count_as_aborts_exactly(
    start_sim, http, caplog, engine, abort_metric
) -> None:
    sim = await start_sim(model="m", engine=engine, ttft_ms=5, itl_ms=10)
    body = {**CHAT, "model": "m", "stream": True, "max_tokens": 500, "ignore_eos": True}
    await leave_streams_midway(sim.url, body, times=3)

    async def all_aborted() -> bool:
        current = await stats(http, sim.url)
        return bool(current["aborted"] == 3 and current["running"] == 0)

    await eventually(all_aborted)
    assert await metric(http, sim.url, abort_metric) == 3.0
    await asyncio.sleep(0.1)  # nothing more trickles in later
    assert (await stats(http, sim.url))["aborted"] == 3
    assert sim.engine.snapshot().kv_used_tokens == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no tracebacks


async def test_disconnect_while_waiting_or_not_streaming_aborts(start_sim, http, caplog) -> None:
    sim = await start_sim(max_num_seqs=1, ttft_ms=5, itl_ms=10)
    hold = asyncio.create_task(
        token_times(http, sim.url, {**CHAT, "max_tokens": 100, "ignore_eos": True})
    )
    await eventually(lambda: _decoding(sim))
    timeout = aiohttp.ClientTimeout(total=0.2)
    for body in ({**CHAT, "stream": True}, CHAT):  # one streaming, one not; both queued
        try:
            async with http.post(f"{sim.url}/v1/chat/completions", json=body, timeout=timeout) as r:
                await r.read()
        except TimeoutError:
            pass
    await eventually(lambda: _aborted(sim, 2))
    assert sim.engine.snapshot().waiting == 0
    hold.cancel()
    await eventually(lambda: _aborted(sim, 3))
    assert sim.engine.snapshot().running == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def _aborted(sim: Any, count: int) -> bool:
    return bool(sim.engine.snapshot().finished["abort"] == count)


async def test_one_thousand_concurrent_streams(start_sim) -> None:
    # Stalled until all 1,000 are in, so a slow client ramp cannot let early ones finish first.
    sim = await start_sim(ttft_ms=50, itl_ms=100, max_num_seqs=2000, mode="stall")
    body = {**CHAT, "max_tokens": 4, "ignore_eos": True}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as client:
        tasks = [asyncio.create_task(token_times(client, sim.url, body)) for _ in range(1000)]
        await eventually(lambda: _waiting(sim, 1000), timeout_s=30)
        sim.set_mode("ok")
        await eventually(lambda: _running(sim, 1000))
        results = await asyncio.gather(*tasks)
    assert all(len(times) == 5 for times in results)
    snapshot = sim.engine.snapshot()
    assert snapshot.finished["length"] == 1000
    assert snapshot.generation_tokens_total == 4000


async def _waiting(sim: Any, count: int) -> bool:
    return bool(sim.engine.snapshot().waiting == count)


async def _running(sim: Any, count: int) -> bool:
    return bool(sim.engine.snapshot().running == count)
