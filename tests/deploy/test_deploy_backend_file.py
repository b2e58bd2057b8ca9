"""The router backend file deploy writes: LiteLLM model_list, atomic, secrets kept out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from llmops.config import load_router_config
from llmops.deploy.backend_file import write_backend_file
from llmops.deploy.plan import Instance, plan_placement
from llmops.deploy.spec import load_spec


def instances(tmp_path: Path, api_key: str | None = None) -> tuple[list[Instance], dict[str, str]]:
    model = {"name": "qwen", "model": "/m", "replicas": 2, "port": 8000}
    if api_key is not None:
        model["api_key"] = api_key
    data = {
        "deployment": "d",
        "nodes": [
            {"host": "10.0.0.1", "gpus": 1},
            {"host": "node-b", "gpus": 1, "address": "10.0.0.2"},
        ],
        "models": [model],
    }
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(data))
    loaded = load_spec(path)
    return list(plan_placement(loaded.spec, {}).instances), loaded.raw_api_keys


def test_file_is_litellm_model_list_and_the_router_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_KEY", "sk-engine")
    ready, raw_keys = instances(tmp_path, "${env:ENGINE_KEY}")
    target = tmp_path / "backends" / "self_deployed_config.yaml"
    write_backend_file(target, ready, raw_keys)
    assert yaml.safe_load(target.read_text()) == {
        "model_list": [
            {
                "model_name": "qwen",
                "litellm_params": {
                    "api_base": "http://10.0.0.1:8000/v1",
                    "weight": 1,
                    "api_key": "${env:ENGINE_KEY}",
                },
            },
            {
                "model_name": "qwen",
                "litellm_params": {
                    "api_base": "http://10.0.0.2:8000/v1",
                    "weight": 1,
                    "api_key": "${env:ENGINE_KEY}",
                },
            },
        ]
    }
    assert "sk-engine" not in target.read_text()
    assert os.stat(target).st_mode & 0o777 == 0o644  # only a reference inside
    router = tmp_path / "router.yaml"
    router.write_text(
        yaml.safe_dump(
            {"backends": {"config_dir": "backends", "enabled_sources": ["self_deployed"]}}
        )
    )
    loaded = load_router_config(router)
    assert [(b.id, b.api_key) for b in loaded.backends] == [
        (ready[0].backend_id, "sk-engine"),
        (ready[1].backend_id, "sk-engine"),
    ]
    assert ready[1].backend_id == "qwen@10.0.0.2:8000"


def test_literal_key_makes_the_file_private_and_replacement_is_atomic(tmp_path: Path) -> None:
    ready, raw_keys = instances(tmp_path, "sk-literal")
    target = tmp_path / "self_deployed_config.yaml"
    target.write_text("model_list: []\n")
    before = os.stat(target).st_ino
    assert write_backend_file(target, ready[:1], raw_keys)
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert os.stat(target).st_ino != before  # a new file renamed over the old one
    written = os.stat(target).st_ino
    assert not write_backend_file(target, ready[:1], raw_keys)  # same content: left alone
    assert os.stat(target).st_ino == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodes.yaml", "self_deployed_config.yaml"]
    write_backend_file(target, [], raw_keys)
    assert yaml.safe_load(target.read_text()) == {"model_list": []}
