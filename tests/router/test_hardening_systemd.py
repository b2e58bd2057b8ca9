"""`llmops router systemd-unit`: a hardened unit that systemd accepts, and credentials that
the config reads through ``${file:${env:CREDENTIALS_DIRECTORY}/NAME}``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmops.config import resolve_references
from llmops.router.cli import app
from llmops.router.systemd import UnitOptions, parse_credential, render_unit
from tests.conftest import require_binary

REQUIRED = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "NoNewPrivileges": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "CapabilityBoundingSet": "",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "SystemCallErrorNumber": "EPERM",
}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A strict reading of systemd's unit syntax: sections, Key=Value, comments; no junk."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        if match := re.fullmatch(r"\[([A-Za-z]+)\]", line):
            current = sections.setdefault(match.group(1), {})
            continue
        match = re.fullmatch(r"([A-Z][A-Za-z]+)=(.*)", line)
        assert match and current is not None, f"line {number} is not Key=Value: {line!r}"
        current.setdefault(match.group(1), []).append(match.group(2))
    return sections


def unit_text(*args: str) -> str:
    result = CliRunner().invoke(app, ["systemd-unit", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_unit_is_hardened_and_well_formed() -> None:
    text = unit_text(
        "--config",
        "/etc/llmops/router.yaml",
        "--credential",
        "admin_token=/etc/llmops/admin_token",
        "--credential",
        "/etc/llmops/backend_key",
        "--exec",
        "/opt/llmops/bin/llmops",
    )
    unit = parse_unit(text)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    for key, value in REQUIRED.items():
        assert service[key] == [value], key
    assert service["ExecStart"] == [
        "/opt/llmops/bin/llmops router serve --config /etc/llmops/router.yaml"
    ]
    assert service["LoadCredential"] == [
        "admin_token:/etc/llmops/admin_token",
        "backend_key:/etc/llmops/backend_key",
    ]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "User" not in service


def test_user_and_low_port_options() -> None:
    service = parse_unit(unit_text("--user", "llmops", "--low-port", "--exec", "/usr/bin/llmops"))[
        "Service"
    ]
    assert service["User"] == ["llmops"]
    assert "DynamicUser" not in service
    assert service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert service["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]


def test_hostile_paths_are_quoted_for_systemd() -> None:
    text = render_unit(
        UnitOptions(command=("/opt/my llmops/llmops",), config='/etc/a "b" $HOME %h.yaml')
    )
    exec_start = parse_unit(text)["Service"]["ExecStart"][0]
    assert exec_start == (
        '"/opt/my llmops/llmops" router serve --config "/etc/a \\"b\\" $$HOME %%h.yaml"'
    )


@pytest.mark.parametrize("spec", ["bad name=/x", "name=relative/path", "a:b=/x", "=/x"])
def test_bad_credentials_are_usage_errors(spec: str) -> None:
    with pytest.raises(ValueError, match="bad credential"):
        parse_credential(spec)
    result = CliRunner().invoke(app, ["systemd-unit", "--credential", spec])
    assert result.exit_code != 0


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    # verify checks that ExecStart exists, so use the llmops that runs this test.
    program = shutil.which("llmops") or sys.executable
    secret = tmp_path / "admin_token"
    secret.write_text("t\n")
    unit = tmp_path / "llmops-router.service"
    unit.write_text(
        unit_text("--exec", program, "--credential", f"admin_token={secret}", "--config", "/x.yaml")
    )
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 even for unknown keys or bad values: it only warns, so stderr must be empty.
    relevant = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0, result.stderr
    assert relevant == [], result.stderr
    # And a broken unit does produce a warning, so the check above can fail.
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHome=maybe"))
    broken = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "ProtectHome" in broken.stderr or "protect home" in broken.stderr.lower()


def test_config_reads_credentials_from_the_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "admin_token").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    problems: list[str] = []
    data = {"auth": {"admin_tokens": ["${file:${env:CREDENTIALS_DIRECTORY}/admin_token}"]}}
    assert resolve_references(data, tmp_path, problems) == {"auth": {"admin_tokens": ["s3cret"]}}
    assert problems == []
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    resolved = resolve_references(data, tmp_path, problems)
    assert resolved == {"auth": {"admin_tokens": [""]}}
    # One problem, about the variable (not a confusing "cannot read /admin_token").
    assert problems == [
        "auth.admin_tokens[0]: environment variable CREDENTIALS_DIRECTORY is not set"
    ]
    assert os.environ.get("CREDENTIALS_DIRECTORY") is None
