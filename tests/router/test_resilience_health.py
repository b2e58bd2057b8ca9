"""Health checks, ejection, hot reload, drain and graceful shutdown, against real sims."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from llmops.sim import SimOptions, running_sim
from tests.conftest import StartRouter, StartSim, router_config, router_process
from tests.router.test_resilience_failover import CHAT, read_stream, set_mode, stats, token_text

FAST_HEALTH = {"interval": 0.2, "timeout": 0.3, "failure_threshold": 2, "success_threshold": 1}


async def backend_states(http: aiohttp.ClientSession, url: str) -> dict[str, str]:
    async with http.get(f"{url}/status") as response:
        return {b["id"]: b["state"] for b in (await response.json())["backends"]}


async def wait_for_state(
    http: aiohttp.ClientSession, url: str, backend_id: str, state: str, within_s: float
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if (await backend_states(http, url)).get(backend_id) == state:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"{backend_id} not {state} within {within_s}s: {await backend_states(http, url)}"
    )


def backend_id(sim_url: str, model: str = "m") -> str:
    return f"{model}@{sim_url.removeprefix('http://')}"


class SteadyLoad:
    """Non-streaming requests from a few concurrent clients, counting every outcome."""

    def __init__(self, http: aiohttp.ClientSession, url: str, clients: int = 4) -> None:
        self.http, self.url = http, url
        self.statuses: list[int] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client()) for _ in range(clients)]

    async def _client(self) -> None:
        while not self._stop.is_set():
            async with self.http.post(f"{self.url}/v1/chat/completions", json=CHAT) as response:
                await response.read()
                self.statuses.append(response.status)

    async def stop(self) -> list[int]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.statuses


async def test_a_killed_sim_is_marked_unhealthy_without_failing_requests_and_rejoins(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    steady = [await start_sim(model="m", itl_ms=2) for _ in range(2)]
    victim_cm = running_sim(SimOptions(port=0, model="m", itl_ms=2))
    victim = await victim_cm.__aenter__()
    url = await start_router(
        router_config([("m", s.url) for s in (*steady, victim)], health_check=FAST_HEALTH)
    )
    load = SteadyLoad(http, url)
    await asyncio.sleep(0.5)
    await victim_cm.__aexit__(None, None, None)
    took = await wait_for_state(http, url, backend_id(victim.url), "unhealthy", within_s=3)
    assert took <= 0.2 * 2 + 0.3 + 0.5  # interval * threshold (+ probe timeout, + polling)
    async with running_sim(SimOptions(port=victim.port, model="m", itl_ms=2)) as revived:
        await wait_for_state(http, url, backend_id(victim.url), "healthy", within_s=3)
        await asyncio.sleep(0.5)
        statuses = await load.stop()
        assert (await stats(http, revived.url))["requests"] > 0  # used again
    assert len(statuses) > 50
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}


async def test_a_hung_sim_fails_over_after_the_ttfb_timeout(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    hung, good = await start_sim(model="m"), await start_sim(model="m")
    url = await start_router(
        router_config(
            [("m", hung.url), ("m", good.url)],
            timeouts={"ttfb": 0.3},
            health_check={**FAST_HEALTH, "interval": 30},
        )
    )
    await set_mode(http, hung.url, "hang")
    started = time.monotonic()
    for _ in range(6):
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
            assert response.status == 200
    assert time.monotonic() - started < 6 * 0.3 + 2  # no request waits forever


async def test_400s_never_eject_but_500s_do_and_a_trial_brings_it_back(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(
        router_config(
            [("m", sim.url)],
            routing={"num_retries": 0},
            circuit_breaker={"failure_threshold": 3, "cooldown": 0.5},
        )
    )
    me = backend_id(sim.url)
    for _ in range(10):
        async with http.post(f"{url}/v1/chat/completions", json={"model": "m"}) as response:
            assert response.status == 400
    assert (await backend_states(http, url))[me] == "healthy"

    await set_mode(http, sim.url, "error")
    for _ in range(3):
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
            assert response.status == 500
    assert (await backend_states(http, url))[me] == "ejected"
    async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
        assert response.status == 503  # ejected: not even tried
    assert (await stats(http, sim.url))["requests"] == 13

    await asyncio.sleep(0.6)
    async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
        assert response.status == 500  # the half-open trial fails: ejected again
    assert (await backend_states(http, url))[me] == "ejected"
    await set_mode(http, sim.url, "ok")
    await asyncio.sleep(0.6)
    async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
        assert response.status == 200  # the trial passes: closed again
    assert (await backend_states(http, url))[me] == "healthy"


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Write atomically, the way editors and deploy tools replace files."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    os.replace(tmp, path)


async def test_editing_the_config_adds_and_removes_backends_with_zero_failures(
    start_sim: StartSim, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    from llmops.router.app import router_url, running_router

    first, second = await start_sim(model="m", itl_ms=2), await start_sim(model="m", itl_ms=2)
    config = tmp_path / "router.yaml"
    write_config(config, router_config([("m", first.url)], health_check=FAST_HEALTH))
    async with running_router(config, "127.0.0.1", 0) as runner:
        url = router_url(runner)
        load = SteadyLoad(http, url)
        await asyncio.sleep(0.3)
        write_config(
            config, router_config([("m", first.url), ("m", second.url)], health_check=FAST_HEALTH)
        )
        await wait_for_state(http, url, backend_id(second.url), "healthy", within_s=4)
        await asyncio.sleep(0.3)
        write_config(config, router_config([("m", second.url)], health_check=FAST_HEALTH))
        for _ in range(80):
            if backend_id(first.url) not in await backend_states(http, url):
                break
            await asyncio.sleep(0.05)
        requests_to_first = (await stats(http, first.url))["requests"]
        await asyncio.sleep(0.5)
        assert (await stats(http, first.url))[
            "requests"
        ] == requests_to_first  # removed: no new work
        config.write_text("model_list: [{model_name: m, litellm_params: {api_bse: oops}}]\n")
        await asyncio.sleep(1.5)
        statuses = await load.stop()
        async with http.get(f"{url}/status") as response:
            status = await response.json()
    assert set(statuses) == {200}
    assert (await stats(http, second.url))["requests"] > 0
    assert [b["id"] for b in status["backends"]] == [backend_id(second.url)]  # invalid edit ignored
    assert status["router"]["config_generation"] == 3
    messages = [e["message"] for e in status["events"]]
    assert any("config reload rejected" in m and "api_bse: unknown key" in m for m in messages)


async def test_backend_files_deleted_or_emptied_are_reloaded(
    start_sim: StartSim, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    from llmops.router.app import router_url, running_router

    sim = await start_sim(model="m")
    (tmp_path / "configs").mkdir()
    source = tmp_path / "configs" / "self_deployed_config.yaml"
    write_config(source, router_config([("m", sim.url)]))
    config = tmp_path / "router.yaml"
    write_config(
        config, {"backends": {"config_dir": "configs", "enabled_sources": ["self_deployed"]}}
    )
    async with running_router(config, "127.0.0.1", 0) as runner:
        url = router_url(runner)
        assert list(await backend_states(http, url)) == [backend_id(sim.url)]
        source.write_text("")
        for _ in range(60):
            if not await backend_states(http, url):
                break
            await asyncio.sleep(0.05)
        assert await backend_states(http, url) == {}
        write_config(source, router_config([("m", sim.url)]))
        for _ in range(60):
            if await backend_states(http, url):
                break
            await asyncio.sleep(0.05)
        assert list(await backend_states(http, url)) == [backend_id(sim.url)]
        source.unlink()
        for _ in range(60):
            if not await backend_states(http, url):
                break
            await asyncio.sleep(0.05)
        assert await backend_states(http, url) == {}


async def test_drain_takes_a_backend_out_without_failing_its_streams(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    a, b = await start_sim(model="m", itl_ms=10), await start_sim(model="m", itl_ms=10)
    url = await start_router(
        router_config([("m", a.url), ("m", b.url)], auth={"admin_tokens": ["adm"]})
    )
    admin = {"Authorization": "Bearer adm"}
    streams = [
        asyncio.create_task(
            http.post(
                f"{url}/v1/chat/completions",
                json={**CHAT, "stream": True, "max_tokens": 40, "ignore_eos": True},
            )
        )
        for _ in range(6)
    ]
    responses = await asyncio.gather(*streams)
    async with http.post(f"{url}/admin/backends/{backend_id(a.url)}/drain") as response:
        assert response.status == 401
    async with http.post(
        f"{url}/admin/backends/{backend_id(a.url)}/drain", headers=admin
    ) as response:
        assert response.status == 200
        assert (await response.json())["state"] == "draining"
    before = (await stats(http, a.url))["requests"]
    for _ in range(10):
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
            assert response.status == 200
    assert (await stats(http, a.url))["requests"] == before
    for response in responses:
        events = await read_stream(response)
        response.release()
        assert events[-1] == b"[DONE]"
        assert len(token_text(events)) == 40
    async with http.post(
        f"{url}/admin/backends/{backend_id(a.url)}/undrain", headers=admin
    ) as response:
        assert (await response.json())["state"] == "healthy"
    async with http.post(f"{url}/admin/backends/nope/drain", headers=admin) as response:
        assert response.status == 404


async def test_sigterm_lets_100_in_flight_streams_finish_then_exits_zero(
    start_sim: StartSim, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m", itl_ms=20, max_num_seqs=200)
    config = tmp_path / "router.yaml"
    write_config(config, router_config([("m", sim.url)]))
    async with router_process(config) as (router, url):
        request = {**CHAT, "stream": True, "max_tokens": 50, "ignore_eos": True}

        async def one_stream() -> list[bytes]:
            async with http.post(f"{url}/v1/chat/completions", json=request) as response:
                return await read_stream(response)

        tasks = [asyncio.create_task(one_stream()) for _ in range(100)]
        for _ in range(100):
            if (await stats(http, sim.url))["running"] == 100:
                break
            await asyncio.sleep(0.02)
        router.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks)
        exit_code = await asyncio.to_thread(router.wait, 20)
    assert exit_code == 0
    assert all(events[-1] == b"[DONE]" and len(token_text(events)) == 50 for events in results)
    async with aiohttp.ClientSession() as fresh:
        try:
            await fresh.get(f"{url}/health")
            raise AssertionError("the router still answers after it exited")
        except aiohttp.ClientConnectorError:
            pass
