"""Router config loading: substitution, validation with YAML paths, backend files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmops.config import load_router_config
from llmops.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_minimal_litellm_file_resolves_backends(tmp_path: Path) -> None:
    config = write(
        tmp_path / "router.yaml",
        """
model_list:
  - model_name: qwen3-30b
    litellm_params: {model: openai/Qwen/Qwen3-30B, api_base: "http://10.0.0.1:8000/v1/", rpm: 60}
  - model_name: qwen3-30b
    litellm_params: {api_base: "http://10.0.0.2:8000", weight: 2}
""",
    )
    loaded = load_router_config(config)
    first, second = loaded.backends
    assert first.id == "qwen3-30b@10.0.0.1:8000"
    assert first.api_base == "http://10.0.0.1:8000/v1"
    assert first.upstream_model == "Qwen/Qwen3-30B"
    assert first.rpm_limit == 60
    assert second.api_base == "http://10.0.0.2:8000/v1"
    assert second.root_url == "http://10.0.0.2:8000"
    assert second.upstream_model == "qwen3-30b"
    assert second.weight == 2.0
    assert loaded.config.routing.num_retries == 3


def test_every_problem_is_reported_with_its_yaml_path(tmp_path: Path) -> None:
    config = write(
        tmp_path / "router.yaml",
        """
server: {port: 70000}
routing: {strategy: round-robin}
surprise: 1
model_list:
  - model_name: a
    litellm_params: {api_bse: "http://x:1/v1"}
  - model_name: b
    litellm_params: {api_base: "ftp://x", weight: -1, rpm_limit: "ten"}
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_router_config(config)
    problems = caught.value.problems
    assert "server.port: must be a port number (0-65535)" in problems
    assert any(p.startswith("routing.strategy: must be one of simple-shuffle") for p in problems)
    assert "surprise: unknown key" in problems
    assert "model_list[0].litellm_params.api_bse: unknown key" in problems
    assert "model_list[0].litellm_params.api_base: required" in problems
    assert "model_list[1].litellm_params.api_base: must be an http:// or https:// URL" in problems
    assert "model_list[1].litellm_params.weight: must be > 0" in problems
    assert any(p.startswith("model_list[1].litellm_params.rpm_limit: must be") for p in problems)
    assert len(problems) == 8
    assert str(config) in str(caught.value)


def test_env_and_file_references_and_the_dollar_escape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOPS_TEST_TOKEN", "tok-123")
    (tmp_path / "secret").write_text("admin-secret\n")
    config = write(
        tmp_path / "router.yaml",
        """
auth:
  tokens: ["${env:LLMOPS_TEST_TOKEN}", "literal-$${env:X}"]
  admin_tokens: ["${file:secret}"]
""",
    )
    auth = load_router_config(config).config.auth
    assert auth.tokens == ("tok-123", "literal-${env:X}")
    assert auth.admin_tokens == ("admin-secret",)


def test_missing_references_name_the_path(tmp_path: Path) -> None:
    os.environ.pop("LLMOPS_SURELY_UNSET", None)
    config = write(
        tmp_path / "router.yaml",
        'auth: {tokens: ["${env:LLMOPS_SURELY_UNSET}"], admin_tokens: ["${file:nope.txt}", "${vault:x}"]}\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_router_config(config)
    problems = caught.value.problems
    assert problems[0] == "auth.tokens[0]: environment variable LLMOPS_SURELY_UNSET is not set"
    assert problems[1].startswith("auth.admin_tokens[0]: cannot read ")
    assert problems[2].startswith("auth.admin_tokens[1]: bad reference '${vault:x}'")


def test_backend_files_from_enabled_sources(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    write(
        configs / "self_deployed_config.yaml",
        "model_list:\n  - model_name: m\n    litellm_params: {api_base: 'http://127.0.0.1:9001/v1'}\n",
    )
    write(
        configs / "openai_config.yaml",
        "model_list:\n  - model_name: gpt\n    litellm_params: {api_base: 'https://api.example/v1', api_key: k}\n",
    )
    write(
        configs / "ignored_config.yaml",
        "model_list: [{model_name: x, litellm_params: {api_base: 'http://h:1'}}]\n",
    )
    config = write(
        tmp_path / "router.yaml",
        """
model_list:
  - model_name: m
    litellm_params: {api_base: "http://127.0.0.1:9000/v1"}
backends: {config_dir: configs, enabled_sources: [self_deployed, openai, not_written_yet]}
""",
    )
    loaded = load_router_config(config)
    assert [b.id for b in loaded.backends] == [
        "m@127.0.0.1:9000",
        "m@127.0.0.1:9001",
        "gpt@api.example",
    ]
    assert loaded.backends[2].api_key == "k"
    assert configs / "not_written_yet_config.yaml" in loaded.files


def test_problems_in_a_backend_file_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "self_deployed_config.yaml").write_text("model_list: [{model_name: m}]\n")
    config = write(
        tmp_path / "router.yaml", "backends: {config_dir: ., enabled_sources: [self_deployed]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_router_config(config)
    assert caught.value.problems == [
        f"{tmp_path / 'self_deployed_config.yaml'}: model_list[0].litellm_params: required"
    ]


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    config = write(tmp_path / "router.yaml", "model_list:\n  - model_name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: invalid YAML"):
        load_router_config(config)


def test_credentials_in_an_api_base_are_refused_without_echoing_them(tmp_path: Path) -> None:
    config = write(
        tmp_path / "router.yaml",
        "model_list:\n  - model_name: m\n    litellm_params: {api_base: 'http://bob:hunter2@h:1/v1'}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_router_config(config)
    assert caught.value.problems == [
        "model_list[0].litellm_params.api_base: must not hold credentials (user:password@); "
        "put the key in api_key"
    ]
    assert "hunter2" not in str(caught.value)


def test_duplicate_backends_get_distinct_ids(tmp_path: Path) -> None:
    entry = "  - model_name: m\n    litellm_params: {api_base: 'http://h:1/v1'}\n"
    config = write(tmp_path / "router.yaml", "model_list:\n" + entry * 2)
    assert [b.id for b in load_router_config(config).backends] == ["m@h:1", "m@h:1#2"]
