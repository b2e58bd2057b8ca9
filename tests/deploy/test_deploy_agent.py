"""The node agent on its own: old-Python grammar, and run locally the way SSH runs it."""

from __future__ import annotations

import ast
import fcntl
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from llmops.deploy.remote import AGENT_SOURCE


def run_agent(request: dict[str, Any], path: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", AGENT_SOURCE],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env={"PATH": path, "HOME": "/nonexistent"},
        timeout=30,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_agent_is_valid_python_3_8() -> None:
    # GPU nodes often run an older system Python than the deployer.
    ast.parse(AGENT_SOURCE, feature_version=(3, 8))


def test_inventory_without_nvidia_smi_says_so(tmp_path: Path) -> None:
    assert run_agent({"op": "inventory"}, str(tmp_path)) == [
        {"error": "nvidia-smi not found on PATH"}
    ]


def test_status_of_an_empty_deployment_reports_each_instance_stopped(tmp_path: Path) -> None:
    request = {
        "op": "status",
        "node": "n",
        "deployment": "d",
        "state_dir": str(tmp_path / "state"),
        "stop_timeout_s": 1,
        "instances": [
            {"name": "m-n-0", "key": "m-n-0", "address": "127.0.0.1", "port": 1, "env": {}}
        ],
    }
    assert run_agent(request, str(tmp_path)) == [{"instance": "m-n-0", "running": False}]
    assert not (tmp_path / "state").exists()  # status is read-only


def test_a_second_deploy_on_the_same_node_is_refused_while_one_runs(tmp_path: Path) -> None:
    root = tmp_path / "state" / "d"
    root.mkdir(parents=True)
    request = {
        "op": "stop",
        "node": "n1",
        "deployment": "d",
        "state_dir": str(tmp_path / "state"),
        "stop_timeout_s": 1,
        "instances": [],
    }
    with (root / ".lock-n1").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = run_agent(request, str(tmp_path))
        assert refused == [
            {"node_error": "another llmops deploy is changing this deployment on the node"}
        ]
        assert run_agent({**request, "node": "n2"}, str(tmp_path)) == []  # other nodes: own lock
    assert run_agent(request, str(tmp_path)) == []
