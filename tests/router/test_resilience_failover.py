"""Retries, streams that fail mid-way, cancellation and timeouts, against real sims."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import orjson

from llmops.openai import SSEParser
from tests.conftest import StartRouter, StartSim, router_config

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}


async def stats(http: aiohttp.ClientSession, url: str) -> dict[str, int]:
    async with http.get(f"{url}/sim/stats") as response:
        return {k: v for k, v in (await response.json()).items() if isinstance(v, int)}


async def set_mode(http: aiohttp.ClientSession, url: str, mode: str, **extra: object) -> None:
    async with http.post(f"{url}/sim/mode", json={"mode": mode, **extra}) as response:
        assert response.status == 200, await response.text()


async def read_stream(response: aiohttp.ClientResponse) -> list[bytes]:
    parser = SSEParser()
    events: list[bytes] = []
    async for chunk in response.content.iter_any():
        events.extend(parser.feed(chunk))
    return events


def token_text(events: list[bytes]) -> list[str]:
    texts = []
    for event in events:
        if event == b"[DONE]":
            continue
        parsed = orjson.loads(event)
        for choice in parsed.get("choices") or []:
            content = choice.get("delta", {}).get("content")
            if content:
                texts.append(content)
    return texts


async def test_5xx_is_retried_on_another_backend_and_4xx_is_not(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    broken, good = await start_sim(model="m", mode="error"), await start_sim(model="m")
    url = await start_router(
        router_config(
            [("m", broken.url), ("m", good.url)], circuit_breaker={"failure_threshold": 1000}
        )
    )
    for _ in range(12):
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
            assert response.status == 200
    assert (await stats(http, broken.url))["errors"] >= 1  # some requests went there first
    assert (await stats(http, good.url))["completed"] == 12

    before = [(await stats(http, s.url))["requests"] for s in (broken, good)]
    async with http.post(f"{url}/v1/chat/completions", json={"model": "m"}) as response:
        assert response.status == 400
    after = [(await stats(http, s.url))["requests"] for s in (broken, good)]
    assert sum(after) - sum(before) == 1  # a client's mistake is never retried


async def test_the_last_upstream_error_reaches_the_client(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sims = [await start_sim(model="m", mode="error") for _ in range(2)]
    url = await start_router(
        router_config([("m", s.url) for s in sims], routing={"num_retries": 5})
    )
    async with http.post(f"{sims[0].url}/v1/chat/completions", json=CHAT) as direct:
        direct_body = await direct.read()
    async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
        assert response.status == 500
        assert await response.read() == direct_body
    # One try per backend, never twice on the same one, however many retries are allowed.
    assert [(await stats(http, s.url))["requests"] for s in sims] in ([1, 2], [2, 1])


async def test_a_stream_whose_engine_dies_ends_with_an_error_event_and_done(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sims = [await start_sim(model="m", itl_ms=5, abort_after_tokens=5) for _ in range(2)]
    url = await start_router(router_config([("m", s.url) for s in sims]))
    request = {**CHAT, "stream": True, "max_tokens": 50, "ignore_eos": True}
    async with http.post(f"{url}/v1/chat/completions", json=request) as response:
        assert response.status == 200
        events = await read_stream(response)
    assert events[-1] == b"[DONE]"
    error = orjson.loads(events[-2])["error"]
    assert error["type"] == "upstream_error"
    assert len(token_text(events)) == 5  # exactly what the engine produced: nothing replayed
    assert sum([(await stats(http, s.url))["requests"] for s in sims]) == 1


async def test_a_client_that_leaves_a_non_streaming_request_aborts_it(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m", itl_ms=50)
    url = await start_router(router_config([("m", sim.url)]))
    request = {**CHAT, "max_tokens": 200, "ignore_eos": True}
    for _ in range(2):
        async with aiohttp.ClientSession() as client:
            with_timeout = aiohttp.ClientTimeout(total=0.3)
            with contextlib.suppress(TimeoutError):
                await client.post(f"{url}/v1/chat/completions", json=request, timeout=with_timeout)
    for _ in range(100):
        current = await stats(http, sim.url)
        if current["aborted"] == 2:
            break
        await asyncio.sleep(0.05)
    assert current["aborted"] == 2
    assert current["running"] == 0
    async with http.get(f"{url}/metrics") as response:
        assert "llmops_router_cancellations_total 2.0" in await response.text()


async def test_idle_and_total_timeouts_end_streams_with_distinct_errors(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    stalling = await start_sim(model="m", itl_ms=10)
    url = await start_router(
        router_config(
            [("m", stalling.url)],
            timeouts={"idle": 0.3},
            circuit_breaker={"failure_threshold": 1000},
        )
    )
    request = {**CHAT, "stream": True, "max_tokens": 2000, "ignore_eos": True}
    started = time.monotonic()
    async with http.post(f"{url}/v1/chat/completions", json=request) as response:
        parser = SSEParser()
        events: list[bytes] = []
        async for chunk in response.content.iter_any():
            events.extend(parser.feed(chunk))
            if len(events) == 3:
                await set_mode(http, stalling.url, "stall")
    assert events[-1] == b"[DONE]"
    assert orjson.loads(events[-2])["error"]["code"] == "idle_timeout"
    assert time.monotonic() - started < 5
    await set_mode(http, stalling.url, "ok")

    url = await start_router(
        router_config(
            [("m", stalling.url)],
            timeouts={"total": 0.5},
            circuit_breaker={"failure_threshold": 1000},
        )
    )
    async with http.post(f"{url}/v1/chat/completions", json=request) as response:
        events = await read_stream(response)
    assert orjson.loads(events[-2])["error"]["code"] == "total_timeout"
    assert 10 < len(token_text(events)) < 150  # it streamed until the deadline, then stopped
