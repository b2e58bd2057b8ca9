"""Rate limits through a real router in front of real sims: RPM, TPM, per key, waiting."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson

from llmops.openai import SSEParser
from tests.conftest import StartRouter, StartSim, router_config

CHAT = {"model": "m", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 4}


def limited_backend(sim_url: str, **params: object) -> dict[str, object]:
    return {"model_name": "m", "litellm_params": {"api_base": f"{sim_url}/v1", **params}}


async def sim_requests(http: aiohttp.ClientSession, sim_url: str) -> int:
    async with http.get(f"{sim_url}/sim/stats") as response:
        return int((await response.json())["requests"])


async def post(
    http: aiohttp.ClientSession, url: str, body: dict[str, object], key: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def test_backend_rpm_limit_holds_per_window_then_429_with_headers(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m", ttft_ms=1, itl_ms=1)
    limits = {"window_s": 2.0, "wait_s": 0}
    url = await start_router(router_config([limited_backend(sim.url, rpm_limit=5)], limits=limits))
    results = await asyncio.gather(*(post(http, url, CHAT) for _ in range(12)))
    statuses = sorted(status for status, _h, _b in results)
    assert statuses == [200] * 5 + [429] * 7
    assert await sim_requests(http, sim.url) == 5  # refused requests never reach the engine
    _status, headers, body = next(r for r in results if r[0] == 429)
    error = orjson.loads(body)["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert 1 <= int(headers["Retry-After"]) <= 3
    assert headers["x-ratelimit-limit-requests"] == "5"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-scope"] == "backend"

    async with http.get(f"{url}/status") as response:
        backend = (await response.json())["backends"][0]
    assert backend["rpm"] == {"limit": 5, "used": 5}

    await asyncio.sleep(float(headers["x-ratelimit-reset-requests"].removesuffix("s")) + 0.05)
    assert (await post(http, url, CHAT))[0] == 200  # the window moved on


async def test_excess_goes_to_the_backend_with_room_and_waits_when_all_are_full(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    small, big = [await start_sim(model="m", ttft_ms=1, itl_ms=1) for _ in range(2)]
    config = router_config(
        [limited_backend(small.url, rpm_limit=3), limited_backend(big.url, rpm_limit=6)],
        limits={"window_s": 1.0, "wait_s": 1.5},
        routing={"strategy": "simple-shuffle"},
    )
    url = await start_router(config)
    started = time.monotonic()
    statuses = [(await post(http, url, CHAT))[0] for _ in range(12)]
    elapsed = time.monotonic() - started
    assert statuses == [200] * 12  # 9 fit the first window; 3 waited for the next one
    assert elapsed > 0.5
    assert await sim_requests(http, small.url) <= 6
    assert await sim_requests(http, big.url) >= 6


async def test_key_rpm_limits_each_api_key_separately(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m", ttft_ms=1, itl_ms=1)
    config = router_config(
        [("m", sim.url)],
        auth={"tokens": ["alice", "bob"]},
        limits={"key_rpm": 3, "window_s": 5.0, "wait_s": 0},
    )
    url = await start_router(config)
    alice = [(await post(http, url, CHAT, "alice"))[0] for _ in range(5)]
    bob = [(await post(http, url, CHAT, "bob"))[0] for _ in range(3)]
    assert alice == [200, 200, 200, 429, 429]
    assert bob == [200, 200, 200]
    _status, headers, _body = await post(http, url, CHAT, "alice")
    assert headers["x-ratelimit-scope"] == "key"
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    assert 'llmops_router_ratelimit_decisions_total{decision="limited",scope="key"} 3.0' in text


async def read_stream(
    http: aiohttp.ClientSession, url: str, body: dict[str, object]
) -> tuple[int, list[bytes]]:
    parser = SSEParser()
    payloads: list[bytes] = []
    async with http.post(f"{url}/v1/chat/completions", json=body) as response:
        async for chunk in response.content.iter_any():
            payloads.extend(parser.feed(chunk))
        return response.status, payloads


async def test_tpm_counts_reported_usage_and_hides_the_usage_chunk_it_asked_for(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m", ttft_ms=1, itl_ms=1)
    url = await start_router(
        router_config(
            [limited_backend(sim.url, tpm_limit=40)], limits={"window_s": 30.0, "wait_s": 0}
        )
    )
    stream = {**CHAT, "stream": True, "max_tokens": 10, "ignore_eos": True}
    status, payloads = await read_stream(http, url, stream)
    assert status == 200 and payloads[-1] == b"[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert all("usage" not in c or c["usage"] is None for c in chunks)  # not asked: not shown
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == 10

    asked = {**stream, "stream_options": {"include_usage": True}}
    status, payloads = await read_stream(http, url, asked)
    usage = orjson.loads(payloads[-2])["usage"]  # asked: passed through untouched
    assert usage["completion_tokens"] == 10

    # Two streams of 3 + 10 tokens each = 26 < 40; one more non-streaming request (3 + 4)
    # makes 33; the next one still starts (33 < 40) and brings it to 40: then 429.
    statuses = [(await post(http, url, CHAT))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    _s, headers, _b = await post(http, url, CHAT)
    assert headers["x-ratelimit-limit-tokens"] == "40"


async def test_key_tpm_counts_each_keys_tokens(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m", ttft_ms=1, itl_ms=1)
    config = router_config(
        [("m", sim.url)],
        auth={"tokens": ["alice", "bob"]},
        limits={"key_tpm": 15, "window_s": 30.0, "wait_s": 0},
    )
    url = await start_router(config)
    # Each request uses 3 prompt + 4 completion tokens: 0, 7 and 14 used are under 15.
    alice = [(await post(http, url, CHAT, "alice"))[0] for _ in range(4)]
    assert alice == [200, 200, 200, 429]
    stream = {**CHAT, "stream": True, "ignore_eos": True}
    assert (await post(http, url, stream, "bob"))[0] == 200  # streams count too
    assert (await post(http, url, {**CHAT, "max_tokens": 8}, "bob"))[0] == 200  # 7 + 11 = 18
    status, headers, _body = await post(http, url, CHAT, "bob")
    assert status == 429 and headers["x-ratelimit-limit-tokens"] == "15"
    assert headers["x-ratelimit-scope"] == "key"
