"""``plan_placement``: which instance runs where, on which GPUs and ports, with which argv.

Pure: the spec and the GPUs of ``gpus: auto`` nodes in, a Plan out. Models are placed in
file order. A numeric ``replicas`` spreads over the eligible nodes (each replica goes to the
node with the most free GPUs, ties to the earlier node); ``fill`` takes every block left.
A tensor-parallel instance gets a block of ``tp`` consecutive GPU indexes, aligned to a
multiple of ``tp`` when one is free (the NVLink-friendly choice).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from llmops.deploy.engines import engine_argv, engine_env
from llmops.deploy.errors import PlanError
from llmops.deploy.spec import DeploySpec, ModelSpec, NodeSpec

# Ports each instance may use for the engine's internal traffic (NCCL, vLLM's RPC).
INTERNAL_PORTS_PER_INSTANCE = 10

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_KEY = 120  # well under the 255 bytes a file name may have


@dataclass(frozen=True)
class Instance:
    """One engine process as planned."""

    name: str  # <model>-<node host>-<index>
    model: str  # the served model name
    engine: str
    node: str  # the node's host as written in nodes.yaml
    address: str  # where the router reaches the engine
    index: int
    gpus: tuple[int, ...]
    port: int
    internal_port: int  # first of INTERNAL_PORTS_PER_INSTANCE ports
    argv: tuple[str, ...]
    env: dict[str, str] = field(compare=False)
    spec_hash: str = ""
    ready_timeout_s: float = 0.0

    @property
    def state_key(self) -> str:
        """The instance's directory name on its node: the name, made safe for a path."""
        return state_key(self.name)

    @property
    def api_base(self) -> str:
        return f"http://{_url_host(self.address)}:{self.port}/v1"

    @property
    def backend_id(self) -> str:
        """The id the router gives this backend (``<model_name>@<host>:<port>``)."""
        return f"{self.model}@{_url_host(self.address)}:{self.port}"


@dataclass(frozen=True)
class Plan:
    deployment: str
    instances: tuple[Instance, ...]
    unavailable_nodes: tuple[str, ...] = ()  # ``gpus: auto`` nodes whose GPUs are unknown

    def select(self, names: Sequence[str]) -> tuple[Instance, ...]:
        """The named instances (all when ``names`` is empty); PlanError names unknown ones."""
        if not names:
            return self.instances
        known = {i.name: i for i in self.instances}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise PlanError([f"no instance named {n!r} in the plan" for n in unknown])
        return tuple(known[n] for n in dict.fromkeys(names))


def state_key(name: str) -> str:
    safe = _UNSAFE.sub("_", name)
    if safe == name and len(name) <= _MAX_KEY:
        return name
    # Two names that differ only in unsafe characters must not share a directory.
    return f"{safe[: _MAX_KEY - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def node_gpus(node: NodeSpec, gpu_inventory: Mapping[str, Sequence[int]]) -> tuple[int, ...] | None:
    """The node's GPU indexes, or None for an ``auto`` node missing from the inventory."""
    if isinstance(node.gpus, int):
        return tuple(range(node.gpus))
    if isinstance(node.gpus, tuple):
        return tuple(sorted(node.gpus))
    found = gpu_inventory.get(node.host)
    return None if found is None else tuple(sorted(found))


def plan_placement(spec: DeploySpec, gpu_inventory: Mapping[str, Sequence[int]]) -> Plan:
    """Place every model's instances; PlanError lists every model that does not fit."""
    free: dict[str, list[int]] = {}
    unavailable: list[str] = []
    for node in spec.nodes:
        gpus = node_gpus(node, gpu_inventory)
        if gpus is None:
            unavailable.append(node.host)
        else:
            free[node.host] = list(gpus)
    used_ports: dict[str, set[int]] = {host: set() for host in free}
    counts: dict[tuple[str, str], int] = {}
    placed: list[Instance] = []
    problems: list[str] = []
    nodes = {node.host: node for node in spec.nodes}
    for model_index, model in enumerate(spec.models):
        eligible = [h for h in free if not model.nodes or h in model.nodes]
        blocks = _place_model(model, eligible, free)
        wanted = model.replicas
        if wanted == "fill" and not blocks:
            problems.append(
                f"models[{model_index}] ({model.name}): no free block of {model.tp} GPUs"
            )
        elif isinstance(wanted, int) and len(blocks) < wanted:
            problems.append(
                f"models[{model_index}] ({model.name}): {wanted} replicas of tp {model.tp} asked, "
                f"{len(blocks)} fit on the free GPUs"
            )
        for host, gpus in blocks:
            index = counts.get((model.name, host), 0)
            counts[(model.name, host)] = index + 1
            port = _next_port(model.port, used_ports[host])
            internal = _next_internal_block(spec.internal_port_base, used_ports[host])
            placed.append(_instance(model, nodes[host], index, gpus, port, internal))
    if problems:
        raise PlanError(problems)
    return Plan(spec.deployment, tuple(placed), tuple(unavailable))


def _place_model(
    model: ModelSpec, eligible: list[str], free: dict[str, list[int]]
) -> list[tuple[str, tuple[int, ...]]]:
    blocks: list[tuple[str, tuple[int, ...]]] = []
    if model.replicas == "fill":
        for host in eligible:
            while (block := _take_block(free[host], model.tp)) is not None:
                blocks.append((host, block))
        return blocks
    for _ in range(model.replicas):
        fitting = [h for h in eligible if _find_block(free[h], model.tp) is not None]
        if not fitting:
            break
        host = max(fitting, key=lambda h: len(free[h]))  # max keeps the first of equals
        block = _take_block(free[host], model.tp)
        assert block is not None  # _find_block just found it
        blocks.append((host, block))
    return blocks


def _find_block(free: list[int], size: int) -> int | None:
    """Position in ``free`` (sorted) of a run of ``size`` consecutive GPU indexes."""
    runs = [
        start
        for start in range(len(free) - size + 1)
        if free[start + size - 1] - free[start] == size - 1
    ]
    aligned = [start for start in runs if free[start] % size == 0]
    candidates = aligned or runs
    return candidates[0] if candidates else None


def _take_block(free: list[int], size: int) -> tuple[int, ...] | None:
    start = _find_block(free, size)
    if start is None:
        return None
    block = tuple(free[start : start + size])
    del free[start : start + size]
    return block


def _next_port(first: int, used: set[int]) -> int:
    port = first
    while port in used:
        port += 1
    used.add(port)
    return port


def _next_internal_block(base: int, used: set[int]) -> int:
    start = base
    while any(p in used for p in range(start, start + INTERNAL_PORTS_PER_INSTANCE)):
        start += INTERNAL_PORTS_PER_INSTANCE
    used.update(range(start, start + INTERNAL_PORTS_PER_INSTANCE))
    return start


def _instance(
    model: ModelSpec, node: NodeSpec, index: int, gpus: tuple[int, ...], port: int, internal: int
) -> Instance:
    argv = engine_argv(model, port, internal)
    env = engine_env(model, gpus, internal)
    digest = hashlib.sha256(
        json.dumps({"argv": argv, "env": env, "gpus": gpus}, sort_keys=True).encode()
    ).hexdigest()[:16]
    return Instance(
        name=f"{model.name}-{node.host}-{index}",
        model=model.name,
        engine=model.engine,
        node=node.host,
        address=node.address or node.host,
        index=index,
        gpus=gpus,
        port=port,
        internal_port=internal,
        argv=argv,
        env=env,
        spec_hash=digest,
        ready_timeout_s=model.ready_timeout_s,
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
