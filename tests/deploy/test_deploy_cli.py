"""The `llmops deploy` command line: help, file-alone dispatch, bad specs, plan, logs --follow."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from deploy_lab import SshLab, free_port, run, write_spec
from typer.testing import CliRunner

from llmops.cli import app
from llmops.errors import ConfigError


def deploy_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}  # the plan table on one line per instance
    command = [sys.executable, "-m", "llmops", "deploy", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=90, env=env)


def test_help_shows_examples() -> None:
    runner = CliRunner()
    for args in ([], ["up"], ["plan"], ["status"], ["stop"], ["logs"], ["restart"]):
        shown = runner.invoke(app, ["deploy", *args, "--help"])
        assert shown.exit_code == 0, shown.output
        assert "Example: llmops deploy" in shown.output, args


def test_file_alone_means_up_and_errors_are_one_line(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["deploy", str(tmp_path / "missing.yaml")])
    assert isinstance(
        missing.exception, ConfigError
    )  # raised by `up`: the file was dispatched to it
    assert str(missing.exception) == f"{tmp_path / 'missing.yaml'}: file not found"
    for args in (["--insecure-host-keys", "status", "x.yaml"], ["--insecure-host-keys", "x.yaml"]):
        moved = CliRunner().invoke(app, ["deploy", *args])  # options may come before the command
        assert isinstance(moved.exception, ConfigError), moved.output
        assert "SSH host keys are not checked" in moved.output
    (tmp_path / "nodes.yaml").write_text(
        "deployment: d\nnodes: [{host: a, gpus: 1, sshh: {}}]\nmodels: []\n"
    )
    failed = deploy_cli("plan", "nodes.yaml", cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr == "llmops: nodes.yaml: nodes[0].sshh: unknown key\n"


def test_plan_prints_every_instance_and_touches_nothing(ssh_lab: SshLab, tmp_path: Path) -> None:
    models = [
        {"name": "alpha", "model": "/m", "replicas": 2, "port": 9100},
        {"name": "[/bold] it's", "model": "/m", "nodes": [ssh_lab.nodes[1].address], "port": 9200},
    ]
    write_spec(ssh_lab, tmp_path, models)
    shown = deploy_cli("plan", "nodes.yaml", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    n1, n2 = (n.address for n in ssh_lab.nodes)
    assert (
        f"alpha-{n2}-0" in shown.stdout and f"alpha-{n1}-0" in shown.stdout
    )  # n1's GPU via nvidia-smi
    assert "vllm serve /m --served-model-name alpha --host 0.0.0.0 --port 9100" in shown.stdout
    # Names are shown literally (no rich markup), commands as the node's shell gets them.
    assert f"[/bold] it's-{n2}-0" in shown.stdout
    assert "--served-model-name '[/bold] it'\"'\"'s'" in shown.stdout
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "backends").exists()


async def test_logs_follow_streams_new_lines_until_interrupted(
    ssh_lab: SshLab, tmp_path: Path
) -> None:
    n1 = ssh_lab.nodes[0].address
    spec_path = write_spec(
        ssh_lab, tmp_path, [{"name": "alpha", "model": "/m", "port": free_port(), "nodes": [n1]}]
    )
    first = await run(spec_path, "up")
    assert not first.errors, [str(e) for e in first.errors]
    name = first.plan.instances[0].name
    log = next((tmp_path / "state").rglob("engine.log"))
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmops",
            "deploy",
            "logs",
            "--follow",
            "-n",
            "0",
            "nodes.yaml",
            name,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = ""
        deadline = time.monotonic() + 20
        while "marker-2" not in seen and time.monotonic() < deadline:
            with log.open("a") as handle:  # what the engine would write
                handle.write(f"marker-{int(time.monotonic() * 10) % 3}\n")
            ready, _, _ = select.select([follower.stdout], [], [], 0.3)
            if ready:
                assert follower.stdout is not None
                seen += follower.stdout.readline()
        assert f"{name} | marker-2" in seen
    finally:
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=20)
        stopped = await run(spec_path, "stop")
    assert follower.returncode == 0 and "Traceback" not in err, err
    assert not stopped.errors


async def test_ctrl_c_during_up_ends_the_node_agents_and_keeps_the_engines(
    ssh_lab: SshLab, tmp_path: Path
) -> None:
    n1 = ssh_lab.nodes[0].address
    model = {
        "name": "slow",
        "model": "/m",
        "port": free_port(),
        "nodes": [n1],
        "env": {"STANDIN_HANG": "1"},
    }
    spec_path = write_spec(ssh_lab, tmp_path, [model])
    deployer = subprocess.Popen(
        [sys.executable, "-m", "llmops", "deploy", "up", "nodes.yaml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        logs = tmp_path / "state" / "t" / f"slow-{n1}-0" / "engine.log"
        while "loading weights" not in (logs.read_text() if logs.exists() else ""):
            assert time.monotonic() < deadline, "the engine never started"
            await asyncio.sleep(0.1)
        deployer.send_signal(signal.SIGINT)
        _, err = deployer.communicate(timeout=20)
        assert deployer.returncode == 130
        assert (
            err
            == "llmops: interrupted; engines already started keep running (llmops deploy status)\n"
        )
        rows, _ = await run(spec_path, "status")
        assert [r["running"] for r in rows] == [True]  # the engine outlived the deployer
    finally:
        if deployer.poll() is None:
            deployer.kill()
            deployer.communicate()
        # The node agent is gone too: its lock is free, so stop runs at once.
        stopped = await run(spec_path, "stop")
    assert not stopped.errors, [str(e) for e in stopped.errors]
    assert [e["action"] for e in stopped.events] == ["stopped"]
