"""Limits shared by two routers through a real redis-server; local limits when it goes away."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from tests.conftest import StartRouter, StartSim, require_binary, router_config, router_process
from tests.router.test_limits_router import CHAT, limited_backend, post, sim_requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = aioredis.Redis.from_url(self.url)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    await client.ping()
                    return
                except (aioredis.ConnectionError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer(require_binary("redis-server", "/usr/bin/redis-server"))
    await server.start()
    try:
        yield server
    finally:
        server.stop()


async def status(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(f"{url}/status") as response:
        return await response.json()


async def test_two_routers_sharing_redis_enforce_one_key_limit(
    start_sim: StartSim,
    start_router: StartRouter,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    sim = await start_sim(model="m", ttft_ms=1, itl_ms=1)
    config = router_config(
        [("m", sim.url)],
        auth={"tokens": ["alice"]},
        limits={"redis_url": redis_server.url, "key_rpm": 6, "window_s": 30.0, "wait_s": 0},
    )
    first, second = await start_router(config), await start_router(config)
    statuses = await asyncio.gather(
        *(post(http, url, CHAT, "alice") for url in (first, second) for _ in range(8))
    )
    codes = [s for s, _h, _b in statuses]
    assert codes.count(200) == 6 and codes.count(429) == 10  # one limit, not two
    assert await sim_requests(http, sim.url) == 6
    async with http.get(f"{first}/metrics") as response:
        assert "llmops_router_ratelimit_shared 1.0" in await response.text()


async def test_backend_rpm_is_shared_and_redis_loss_falls_back_to_local_limits(
    start_sim: StartSim,
    start_router: StartRouter,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    sim = await start_sim(model="m", ttft_ms=1, itl_ms=1)
    config = router_config(
        [limited_backend(sim.url, rpm_limit=4)],
        limits={
            "redis_url": redis_server.url,
            "window_s": 30.0,
            "redis_timeout_s": 0.5,
            "wait_s": 0,
        },
    )
    first, second = await start_router(config), await start_router(config)
    codes = [(await post(http, url, CHAT))[0] for url in (first, second, first, second) * 2]
    assert codes == [200] * 4 + [429] * 4

    redis_server.stop()
    # Each router now counts on its own: 4 more each (its local window already holds 2).
    local = [(await post(http, url, CHAT))[0] for url in (first, second) for _ in range(3)]
    assert local == [200, 200, 429, 200, 200, 429]
    events = (await status(http, first))["events"]
    assert any("Redis unreachable" in e["message"] and e["level"] == "warning" for e in events)
    async with http.get(f"{first}/metrics") as response:
        assert "llmops_router_ratelimit_shared 0.0" in await response.text()


async def test_shared_limits_come_back_with_redis(
    start_sim: StartSim,
    start_router: StartRouter,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    sim = await start_sim(model="m", ttft_ms=1, itl_ms=1)
    limits = {"redis_url": redis_server.url, "key_rpm": 100, "window_s": 30.0, "wait_s": 0}
    url = await start_router(router_config([("m", sim.url)], limits=limits))
    assert (await post(http, url, CHAT))[0] == 200
    redis_server.stop()
    assert (await post(http, url, CHAT))[0] == 200  # served on local limits
    await redis_server.start()
    await asyncio.sleep(1.1)  # the first pause before Redis is tried again
    assert (await post(http, url, CHAT))[0] == 200
    messages = [e["message"] for e in (await status(http, url))["events"]]
    assert any("Redis unreachable" in m for m in messages)
    assert "reachable again" in messages[-1]
    async with http.get(f"{url}/metrics") as response:
        assert "llmops_router_ratelimit_shared 1.0" in await response.text()


async def test_two_router_processes_enforce_one_backend_rpm(
    start_sim: StartSim, http: aiohttp.ClientSession, redis_server: RedisServer, tmp_path: Path
) -> None:
    sim = await start_sim(model="m", ttft_ms=1, itl_ms=1)
    limits = {"redis_url": redis_server.url, "window_s": 60.0, "wait_s": 0}
    config = tmp_path / "router.yaml"
    config.write_text(
        yaml.safe_dump(router_config([limited_backend(sim.url, rpm_limit=60)], limits=limits))
    )
    async with router_process(config) as (_, first), router_process(config) as (_, second):
        urls = [first, second]
        results = await asyncio.gather(*(post(http, urls[i % 2], CHAT) for i in range(90)))
        events = [(await status(http, url))["events"] for url in urls]  # why, if it fails
    codes = [status for status, _h, _b in results]
    assert codes.count(200) == 60 and codes.count(429) == 30, events  # 60, not 2 x 60
    assert await sim_requests(http, sim.url) == 60
