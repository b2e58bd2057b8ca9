"""The example config users copy documents the real defaults and loads cleanly."""

from __future__ import annotations

from pathlib import Path

from llmops.config import load_router_config
from llmops.config.router import RouterConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "router.yaml"


def test_the_example_router_config_states_every_default() -> None:
    loaded = load_router_config(EXAMPLE)
    defaults = RouterConfig()
    for section in (
        "server",
        "auth",
        "routing",
        "timeouts",
        "health_check",
        "circuit_breaker",
        "scrape",
        "limits",
        "access_log",
        "upstream_tls",
        "notify",
    ):
        assert getattr(loaded.config, section) == getattr(defaults, section), section
    assert [b.id for b in loaded.backends] == [
        "qwen3-30b@127.0.0.1:8001",
        "qwen3-30b@127.0.0.1:8002",
    ]
    assert {b.upstream_model for b in loaded.backends} == {"Qwen/Qwen3-30B-A3B"}
