"""Warn about config files that hold secrets inline and that every user can read.

A secret written through ``${env:NAME}`` or ``${file:PATH}`` is fine anywhere; one typed
into the file is only as safe as the file's permissions.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmops.config._schema import join_path
from llmops.config._yaml import read_yaml
from llmops.errors import ConfigError


def _is_reference(value: str) -> bool:
    return "${env:" in value or "${file:" in value


def _secret_values(data: Any) -> Iterator[tuple[str, Any]]:
    """(YAML path, value) of every place in a router or backend file that holds a secret."""
    if not isinstance(data, dict):
        return
    auth = data.get("auth")
    if isinstance(auth, dict):
        for key in ("tokens", "admin_tokens"):
            items = auth.get(key)
            for index, item in enumerate(items if isinstance(items, list) else ()):
                path = join_path(join_path("auth", key), index)
                if isinstance(item, dict):
                    yield join_path(path, "token"), item.get("token")
                else:
                    yield path, item
    models = data.get("model_list")
    for index, entry in enumerate(models if isinstance(models, list) else ()):
        params = entry.get("litellm_params") if isinstance(entry, dict) else None
        if isinstance(params, dict):
            yield f"model_list[{index}].litellm_params.api_key", params.get("api_key")
    limits = data.get("limits")
    if isinstance(limits, dict):
        yield "limits.redis_url", limits.get("redis_url")
    notify = data.get("notify")
    hooks = notify.get("webhooks") if isinstance(notify, dict) else None
    for index, hook in enumerate(hooks if isinstance(hooks, list) else ()):
        if not isinstance(hook, dict):
            continue
        path = f"notify.webhooks[{index}]"
        yield f"{path}.url", hook.get("url")
        yield f"{path}.secret", hook.get("secret")
        headers = hook.get("headers")
        for name, value in headers.items() if isinstance(headers, dict) else ():
            yield f"{path}.headers.{name}", value


def inline_secret_paths(data: Any) -> list[str]:
    """The YAML paths of secrets written into the file itself rather than referenced.

    A URL (webhook, Redis) counts when it may carry a credential: user info, a query or a
    path (webhook tokens live in paths).
    """
    found = []
    for path, value in _secret_values(data):
        if not isinstance(value, str) or not value or _is_reference(value):
            continue
        if path.endswith(".url") and not _url_may_hold_secret(value):
            continue
        found.append(path)
    return found


def _url_may_hold_secret(url: str) -> bool:
    rest = url.split("://", 1)[-1]
    host, _, path = rest.partition("/")
    return "@" in host or "?" in rest or bool(path.strip("/"))


# YAML paths whose values are (or may hold) secrets: a problem there does not quote them.
_SECRET_PATH = re.compile(
    r"api_key|(?:^|\.)(?:admin_)?tokens\[|\.secret\b|redis_url|\.headers\.|webhooks\[\d+\]\.url"
)


def redact_problems(problems: list[str]) -> list[str]:
    """``problems`` with the quoted value cut from those about a secret's place."""
    redacted = []
    for problem in problems:
        where, got, _ = problem.partition(" (got ")
        if got and _SECRET_PATH.search(where):
            problem = f"{where} (value not shown: it may be a secret)"
        redacted.append(problem)
    return redacted


def world_readable(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def secrets_warnings(files: Iterable[Path]) -> list[str]:
    """One warning per config file that every user can read and that holds inline secrets."""
    warnings = []
    for path in files:
        if not path.exists() or not world_readable(path):
            continue
        try:
            paths = inline_secret_paths(read_yaml(path))
        except ConfigError:
            continue  # loading the config reports it
        if paths:
            warnings.append(
                f"{path} is readable by every user and holds secrets inline "
                f"({', '.join(paths)}): run `chmod 600 {path}` or use ${{env:NAME}} / "
                "${file:PATH} references"
            )
    return warnings
