"""The `llmops` command as a user runs it: help, lazy imports, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def llmops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmops", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_every_part() -> None:
    result = llmops("--help")
    assert result.returncode == 0
    for command in ("router", "deploy", "bench", "dashboard", "sim", "demo"):
        assert f" {command} " in result.stdout


def test_help_does_not_import_the_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from llmops.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('aiohttp', 'textual', 'asyncssh', 'redis') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_router_check_masks_secrets_and_exits_zero(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(
        "model_list:\n  - model_name: m\n"
        "    litellm_params: {api_base: 'http://127.0.0.1:9/v1', api_key: sk-very-secret-value}\n"
    )
    result = llmops("router", "check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "m@127.0.0.1:9" in result.stdout
    assert "sk-very-secret-value" not in result.stdout + result.stderr
    assert "****" in result.stdout


def test_bad_config_is_one_clear_message_and_exit_one(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("model_list:\n  - model_name: m\n    litellm_params: {api_bse: x}\n")
    result = llmops("router", "check", "--config", str(config))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "model_list[0].litellm_params.api_bse: unknown key" in result.stderr
    assert result.stdout == ""


def test_missing_config_file_and_usage_errors() -> None:
    missing = llmops("router", "check", "--config", "/nonexistent/router.yaml")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "llmops: /nonexistent/router.yaml: file not found"
    usage = llmops("router", "serve", "--port", "not-a-number")
    assert usage.returncode == 2
