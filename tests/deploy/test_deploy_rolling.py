"""`restart --rolling` through a real router: drain, restart, wait ready, undrain, one at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from deploy_lab import SshLab, free_port, live_group_members, pids, run, write_spec

from llmops.deploy.router_admin import RouterAdmin


async def test_rolling_restart_drains_each_backend_and_traffic_keeps_flowing(
    ssh_lab: SshLab, tmp_path: Path, start_router: Any, http: aiohttp.ClientSession
) -> None:
    models = [
        {"name": "alpha", "model": "/m", "replicas": 2, "port": free_port(), "ready_timeout_s": 30}
    ]
    spec_path = write_spec(ssh_lab, tmp_path, models)
    try:
        first = await run(spec_path, "up")
        assert not first.errors, [str(e) for e in first.errors]
        before = pids(first)
        url = await start_router(
            {
                "backends": {"config_dir": "backends", "enabled_sources": ["self_deployed"]},
                "health_check": {"interval": 0.2, "timeout": 1, "success_threshold": 1},
            }
        )
        ids = [i.backend_id for i in first.plan.instances]

        failures: list[int] = []
        sent = 0
        stop_traffic = asyncio.Event()

        async def traffic() -> None:
            nonlocal sent
            body = {"model": "alpha", "prompt": "hello there", "max_tokens": 2}
            while not stop_traffic.is_set():
                async with http.post(f"{url}/v1/completions", json=body) as response:
                    await response.read()
                    sent += 1
                    if response.status != 200:
                        failures.append(response.status)
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(traffic())
        try:
            async with RouterAdmin(url, None) as admin:
                restarted = await run(spec_path, "restart", rolling=True, drain=admin)
        finally:
            stop_traffic.set()
            await sender
        assert not restarted.errors, [str(e) for e in restarted.errors]
        after = pids(restarted)
        assert set(after) == set(before) and all(after[n] != before[n] for n in before)
        assert all(not live_group_members(pid) for pid in before.values())
        assert sent > 10 and failures == []  # one backend always served while the other restarted

        async with http.get(f"{url}/status") as response:
            status = await response.json()
        operator = [
            (e["backend"], e["message"].rsplit(" by ", 1)[0].split()[-1])
            for e in status["events"]
            if "by an operator" in e["message"]
        ]
        assert operator == [
            (ids[0], "drained"),
            (ids[0], "undrained"),
            (ids[1], "drained"),
            (ids[1], "undrained"),
        ]
        assert {b["id"]: b["state"] for b in status["backends"]} == dict.fromkeys(ids, "healthy")

        # A router that cannot drain an instance: the rolling restart takes nothing down.
        unaware = await start_router({"model_list": []})
        async with RouterAdmin(unaware, None) as admin:
            refused = await run(spec_path, "restart", rolling=True, drain=admin)
        first_name = first.plan.instances[0].name
        (error,) = refused.errors
        assert str(error).startswith(
            f"node {first.plan.instances[0].node}, instance {first_name}: "
            f"router drain of {ids[0]} answered 404"
        )
        assert [o.state for o in refused.outcomes.values()] == ["failed", "skipped"]
        rows, _ = await run(spec_path, "status")
        assert {r["instance"]: (r["pid"], r["ready"]) for r in rows} == {
            name: (pid, True) for name, pid in after.items()
        }
    finally:
        stopped = await run(spec_path, "stop")
    assert not stopped.errors
