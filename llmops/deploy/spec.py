"""The ``nodes.yaml`` schema (DESIGN.md) as frozen dataclasses, and its loader.

``ssh`` keys given at the top level are defaults; a node's own ``ssh`` mapping overrides
them key by key. Unset keys fall back to the ``DEFAULT_*`` constants below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llmops.config import build, read_yaml, resolve_references
from llmops.errors import ConfigError

Engine = Literal["vllm", "sglang"]

DEFAULT_SSH_PORT = 22
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_KEEPALIVE_S = 15.0
# OpenSSH's MaxSessions defaults to 10 channels per connection; stay under it.
DEFAULT_MAX_CHANNELS = 8
DEFAULT_STATE_DIR = "~/.llmops"
DEFAULT_INTERNAL_PORT_BASE = 29500
DEFAULT_READY_TIMEOUT_S = 900.0
DEFAULT_STOP_TIMEOUT_S = 30.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _positive(value: float | None) -> str | None:
    return "must be > 0" if value is not None and value <= 0 else None


def _port(value: int | None) -> str | None:
    return None if value is None or 1 <= value <= 65535 else "must be a port number (1-65535)"


def _fraction(value: float | None) -> str | None:
    return None if value is None or 0 < value <= 1 else "must be in (0, 1]"


def _state_name(value: str) -> str | None:
    # Used as a directory name on every node: keep it to characters that need no quoting.
    return None if _NAME.match(value) else "must be letters, digits, '.', '_' or '-'"


def _gpus(value: int | tuple[int, ...] | str) -> str | None:
    if isinstance(value, int):
        return "must be >= 0" if value < 0 else None
    if isinstance(value, tuple):
        if any(g < 0 for g in value):
            return "GPU indexes must be >= 0"
        return "has a GPU index twice" if len(set(value)) != len(value) else None
    return None


def _replicas(value: int | str) -> str | None:
    return "must be >= 1" if isinstance(value, int) and value < 1 else None


@dataclass(frozen=True)
class SshOptions:
    """How to reach a node; every key is optional so a node can override just one."""

    user: str | None = None
    port: int | None = field(default=None, metadata={"check": _port})
    key: str | None = None
    jump: str | None = None  # [user@]host[:port], reached with the same key and known_hosts
    known_hosts: str | None = None
    connect_timeout_s: float | None = field(default=None, metadata={"check": _positive})
    keepalive_s: float | None = field(default=None, metadata={"check": _positive})
    max_channels: int | None = field(default=None, metadata={"check": _positive})

    def over(self, defaults: SshOptions) -> SshOptions:
        """These options with every unset key taken from ``defaults``."""
        return SshOptions(
            **{
                name: getattr(self, name)
                if getattr(self, name) is not None
                else getattr(defaults, name)
                for name in self.__dataclass_fields__
            }
        )


@dataclass(frozen=True)
class NodeSpec:
    host: str
    gpus: int | tuple[int, ...] | Literal["auto"] = field(default="auto", metadata={"check": _gpus})
    ssh: SshOptions = field(default_factory=SshOptions)
    # Where the router and the readiness checks reach this node's engines (default: host).
    address: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model: str
    engine: Engine = "vllm"
    tp: int = field(default=1, metadata={"check": _positive})
    replicas: int | Literal["fill"] = field(default=1, metadata={"check": _replicas})
    port: int = field(default=8000, metadata={"check": _port})
    gpu_memory_utilization: float | None = field(default=None, metadata={"check": _fraction})
    max_model_len: int | None = field(default=None, metadata={"check": _positive})
    max_num_seqs: int | None = field(default=None, metadata={"check": _positive})
    command: str | None = None  # default: ``vllm`` / ``python`` on the node's PATH
    venv: str | None = None  # a virtualenv on the node whose bin/ holds the command
    env: dict[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    api_key: str | None = None  # vLLM reads it from VLLM_API_KEY, passed in a 0600 env file
    nodes: tuple[str, ...] = ()  # restrict to these node hosts (default: every node)
    ready_timeout_s: float = field(default=DEFAULT_READY_TIMEOUT_S, metadata={"check": _positive})


@dataclass(frozen=True)
class DeploySpec:
    deployment: str = field(metadata={"check": _state_name})
    nodes: tuple[NodeSpec, ...]
    models: tuple[ModelSpec, ...]
    ssh: SshOptions = field(default_factory=SshOptions)
    router_config: str | None = None
    state_dir: str = DEFAULT_STATE_DIR
    internal_port_base: int = field(default=DEFAULT_INTERNAL_PORT_BASE, metadata={"check": _port})
    stop_timeout_s: float = field(default=DEFAULT_STOP_TIMEOUT_S, metadata={"check": _positive})
    agent_python: str = "python3"  # the node's Python that runs deploy's agent (stdlib only)

    def ssh_for(self, node: NodeSpec) -> SshOptions:
        """The node's effective SSH options: node keys, then top-level keys, then defaults."""
        defaults = SshOptions(
            port=DEFAULT_SSH_PORT,
            known_hosts=DEFAULT_KNOWN_HOSTS,
            connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S,
            keepalive_s=DEFAULT_KEEPALIVE_S,
            max_channels=DEFAULT_MAX_CHANNELS,
        )
        return node.ssh.over(self.ssh.over(defaults))


@dataclass(frozen=True)
class LoadedSpec:
    spec: DeploySpec
    path: Path
    # ``api_key`` as written in the file (a ``${env:...}`` reference stays one), per model:
    # the router backend file repeats the reference instead of the secret.
    raw_api_keys: dict[str, str]


def load_spec(path: str | Path) -> LoadedSpec:
    """Read and validate ``nodes.yaml``; ConfigError lists every problem with its YAML path."""
    spec_path = Path(path)
    raw = read_yaml(spec_path)
    problems: list[str] = []
    data = resolve_references(raw if raw is not None else {}, spec_path.parent, problems)
    spec = build(DeploySpec, data, problems)
    if spec is not None:
        problems.extend(check_spec(spec))
    if problems or spec is None:
        raise ConfigError(problems, str(spec_path))
    raw_keys: dict[str, str] = {}
    for model in raw.get("models", []) if isinstance(raw, dict) else []:
        if isinstance(model, dict) and isinstance(model.get("api_key"), str):
            raw_keys[str(model.get("name"))] = model["api_key"]
    return LoadedSpec(spec, spec_path, raw_keys)


def check_spec(spec: DeploySpec) -> list[str]:
    """Problems that span several keys (the schema checks each key alone)."""
    problems: list[str] = []
    hosts = [node.host for node in spec.nodes]
    for index, host in enumerate(hosts):
        if host in hosts[:index]:
            problems.append(f"nodes[{index}].host: {host} is listed twice")
    names = [model.name for model in spec.models]
    for index, model in enumerate(spec.models):
        where = f"models[{index}]"
        if model.name in names[:index]:
            problems.append(f"{where}.name: {model.name} is listed twice")
        for host in model.nodes:
            if host not in hosts:
                problems.append(f"{where}.nodes: {host} is not in nodes")
        if model.api_key is not None and model.engine != "vllm":
            # SGLang takes its key only as --api-key, which every local user could read in ps.
            problems.append(
                f"{where}.api_key: only supported for vllm (sglang would show it in ps)"
            )
        for key in model.env:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                problems.append(f"{where}.env.{key}: not a valid environment variable name")
    if not spec.nodes:
        problems.append("nodes: at least one node is required")
    return problems
