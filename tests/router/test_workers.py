"""`llmops router serve --workers 2`: one port, one router, whichever process answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import StartSim, router_config, running
from tests.router.test_resilience_failover import CHAT

HEALTH_INTERVAL_S = 0.25


@contextlib.asynccontextmanager
async def workers_router(config: Path, workers: int) -> AsyncIterator[tuple[str, list[int]]]:
    """The supervisor in a child process; yields the router's URL and its workers' pids."""
    process = subprocess.Popen(
        [sys.executable, "-m", "llmops", "router", "serve", "--config", str(config), "--port", "0",
         "--workers", str(workers), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
        assert f"with {workers} workers" in line, line
        pids = [int(pid) for pid in re.findall(r"\d+", line.rsplit("(pids", 1)[1])]
        yield line.split(" on ", 1)[1].split(" ", 1)[0], pids
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


async def fresh_post(url: str, body: dict[str, object]) -> int:
    """A request on a new connection, so the kernel may hand it to any worker."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=body) as response,
    ):
        await response.read()
        return response.status


async def health_probes(http: aiohttp.ClientSession, sim_url: str) -> int:
    async with http.get(f"{sim_url}/sim/stats") as response:
        return int((await response.json())["by_path"].get("/health", 0))


@pytest.mark.timeout(120)
async def test_two_workers_answer_as_one_router(
    start_sim: StartSim, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    a, b = await start_sim(model="m"), await start_sim(model="m")
    config = tmp_path / "router.yaml"
    health = {"interval": HEALTH_INTERVAL_S, "timeout": 1, "failure_threshold": 2}
    config.write_text(
        yaml.safe_dump(router_config([("m", a.url), ("m", b.url)], health_check=health))
    )
    async with workers_router(config, 2) as (url, _pids):
        statuses = await asyncio.gather(*(fresh_post(url, CHAT) for _ in range(40)))
        assert statuses == [200] * 40

        async with http.get(f"{url}/metrics") as response:
            metrics = await response.text()
        served = {
            worker: sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith(f'llmops_router_requests_total{{worker="{worker}"')
            )
            for worker in ("0", "1")
        }
        assert sum(served.values()) == 40
        assert all(count > 0 for count in served.values()), served  # both processes served

        for _ in range(3):  # whichever worker answers /status speaks for both
            async with http.get(f"{url}/status") as response:
                status = await response.json()
            assert status["router"]["workers"] == 2
            assert status["totals"]["requests"] == 40
            assert sum(backend["requests"] for backend in status["backends"]) == 40

        # Only one worker probes: the backends see one router's health checks, not two.
        before = await health_probes(http, a.url)
        await asyncio.sleep(10 * HEALTH_INTERVAL_S)
        probes = await health_probes(http, a.url) - before
        assert 5 <= probes <= 14, probes  # ~10 for one router; ~20 if both probed

        # A drain sent to one worker applies to all of them.
        backend_a = f"m@{a.url.removeprefix('http://')}"
        async with http.post(f"{url}/admin/backends/{backend_a}/drain") as response:
            assert response.status == 200
        async with http.get(f"{a.url}/sim/stats") as response:
            before = (await response.json())["requests"]
        statuses = await asyncio.gather(*(fresh_post(url, CHAT) for _ in range(20)))
        assert statuses == [200] * 20
        async with http.get(f"{a.url}/sim/stats") as response:
            assert (await response.json())["requests"] == before


@pytest.mark.timeout(120)
async def test_without_redis_each_worker_enforces_its_share_of_a_limit(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = await start_sim(model="m")
    config = tmp_path / "router.yaml"
    entry = {"model_name": "m", "litellm_params": {"api_base": f"{sim.url}/v1", "rpm_limit": 10}}
    config.write_text(yaml.safe_dump(router_config([entry], limits={"wait_s": 0})))
    async with workers_router(config, 2) as (url, _pids):
        statuses = await asyncio.gather(*(fresh_post(url, CHAT) for _ in range(40)))
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) <= 10  # two workers, 5 each: the limit holds for the router
    assert statuses.count(200) >= 6


@pytest.mark.timeout(120)
async def test_a_worker_that_dies_is_replaced_and_the_port_answers_again(
    start_sim: StartSim, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Connections the kernel had already queued on the dead worker's socket are lost (a
    limit of SO_REUSEPORT); once the supervisor has started a new worker, all is served."""
    sim = await start_sim(model="m")
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(router_config([("m", sim.url)])))
    async with workers_router(config, 2) as (url, pids):
        os.kill(pids[1], signal.SIGKILL)
        while running(pids[1]):  # gone (or a zombie) before asking who answers
            await asyncio.sleep(0.01)
        workers = 0
        for _ in range(100):
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as fresh, fresh.get(f"{url}/status") as response:
                    workers = (await response.json())["router"]["workers"]
            if workers == 2:
                break
            await asyncio.sleep(0.1)
        assert workers == 2  # a new worker 1 answers its peers again
        statuses = await asyncio.gather(*(fresh_post(url, CHAT) for _ in range(30)))
        assert statuses == [200] * 30
