"""The router's data path against real sims on loopback: forwarding, streaming, errors."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from llmops.openai import SSEParser
from llmops.sim import SimOptions, running_sim
from tests.conftest import StartRouter, StartSim, leave_streams_midway, router_config, serving

CHAT = {"model": "m", "messages": [{"role": "user", "content": "say something"}], "max_tokens": 8}


async def sim_stats(http: aiohttp.ClientSession, sim_url: str) -> dict[str, object]:
    async with http.get(f"{sim_url}/sim/stats") as response:
        return dict(await response.json())


async def test_non_streaming_and_streaming_through_two_sims(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sims = [await start_sim(model="m", ttft_ms=20, itl_ms=15) for _ in range(2)]
    url = await start_router(router_config([("m", s.url) for s in sims]))

    async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["object"] == "chat.completion"
    assert body["usage"]["completion_tokens"] == 8
    assert body["model"] == "m"

    stream_request = {**CHAT, "max_tokens": 12, "stream": True, "ignore_eos": True}
    arrivals: list[float] = []
    payloads: list[bytes] = []
    parser = SSEParser()
    async with http.post(f"{url}/v1/chat/completions", json=stream_request) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        async for chunk in response.content.iter_any():
            for payload in parser.feed(chunk):
                arrivals.append(time.monotonic())
                payloads.append(payload)
    assert payloads[-1] == b"[DONE]"
    tokens = [
        p
        for p in payloads[:-1]
        if orjson.loads(p)["choices"] and orjson.loads(p)["choices"][0]["delta"].get("content")
    ]
    assert len(tokens) == 12
    # Chunks are relayed as the engine makes them (15 ms apart), not in one burst at the end.
    spread = arrivals[-2] - arrivals[1]
    assert spread > 0.5 * 11 * 0.015

    for _ in range(20):
        async with http.post(
            f"{url}/v1/chat/completions", json={**CHAT, "max_tokens": 1}
        ) as response:
            assert response.status == 200
    counts = [int(str((await sim_stats(http, s.url))["requests"])) for s in sims]
    assert all(count >= 3 for count in counts), counts  # both sims get traffic


async def test_models_are_aggregated_and_sorted(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    a, b = await start_sim(model="zeta"), await start_sim(model="alpha")
    url = await start_router(router_config([("zeta", a.url), ("alpha", b.url), ("alpha", a.url)]))
    async with http.get(f"{url}/v1/models") as response:
        assert response.status == 200
        body = await response.json()
    assert [m["id"] for m in body["data"]] == ["alpha", "zeta"]


async def assert_openai_error(
    response: aiohttp.ClientResponse, status: int, code: str | None = None
) -> dict[str, str]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return dict(error)


async def test_bad_requests_get_the_documented_status_and_the_router_keeps_serving(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)], server={"max_body_bytes": 4096}))
    chat = f"{url}/v1/chat/completions"

    async with http.post(chat, data=b"{not json") as response:
        await assert_openai_error(response, 400, "invalid_json")
    async with http.post(chat, data=b"[1, 2]") as response:
        await assert_openai_error(response, 400, "invalid_json")
    async with http.post(chat, json={"messages": []}) as response:
        await assert_openai_error(response, 400, "missing_model")
    async with http.post(chat, json={"model": 42}) as response:
        await assert_openai_error(response, 400, "invalid_model")
    async with http.post(chat, json={**CHAT, "model": "nope"}) as response:
        error = await assert_openai_error(response, 404, "model_not_found")
        assert "nope" in error["message"]
    async with http.get(chat) as response:
        await assert_openai_error(response, 405)
    async with http.post(chat, json={**CHAT, "padding": "x" * 10_000}) as response:
        await assert_openai_error(response, 413, "body_too_large")
    async with http.get(f"{url}/no/such/path") as response:
        await assert_openai_error(response, 404)

    before = int(str((await sim_stats(http, sim.url))["requests"]))
    assert before == 0  # none of the bad requests was forwarded
    async with http.post(chat, json=CHAT) as response:
        assert response.status == 200


async def test_body_limit_is_enforced_while_reading_a_chunked_body(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)], server={"max_body_bytes": 1024}))

    async def endless() -> object:
        for _ in range(10_000):
            yield b"x" * 1024

    async with http.post(f"{url}/v1/chat/completions", data=endless()) as response:
        await assert_openai_error(response, 413, "body_too_large")


async def test_tokens_are_checked_and_replaced_by_the_backend_key(
    start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    seen: list[CIMultiDict[str]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.copy())
        body = await request.read()
        return web.json_response({"echo": orjson.loads(body), "path": request.path_qs})

    app = web.Application()
    app.router.add_post("/v1/{tail:.*}", echo)
    async with serving(app) as backend:
        entry = {
            "model_name": "m",
            "litellm_params": {
                "api_base": f"{backend}/v1",
                "api_key": "backend-key",
                "model": "openai/real-name",
            },
        }
        url = await start_router(
            router_config(
                [entry], auth={"tokens": ["client-token"]}, health_check={"enabled": False}
            )
        )
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
            await assert_openai_error(response, 401, "invalid_api_key")
        async with http.post(
            f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer wrong"}
        ) as response:
            await assert_openai_error(response, 401)
        async with http.post(
            f"{url}/v1/chat/completions?x=1",
            json=CHAT,
            headers={
                "Authorization": "Bearer client-token",
                "X-Custom": "kept",
                "Connection": "keep-alive",
            },
        ) as response:
            assert response.status == 200
            echoed = await response.json()
            assert response.headers["x-request-id"]
    assert len(seen) == 1
    headers = seen[0]
    assert headers["Authorization"] == "Bearer backend-key"
    assert headers["X-Custom"] == "kept"
    assert headers["Host"] == backend.removeprefix("http://")
    assert headers["x-request-id"]
    assert echoed["path"] == "/v1/chat/completions?x=1"
    assert echoed["echo"]["model"] == "real-name"  # aliased to the name the engine serves
    assert echoed["echo"]["messages"] == CHAT["messages"]


async def test_a_backend_that_is_down_at_start_gets_no_traffic(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m")
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    url = await start_router(router_config([("m", dead), ("m", sim.url), ("gone", dead)]))
    for _ in range(10):
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
            assert response.status == 200
    async with http.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "gone"}) as response:
        await assert_openai_error(response, 503, "no_healthy_backend")
    async with http.get(f"{url}/ready") as response:
        assert response.status == 200


async def test_connection_refused_is_retried_elsewhere_then_reported_as_502(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    """Backends that die between health checks: requests fail over, the last error is told."""
    sim = await start_sim(model="m")
    async with contextlib.AsyncExitStack() as doomed:
        urls = [
            (await doomed.enter_async_context(running_sim(SimOptions(port=0, model="m")))).url
            for _ in range(2)
        ]
        url = await start_router(
            router_config(
                [
                    ("m", sim.url),
                    *(("m", u) for u in urls),
                    {
                        "model_name": "solo",
                        "litellm_params": {"api_base": f"{urls[0]}/v1", "model": "openai/m"},
                    },
                ]
            )
        )
    for _ in range(10):
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
            assert response.status == 200
    async with http.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "solo"}) as response:
        error = await assert_openai_error(response, 502, "connect")
        assert f"solo@{urls[0].removeprefix('http://')}" in error["message"]


async def test_a_hung_backend_times_out_with_504(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m", mode="stall")
    url = await start_router(
        router_config([("m", sim.url)], timeouts={"ttfb": 0.3}, routing={"num_retries": 0})
    )
    started = time.monotonic()
    async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
        await assert_openai_error(response, 504, "ttfb_timeout")
    assert time.monotonic() - started < 5


async def test_upstream_4xx_passes_through_unchanged(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)]))
    async with http.post(f"{url}/v1/chat/completions", json={"model": "m"}) as via_router:
        routed = (via_router.status, await via_router.read())
    async with http.post(f"{sim.url}/v1/chat/completions", json={"model": "m"}) as direct:
        assert routed == (direct.status, await direct.read())
    assert routed[0] == 400


async def test_a_client_that_leaves_mid_stream_aborts_the_engine_sequence(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m", itl_ms=20)
    url = await start_router(router_config([("m", sim.url)]))
    request = {**CHAT, "stream": True, "max_tokens": 500, "ignore_eos": True}
    await leave_streams_midway(url, request, times=3)
    for _ in range(100):
        stats = await sim_stats(http, sim.url)
        if stats["aborted"] == 3 and stats["running"] == 0:
            break
        await asyncio.sleep(0.05)
    assert stats["aborted"] == 3
    assert stats["running"] == 0
    async with http.get(f"{sim.url}/metrics") as response:
        metrics = await response.text()
    assert re.search(
        r'vllm:request_success_total\{[^}]*finished_reason="abort"[^}]*\} 3\.0', metrics
    )
    async with http.get(f"{url}/metrics") as response:
        assert "llmops_router_cancellations_total 3.0" in await response.text()


async def test_time_to_first_byte_through_the_router_matches_direct(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m", ttft_ms=80, itl_ms=10)
    url = await start_router(router_config([("m", sim.url)]))

    async def ttft(base: str) -> float:
        started = time.monotonic()
        request = {**CHAT, "stream": True, "max_tokens": 2}
        async with http.post(f"{base}/v1/chat/completions", json=request) as response:
            parser = SSEParser()
            async for chunk in response.content.iter_any():
                for payload in parser.feed(chunk):
                    if b'"content":"' in payload and b'"content":""' not in payload:
                        return time.monotonic() - started
        raise AssertionError("no token")

    direct = sorted([await ttft(sim.url) for _ in range(5)])[2]
    routed = sorted([await ttft(url) for _ in range(5)])[2]
    assert routed - direct < 0.02, (routed, direct)  # medians within a few ms (noisy machine)
