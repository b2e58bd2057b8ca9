"""One access-log line per request, carrying the request id the backend also saw."""

from __future__ import annotations

import logging

import aiohttp
import orjson
import pytest

from tests.conftest import StartRouter, StartSim, router_config
from tests.router.test_resilience_failover import CHAT, read_stream


async def test_json_access_log_line_per_request(
    start_sim: StartSim,
    start_router: StartRouter,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = await start_sim(model="m", ttft_ms=30)
    url = await start_router(
        router_config([("m", sim.url)], access_log={"enabled": True, "format": "json"})
    )
    caplog.set_level(logging.INFO, logger="llmops.access")
    async with http.post(
        f"{url}/v1/chat/completions", json=CHAT, headers={"x-request-id": "req-1"}
    ) as response:
        assert response.headers["x-request-id"] == "req-1"
        await response.read()
    async with http.post(f"{url}/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        streamed_id = response.headers["x-request-id"]
        await read_stream(response)
    async with http.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "other"}) as response:
        assert response.status == 404  # refused before routing: no backend, no access line

    lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "llmops.access"]
    assert len(lines) == 2
    plain, streamed = lines
    assert plain["request_id"] == "req-1"
    assert plain["model"] == "m"
    assert plain["backend"] == f"m@{sim.url.removeprefix('http://')}"
    assert plain["status"] == 200
    assert plain["retries"] == 0
    assert plain["stream"] is False
    assert streamed["request_id"] == streamed_id
    assert streamed["stream"] is True
    assert 25 <= streamed["ttft_ms"] <= streamed["total_ms"]


async def test_text_access_log_names_retries_and_errors(
    start_sim: StartSim,
    start_router: StartRouter,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = await start_sim(model="m", mode="error")
    url = await start_router(
        router_config([("m", broken.url)], access_log={"enabled": True}, routing={"num_retries": 0})
    )
    caplog.set_level(logging.INFO, logger="llmops.access")
    async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
        assert response.status == 500
    (line,) = [r.getMessage() for r in caplog.records if r.name == "llmops.access"]
    assert " model=m " in line
    assert " status=500 " in line
    assert " retries=0 " in line
    assert line.endswith(" error=http_500")
