"""`up`, `status`, `logs`, `restart` and `stop` against two real sshd nodes running `llmops sim`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import aiohttp
import yaml
from deploy_lab import (
    SshLab,
    free_port,
    live_group_members,
    pids,
    port_free,
    run,
    states,
    write_spec,
)
from typer.testing import CliRunner

from llmops.cli import app
from llmops.config import load_router_config


async def test_up_is_idempotent_restarts_only_changed_and_stop_leaves_nothing(
    ssh_lab: SshLab, tmp_path: Path
) -> None:
    n1, n2 = (n.address for n in ssh_lab.nodes)
    port_a, port_b = free_port(), free_port()
    models = [
        # Node 1 has 1 GPU (auto), node 2 has 2: replica 0 goes to node 2, replica 1 to node 1.
        {
            "name": "alpha",
            "model": "/models/alpha",
            "replicas": 2,
            "port": port_a,
            "ready_timeout_s": 30,
        },
        # root's .bashrc puts pyenv's python first on PATH, so name the stand-in by its path.
        {
            "name": "beta",
            "model": "/models/beta",
            "engine": "sglang",
            "port": port_b,
            "nodes": [n2],
            "command": str(ssh_lab.standin_dir / "python"),
            "ready_timeout_s": 30,
        },
    ]
    spec_path = write_spec(ssh_lab, tmp_path, models, internal_port_base=free_port())
    try:
        first = await run(spec_path, "up")
        assert not first.errors, [str(e) for e in first.errors]
        names = [f"alpha-{n2}-0", f"alpha-{n1}-0", f"beta-{n2}-0"]
        assert sorted(first.outcomes) == sorted(names)
        assert all(o.ready for o in first.outcomes.values())
        assert set(states(first).values()) == {"ready"}
        started = pids(first)

        # The stand-in engines saw exactly the planned command lines and environments.
        plan = first.plan
        for instance in plan.instances:
            dump = json.loads(
                (ssh_lab.dump_dir / f"{instance.address}-{instance.port}.json").read_text()
            )
            # argv[0] of a script is the path the kernel found; the rest is exactly as planned.
            assert Path(dump["argv"][0]).name == Path(instance.argv[0]).name
            assert dump["argv"][1:] == list(instance.argv[1:])
            assert dump["env"]["CUDA_VISIBLE_DEVICES"] == instance.env["CUDA_VISIBLE_DEVICES"]
        beta = next(i for i in plan.instances if i.model == "beta")
        assert beta.argv[1:3] == ("-m", "sglang.launch_server") and "--nccl-port" in beta.argv

        # The router backend file lists every ready instance and the router accepts it.
        backend_file = tmp_path / "backends" / "self_deployed_config.yaml"
        written = yaml.safe_load(backend_file.read_text())
        assert sorted(e["litellm_params"]["api_base"] for e in written["model_list"]) == sorted(
            f"http://{i.address}:{i.port}/v1" for i in plan.instances
        )
        assert all(e["litellm_params"]["weight"] == 1 for e in written["model_list"])
        router_yaml = tmp_path / "router.yaml"
        router_yaml.write_text(
            yaml.safe_dump(
                {"backends": {"config_dir": "backends", "enabled_sources": ["self_deployed"]}}
            )
        )
        loaded = load_router_config(router_yaml)
        assert sorted(b.id for b in loaded.backends) == sorted(i.backend_id for i in plan.instances)
        check = CliRunner().invoke(app, ["router", "check", "--config", str(router_yaml)])
        assert check.exit_code == 0, check.output
        assert "3 backend(s)" in check.output

        # The deployed engines answer through their recorded addresses.
        async with aiohttp.ClientSession() as http:
            for instance in plan.instances:
                body = {"model": instance.model, "prompt": "hi", "max_tokens": 2}
                async with http.post(f"{instance.api_base}/completions", json=body) as response:
                    assert response.status == 200
                    assert (await response.json())["usage"]["completion_tokens"] == 2

        written = backend_file.stat().st_ino
        second = await run(spec_path, "up")
        assert not second.errors
        assert set(states(second).values()) == {"ready"}
        actions = {e["instance"]: e["action"] for e in second.events if "action" in e}
        assert actions == dict.fromkeys(names, "unchanged")
        assert pids(second) == started
        assert backend_file.stat().st_ino == written  # not rewritten: the router does not reload

        # Change alpha's args: only alpha's instances restart.
        models[0]["extra_args"] = ["--enable-prefix-caching"]
        spec_path = write_spec(
            ssh_lab, tmp_path, models, internal_port_base=plan.instances[0].internal_port
        )
        third = await run(spec_path, "up")
        assert not third.errors, [str(e) for e in third.errors]
        actions = {e["instance"]: e["action"] for e in third.events if "action" in e}
        assert actions == {names[0]: "restarted", names[1]: "restarted", names[2]: "unchanged"}
        restarted = pids(third)
        assert restarted[names[2]] == started[names[2]]
        assert restarted[names[0]] != started[names[0]] and restarted[names[1]] != started[names[1]]
        assert not live_group_members(started[names[0]])  # the old process group is gone

        rows, status_result = await run(spec_path, "status")
        assert not status_result.errors
        assert [
            (r["instance"], r["running"], r["ready"], r["current"], r["health"]) for r in rows
        ] == [(name, True, True, True, 200) for name in names]
        assert rows[0]["metrics"]["running"] == 0
        assert [r["gpu_mib"] for r in rows] == [1000, 1000, 1000]  # nvidia-smi's per-process memory

        found, _ = await run(spec_path, "logs", [names[2]], lines=5)
        assert [f["instance"] for f in found] == [names[2]]
        assert "llmops sim: serving beta (sglang)" in found[0]["log"]

        # Restarting one instance by name touches only that one.
        again = await run(spec_path, "restart", [names[2]])
        assert not again.errors, [str(e) for e in again.errors]
        assert {e["instance"]: e["action"] for e in again.events if "action" in e} == {
            names[2]: "restarted"
        }
        assert again.outcomes[names[2]].ready
        restarted = {**restarted, **pids(again)}
        assert len(yaml.safe_load(backend_file.read_text())["model_list"]) == 3  # others probed
    finally:
        stopped = await run(spec_path, "stop")
    assert not stopped.errors, [str(e) for e in stopped.errors]
    assert {e["instance"]: e["action"] for e in stopped.events if "action" in e} == dict.fromkeys(
        names, "stopped"
    )
    assert all(e["port_free"] for e in stopped.events)
    for name, pid in {**started, **restarted}.items():
        assert not live_group_members(pid), name
    for instance in plan.instances:
        assert port_free(instance.address, instance.port)
    assert yaml.safe_load(backend_file.read_text())["model_list"] == []
    state_files = sorted(p.name for p in (tmp_path / "state" / "t").rglob("*"))
    assert "state.json" not in state_files and "engine.log" in state_files
    env_files = list((tmp_path / "state" / "t").rglob("env.json"))
    assert env_files and all(os.stat(p).st_mode & 0o777 == 0o600 for p in env_files)


def member_pids(pgid: int) -> list[str]:
    return [line.split()[0] for line in live_group_members(pgid)]


async def test_crashed_engine_restarts_removed_instance_stops_and_stubborn_workers_get_sigkill(
    ssh_lab: SshLab, tmp_path: Path
) -> None:
    n1, n2 = (n.address for n in ssh_lab.nodes)
    model = {
        "name": "alpha",
        "model": "/m",
        "replicas": 2,
        "port": free_port(),
        "env": {"STANDIN_STUBBORN_CHILD": "1"},  # a worker that ignores SIGTERM
        "ready_timeout_s": 30,
    }
    spec_path = write_spec(ssh_lab, tmp_path, [model], stop_timeout_s=0.5)
    first = await run(spec_path, "up")
    assert not first.errors, [str(e) for e in first.errors]
    started = pids(first)
    kept, removed = f"alpha-{n2}-0", f"alpha-{n1}-0"
    try:
        crashed = started[kept]
        os.kill(crashed, signal.SIGKILL)  # the engine crashes; its worker lives on
        deadline = time.monotonic() + 10
        while str(crashed) in member_pids(crashed) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert str(crashed) not in member_pids(crashed) and member_pids(crashed)
        rows, _ = await run(spec_path, "status")
        assert [(r["instance"], r["running"]) for r in rows] == [(kept, False), (removed, True)]

        model["replicas"] = 1  # and the plan drops the instance on node 1
        spec_path = write_spec(ssh_lab, tmp_path, [model], stop_timeout_s=0.5)
        second = await run(spec_path, "up")
        assert not second.errors, [str(e) for e in second.errors]
        actions = {e["instance"]: e["action"] for e in second.events if "action" in e}
        assert actions == {removed: "removed", kept: "started"}
        assert not member_pids(crashed)  # the orphaned worker was ended before the new start
        assert not member_pids(started[removed])  # SIGTERM ignored: SIGKILL got the worker
        written = yaml.safe_load((tmp_path / "backends" / "self_deployed_config.yaml").read_text())
        assert [e["litellm_params"]["api_base"] for e in written["model_list"]] == [
            second.plan.instances[0].api_base
        ]
    finally:
        stopped = await run(spec_path, "stop")
    assert not stopped.errors
    assert all(not live_group_members(pid) for pid in pids(second).values())


async def test_instances_that_swap_ports_are_all_stopped_before_any_starts(
    ssh_lab: SshLab, tmp_path: Path
) -> None:
    n2 = ssh_lab.nodes[1].address
    low = free_port(n2)
    models = [
        {"name": "x", "model": "/x", "port": low, "nodes": [n2], "ready_timeout_s": 30},
        {"name": "y", "model": "/y", "port": low + 1, "nodes": [n2], "ready_timeout_s": 30},
    ]
    spec_path = write_spec(ssh_lab, tmp_path, models)
    try:
        first = await run(spec_path, "up")
        assert not first.errors, [str(e) for e in first.errors]
        models[0]["port"], models[1]["port"] = low + 1, low
        spec_path = write_spec(ssh_lab, tmp_path, models)
        second = await run(spec_path, "up")
        assert not second.errors, [str(e) for e in second.errors]
        assert {i.name: i.port for i in second.plan.instances} == {
            f"x-{n2}-0": low + 1,
            f"y-{n2}-0": low,
        }
        assert all(o.ready for o in second.outcomes.values())
    finally:
        stopped = await run(spec_path, "stop")
    assert not stopped.errors
