"""Calls to the node agent (``agent.py``) over SSH: a request in, JSON events out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from llmops.deploy.errors import NodeError
from llmops.deploy.plan import Instance
from llmops.deploy.spec import DeploySpec, NodeSpec
from llmops.deploy.ssh import NodeConnections

AGENT_SOURCE = (Path(__file__).parent / "agent.py").read_text(encoding="utf-8")


def instance_request(instance: Instance) -> dict[str, Any]:
    """What the agent needs to know of an instance (the env may hold an API key: stdin only)."""
    return {
        "name": instance.name,
        "key": instance.state_key,
        "model": instance.model,
        "argv": list(instance.argv),
        "env": instance.env,
        "address": instance.address,
        "port": instance.port,
        "gpus": list(instance.gpus),
        "spec_hash": instance.spec_hash,
        "ready_timeout_s": instance.ready_timeout_s,
    }


async def call_agent(
    connections: NodeConnections,
    spec: DeploySpec,
    node: NodeSpec,
    op: str,
    instances: Sequence[Instance] = (),
    **extra: Any,
) -> AsyncIterator[dict[str, Any]]:
    """Run one agent operation on ``node``; yields its events as they arrive."""
    request = {
        "op": op,
        "node": node.host,
        "deployment": spec.deployment,
        "state_dir": spec.state_dir,
        "stop_timeout_s": spec.stop_timeout_s,
        "instances": [instance_request(i) for i in instances],
        **extra,
    }
    argv = [spec.agent_python, "-c", AGENT_SOURCE]
    async for line in connections.stream(node, argv, json.dumps(request) + "\n"):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise NodeError(node.host, f"unexpected agent output: {line.strip()[:200]!r}") from None
        if "node_error" in event:
            raise NodeError(node.host, event["node_error"])
        yield event
