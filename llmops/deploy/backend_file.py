"""The router's backend file: LiteLLM ``model_list`` of the ready instances, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def entries_on_hosts(path: Path, hosts: Collection[str]) -> list[dict[str, Any]]:
    """The entries of the current file whose engine is on one of ``hosts``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    entries = data.get("model_list") if isinstance(data, dict) else None
    kept = []
    for entry in entries if isinstance(entries, list) else []:
        params = entry.get("litellm_params") if isinstance(entry, dict) else None
        base = params.get("api_base") if isinstance(params, dict) else None
        if isinstance(base, str) and urlsplit(base).hostname in hosts:
            kept.append(entry)
    return kept


def write_backend_file(
    path: Path,
    ready: Sequence[Instance],
    raw_api_keys: Mapping[str, str],
    kept: Sequence[dict[str, Any]] = (),
) -> bool:
    """Replace ``path`` in one rename, so a router watching it never reads half a file.

    ``kept``: entries carried over as they are (engines on nodes that could not be asked).
    An unchanged file is left alone (False), so a router does not reload for nothing.
    """
    entries = backend_entries(ready, raw_api_keys) + list(kept)
    holds_secret = any(_literal_key(entry) for entry in entries)
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


def _literal_key(entry: dict[str, Any]) -> bool:
    key = entry["litellm_params"].get("api_key")
    return isinstance(key, str) and "${" not in key


def _unchanged(path: Path, text: str, mode: int) -> bool:
    try:
        return path.stat().st_mode & 0o777 == mode and path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False
