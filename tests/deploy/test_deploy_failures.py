"""Failures name their node and instance while the other nodes deploy; hostile specs stay inert."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_lab import SshLab, free_port, run, write_spec


def written_models(path: Path) -> list[dict[str, object]]:
    return list(yaml.safe_load(path.read_text())["model_list"])


def deploy_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmops", "deploy", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=90,
    )


def test_refused_node_missing_command_taken_port_and_crash_are_named(
    ssh_lab: SshLab, tmp_path: Path
) -> None:
    n1, n2 = (n.address for n in ssh_lab.nodes)
    port, busy_port, refused_port = free_port(), free_port(n2), free_port("127.0.0.3")
    models = [
        {"name": "good", "model": "/m", "port": port, "nodes": [n1], "ready_timeout_s": 30},
        {
            "name": "ghost",
            "model": "/m",
            "port": port,
            "nodes": [n2],
            "command": "vllm-not-installed",
        },
        {"name": "busy", "model": "/m", "port": busy_port, "nodes": [n2]},
        {
            "name": "crashy",
            "model": "/m",
            "port": port + 1,
            "nodes": [n2],
            "env": {"STANDIN_CRASH": "1"},
        },
        {"name": "lost", "model": "/m", "port": port, "nodes": ["127.0.0.3"]},
        {
            "name": "sleepy",
            "model": "/m",
            "port": port + 3,
            "nodes": [n2],
            "env": {"STANDIN_HANG": "1"},
            "ready_timeout_s": 2,
        },
        {"name": "phantom", "model": "/m", "port": port + 2, "nodes": [n2]},
    ]
    # nvidia-smi on node 2 reports GPUs 0-3; the spec claims a GPU 5 as well (phantom gets it).
    spec_path = write_spec(ssh_lab, tmp_path, models, node2_gpus=[0, 1, 2, 3, 5])
    spec = yaml.safe_load(spec_path.read_text())
    spec["nodes"].append({"host": "127.0.0.3", "gpus": 1, "ssh": {"port": refused_port}})
    spec_path.write_text(yaml.safe_dump(spec))
    # What an earlier deploy wrote: the unreachable node's entry must survive this run (it
    # may well be serving), a stale one on a reachable node must not.
    backends = tmp_path / "backends" / "self_deployed_config.yaml"
    backends.parent.mkdir()
    lost_entry = {
        "model_name": "lost",
        "litellm_params": {"api_base": f"http://127.0.0.3:{port}/v1", "weight": 1},
    }
    stale = {"model_name": "old", "litellm_params": {"api_base": f"http://{n1}:1/v1", "weight": 1}}
    backends.write_text(yaml.safe_dump({"model_list": [lost_entry, stale]}))
    with socket.socket() as holder:  # someone else's server on busy's port
        holder.bind((n2, busy_port))
        holder.listen()
        up = deploy_cli("nodes.yaml", cwd=tmp_path)  # `deploy FILE` = `deploy up FILE`
    try:
        assert up.returncode == 1, up.stdout + up.stderr
        assert up.stderr.strip() == "llmops: up: 6 of 7 instances failed"
        out = up.stdout
        assert (
            f"node 127.0.0.3, instance lost-127.0.0.3-0: cannot connect to 127.0.0.3:{refused_port}: "
            "Connection refused" in out
        )
        assert (
            f"node {n2}, instance ghost-{n2}-0: engine command not found: vllm-not-installed" in out
        )
        assert (
            f"node {n2}, instance busy-{n2}-0: port {busy_port} is already taken on the node" in out
        )
        assert f"node {n2}, instance crashy-{n2}-0: engine exited before it was ready" in out
        assert (
            f"node {n2}, instance phantom-{n2}-0: GPU 5 not present (node has [0, 1, 2, 3])" in out
        )
        assert "| stand-in engine: CUDA error: out of memory (simulated crash)" in out  # log tail
        assert f"node {n2}, instance sleepy-{n2}-0: not ready after 2 s" in out  # its own deadline
        assert "| stand-in engine: loading weights (forever)" in out
        assert f"good-{n1}-0: ready" in out
        assert written_models(backends) == [
            {
                "model_name": "good",
                "litellm_params": {"api_base": f"http://{n1}:{port}/v1", "weight": 1},
            },
            lost_entry,
        ]
        assert f"lost: kept http://127.0.0.3:{port}/v1: its node could not be asked" in out
    finally:
        stop = deploy_cli("stop", "nodes.yaml", cwd=tmp_path)
    # Only the unreachable node keeps stop from succeeding; everything else is stopped.
    assert stop.returncode == 1
    assert f"good-{n1}-0: stopped" in stop.stdout
    assert "node 127.0.0.3, instance lost-127.0.0.3-0: cannot connect" in stop.stdout


async def test_hostile_names_paths_args_and_env_run_exactly_as_planned(
    ssh_lab: SshLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n1 = ssh_lab.nodes[0].address
    canary = tmp_path / "pwned"
    evil = f"$(touch {canary}); `touch {canary}` ; touch {canary} | 'q' \"dq\" \\ * ~ \n next"
    monkeypatch.setenv("LLMOPS_TEST_ENGINE_KEY", "sk-test-secret")
    models = [
        {
            "name": f"we ird'\"name {evil}",
            "model": f"/models/with space/{evil}",
            "port": free_port(),
            "nodes": [n1],
            "env": {"STANDIN_NOTE": evil},
            "extra_args": ["--note", evil, "--flag=a b", ""],
            "api_key": "${env:LLMOPS_TEST_ENGINE_KEY}",
            "ready_timeout_s": 30,
        }
    ]
    spec_path = write_spec(ssh_lab, tmp_path, models)
    result = await run(spec_path, "up")
    try:
        assert not result.errors, [str(e) for e in result.errors]
        (instance,) = result.plan.instances
        dump = json.loads((ssh_lab.dump_dir / f"{n1}-{instance.port}.json").read_text())
        assert dump["argv"][1:] == list(instance.argv[1:])
        assert dump["env"]["STANDIN_NOTE"] == evil
        assert dump["env"]["VLLM_API_KEY"] == "sk-test-secret"  # through the env file
        assert not canary.exists()
        env_file = next((tmp_path / "state").rglob("env.json"))
        assert env_file.stat().st_mode & 0o777 == 0o600
        state = json.loads(next((tmp_path / "state").rglob("state.json")).read_text())
        assert "sk-test-secret" not in json.dumps(state)
        pid = state["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"sk-test-secret" not in cmdline  # not visible to ps
        written = yaml.safe_load((tmp_path / "backends" / "self_deployed_config.yaml").read_text())
        (entry,) = written["model_list"]
        assert entry["model_name"] == instance.model
        assert entry["litellm_params"]["api_key"] == "${env:LLMOPS_TEST_ENGINE_KEY}"
    finally:
        stopped = await run(spec_path, "stop")
    assert not stopped.errors, [str(e) for e in stopped.errors]
