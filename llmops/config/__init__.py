"""Configuration: YAML with secret references, validated into frozen dataclasses."""

from llmops.config._schema import build, join_path
from llmops.config._yaml import read_yaml, resolve_references
from llmops.config.router import (
    Backend,
    LoadedConfig,
    RouterConfig,
    load_router_config,
    mask_secret,
)

__all__ = [
    "Backend",
    "LoadedConfig",
    "RouterConfig",
    "build",
    "join_path",
    "load_router_config",
    "mask_secret",
    "read_yaml",
    "resolve_references",
]
