"""Read a YAML file and resolve ``${env:NAME}`` / ``${file:path}`` references in its strings.

``$${`` stands for a literal ``${``. ``${file:...}`` paths are relative to the YAML file and
the file's content is used with one trailing newline removed (the way secrets are mounted);
a path may hold ``${env:NAME}`` (``${file:${env:CREDENTIALS_DIRECTORY}/token}`` for systemd).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from llmops.config._schema import join_path
from llmops.errors import ConfigError

_REFERENCE = re.compile(r"\$\$\{|\$\{(env|file):((?:\$\{env:[^}]*\}|[^}])*)\}|\$\{[^}]*\}?")


def read_yaml(path: Path) -> Any:
    """Parse ``path`` as YAML; a ConfigError names the file and the line of a syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(["file not found"], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read: {exc}"], str(path)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}invalid YAML: {problem}"], str(path)) from None


def resolve_references(data: Any, base_dir: Path, problems: list[str], path: str = "") -> Any:
    """Return ``data`` with references substituted in every string, recording bad ones."""
    if isinstance(data, dict):
        return {
            k: resolve_references(v, base_dir, problems, join_path(path, str(k)))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [
            resolve_references(v, base_dir, problems, join_path(path, i))
            for i, v in enumerate(data)
        ]
    if isinstance(data, str) and "$" in data:
        return _substitute(data, base_dir, problems, path)
    return data


def _substitute(text: str, base_dir: Path, problems: list[str], path: str) -> str:
    def replace(match: re.Match[str]) -> str:
        whole, kind, name = match.group(0), match.group(1), match.group(2)
        if whole == "$${":
            return "${"
        if kind == "env":
            if name not in os.environ:
                problems.append(f"{path}: environment variable {name} is not set")
                return ""
            return os.environ[name]
        if kind == "file":
            if "${" in name:
                known = len(problems)
                name = _REFERENCE.sub(replace, name)
                if len(problems) > known:
                    return ""  # the inner reference's problem is the one to report
            file_path = (base_dir / os.path.expanduser(name)).resolve()
            try:
                return file_path.read_text(encoding="utf-8").removesuffix("\n")
            except OSError as exc:
                problems.append(f"{path}: cannot read {file_path}: {exc.strerror or exc}")
                return ""
        problems.append(
            f"{path}: bad reference {whole!r} "
            "(use ${env:NAME}, ${file:PATH} or $${ for a literal ${)"
        )
        return ""

    return _REFERENCE.sub(replace, text)
