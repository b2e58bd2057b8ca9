"""The router's backend file: LiteLLM ``model_list`` of the ready instances, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from llmops.deploy.plan import Instance


def backend_entries(
    ready: Sequence[Instance], raw_api_keys: Mapping[str, str]
) -> list[dict[str, Any]]:
    """``model_list`` entries; an API key is written as the user wrote it (references stay)."""
    entries = []
    for instance in ready:
        params: dict[str, Any] = {"api_base": instance.api_base, "weight": 1}
        if instance.model in raw_api_keys:
            # Same substitution rules in both files; ${file:} paths are relative to each file.
            params["api_key"] = raw_api_keys[instance.model]
        entries.append({"model_name": instance.model, "litellm_params": params})
    return entries


def write_backend_file(
    path: Path, ready: Sequence[Instance], raw_api_keys: Mapping[str, str]
) -> bool:
    """Replace ``path`` in one rename, so a router watching it never reads half a file.

    An unchanged file is left alone (False), so a router does not reload for nothing.
    """
    entries = backend_entries(ready, raw_api_keys)
    holds_secret = any(
        "api_key" in e["litellm_params"] and "${" not in e["litellm_params"]["api_key"]
        for e in entries
    )
    text = "# Written by `llmops deploy`: the ready instances. Edits are overwritten.\n"
    text += yaml.safe_dump({"model_list": entries}, sort_keys=False, allow_unicode=True)
    mode = 0o600 if holds_secret else 0o644  # a literal key must not be world-readable
    if _unchanged(path, text, mode):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _unchanged(path: Path, text: str, mode: int) -> bool:
    try:
        return path.stat().st_mode & 0o777 == mode and path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False
