"""`llmops dashboard` on the command line: help with an example, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def llmops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmops", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "100", "TERM": "dumb"},
    )


def test_help_shows_the_options_and_an_example() -> None:
    result = llmops("dashboard", "--help")
    assert result.returncode == 0
    for option in ("--url", "--token", "--interval", "http://127.0.0.1:8000", "LLMOPS_ADMIN_TOKEN"):
        assert option in result.stdout
    assert "Example: llmops dashboard --url http://127.0.0.1:8000" in result.stdout


@pytest.mark.parametrize("url", ["ftp://router:8000", "http://", "http://host:notaport"])
def test_a_bad_url_is_one_line_and_exit_1(url: str) -> None:
    result = llmops("dashboard", "--url", url)
    assert result.returncode == 1
    assert result.stderr.startswith("llmops: --url ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_non_positive_interval_is_a_usage_error() -> None:
    result = llmops("dashboard", "--interval", "0")
    assert result.returncode == 2
