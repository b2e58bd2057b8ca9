"""Secrets stay secret: no API key or token in logs, error bodies, /status, /metrics,
`router check` output or webhook payloads; world-readable configs with inline secrets warn."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from typer.testing import CliRunner

from llmops.config import load_router_config
from llmops.config.secrets_check import inline_secret_paths, secrets_warnings
from llmops.router.cli import app as router_cli
from tests.conftest import StartRouter, StartSim, serving

BACKEND_KEY = "sk-backend-SECRET-d41d8cd9"
USER_TOKEN = "tok-user-SECRET-8f00b204"
SCOPED_TOKEN = "tok-scoped-SECRET-e9800998"
ADMIN_TOKEN = "tok-admin-SECRET-ecf8427e"
WEBHOOK_SECRET = "whsec-SECRET-0b9c2625"
SECRETS = (BACKEND_KEY, USER_TOKEN, SCOPED_TOKEN, ADMIN_TOKEN, WEBHOOK_SECRET)
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def leaks(text: str | bytes) -> list[str]:
    """The secrets (or a long enough piece of one) found in ``text``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [s for s in SECRETS if s in text or s.split("SECRET-")[1] in text]


@pytest.fixture
async def webhook_bodies() -> AsyncIterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(text="ok")

    hook = web.Application()
    hook.router.add_post("/hook", receive)
    async with serving(hook) as url:
        yield f"{url}/hook", bodies


async def test_no_secret_reaches_any_output(
    start_sim: StartSim,
    start_router: StartRouter,
    http: aiohttp.ClientSession,
    webhook_bodies: tuple[str, list[bytes]],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    hook_url, bodies = webhook_bodies
    sim = await start_sim(model="m", api_key=BACKEND_KEY)  # proves the key is sent upstream
    config = {
        "auth": {
            "tokens": [USER_TOKEN, {"token": SCOPED_TOKEN, "models": ["m"]}],
            "admin_tokens": [ADMIN_TOKEN],
        },
        "access_log": {"enabled": True, "format": "json"},
        "health_check": {"interval": 0.2, "timeout": 0.5, "failure_threshold": 1},
        "routing": {"num_retries": 1},
        "notify": {
            "webhooks": [
                {"url": hook_url, "secret": WEBHOOK_SECRET, "min_interval": 0},
                {"url": hook_url, "format": "feishu", "secret": WEBHOOK_SECRET, "min_interval": 0},
            ],
            "batch_window": 0.1,
        },
        "model_list": [
            {"model_name": "m", "litellm_params": {"api_base": f"{sim.url}/v1", "api_key": BACKEND_KEY}},
            # A backend that refuses connections: errors, events and last_error to look at.
            {"model_name": "dead", "litellm_params": {"api_base": "http://127.0.0.1:9/v1", "api_key": BACKEND_KEY}},
        ],
    }  # fmt: skip
    seen: list[str | bytes] = []
    with caplog.at_level(logging.DEBUG):
        url = await start_router(config)
        user, admin = (
            {"Authorization": f"Bearer {USER_TOKEN}"},
            {"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        scoped = {"Authorization": f"Bearer {SCOPED_TOKEN}"}
        calls = [
            ("POST", "/v1/chat/completions", {"model": "m", **CHAT}, user, 200),
            ("POST", "/v1/chat/completions", {"model": "m", **CHAT, "stream": True}, scoped, 200),
            ("POST", "/v1/chat/completions", {"model": "dead", **CHAT}, user, None),
            ("POST", "/v1/chat/completions", {"model": "dead", **CHAT}, scoped, 404),
            ("POST", "/v1/chat/completions", {"model": "m", **CHAT}, {"Authorization": f"Bearer {USER_TOKEN}x"}, 401),
            ("POST", "/v1/chat/completions", {"model": "m", **CHAT}, {"Authorization": USER_TOKEN}, 401),
            ("GET", "/status", None, user, 401),
            ("POST", "/admin/backends/m@nope/drain", None, admin, 404),
            ("POST", f"/admin/backends/m@{sim.url.removeprefix('http://')}/drain", None, admin, 200),
            ("POST", f"/admin/backends/m@{sim.url.removeprefix('http://')}/undrain", None, admin, 200),
            ("GET", "/status", None, admin, 200),
            ("GET", "/metrics", None, {}, 200),
            ("GET", "/v1/models", None, scoped, 200),
        ]  # fmt: skip
        for method, path, body, headers, expected in calls:
            async with http.request(method, url + path, json=body, headers=headers) as response:
                if expected is not None:
                    assert response.status == expected, (path, await response.text())
                seen.append(await response.read())
                seen.append(str(dict(response.headers)))
        async with asyncio.timeout(10):
            while not any(b"undrained" in body for body in bodies):
                await asyncio.sleep(0.05)
    seen.extend(bodies)
    seen.extend(r.getMessage() for r in caplog.records)
    seen.extend(str(r.args) for r in caplog.records)
    assert any(b'"model":"m"' in s for s in seen if isinstance(s, bytes))  # the access log ran

    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    result = CliRunner().invoke(router_cli, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "****" in result.output
    assert "readable by every user" in result.output  # the warning names paths, not values
    seen.append(result.output)
    seen.append(repr(load_router_config(path)))  # what a log line or a traceback could show

    for item in seen:
        assert leaks(item) == [], item


def test_inline_secret_paths() -> None:
    data = {
        "auth": {
            "tokens": ["inline", "${env:T}", {"token": "inline2", "models": ["a"]}],
            "admin_tokens": ["${file:/run/credentials/x/admin}"],
        },
        "model_list": [
            {"model_name": "a", "litellm_params": {"api_base": "http://h/v1", "api_key": "sk-1"}},
            {"model_name": "b", "litellm_params": {"api_base": "http://h/v1", "api_key": "x${env:K}"}},
            {"model_name": "c", "litellm_params": {"api_base": "http://h/v1"}},
        ],
        "limits": {"redis_url": "redis://:pw@127.0.0.1:6379/0"},
        "notify": {
            "webhooks": [
                {"url": "https://hooks.example/services/T0/B0/XYZ", "headers": {"X-Key": "k"}},
                {"url": "https://hooks.example", "secret": "${env:S}"},
            ]
        },
    }  # fmt: skip
    assert inline_secret_paths(data) == [
        "auth.tokens[0]",
        "auth.tokens[2].token",
        "model_list[0].litellm_params.api_key",
        "limits.redis_url",
        "notify.webhooks[0].url",
        "notify.webhooks[0].headers.X-Key",
    ]
    assert inline_secret_paths({"model_list": [{"model_name": "a"}]}) == []
    assert inline_secret_paths(["not", "a", "mapping"]) == []


@pytest.mark.parametrize(
    ("mode", "api_key", "warned"),
    [
        (0o644, "sk-inline", True),
        (0o640, "sk-inline", False),
        (0o600, "sk-inline", False),
        (0o644, "${env:LLMOPS_TEST_KEY}", False),
    ],
)
def test_world_readable_inline_secrets_warn(
    tmp_path: Path, mode: int, api_key: str, warned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOPS_TEST_KEY", "k")
    path = tmp_path / "router.yaml"
    entry = {"model_name": "m", "litellm_params": {"api_base": "http://h/v1", "api_key": api_key}}
    path.write_text(yaml.safe_dump({"model_list": [entry]}))
    os.chmod(path, mode)
    warnings = secrets_warnings([path])
    assert bool(warnings) is warned
    if warned:
        assert "model_list[0].litellm_params.api_key" in warnings[0]
        assert "sk-inline" not in warnings[0]
        assert "chmod 600" in warnings[0]


async def test_router_start_logs_the_world_readable_warning(
    start_router: StartRouter, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"auth": {"tokens": [USER_TOKEN]}}  # start_router writes it with the umask: 0644
    old = os.umask(0o022)
    try:
        with caplog.at_level(logging.WARNING, logger="llmops.router"):
            await start_router(config)
    finally:
        os.umask(old)
    warnings = [
        r.getMessage() for r in caplog.records if "readable by every user" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "auth.tokens[0]" in warnings[0]
    assert leaks(warnings[0]) == []


async def test_inbound_tokens_never_reach_a_backend(
    start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    """A backend (and its logs) sees its own api_key or nothing, never a client's token."""
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"id": "x", "object": "chat.completion", "choices": []})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m"}, {"id": "k"}]})

    backend = web.Application()
    backend.router.add_post("/v1/chat/completions", record)
    backend.router.add_get("/v1/models", models)
    backend.router.add_get("/health", models)
    async with serving(backend) as backend_url:
        base = f"{backend_url}/v1"
        url = await start_router(
            {
                "auth": {"tokens": [USER_TOKEN], "admin_tokens": [ADMIN_TOKEN]},
                "model_list": [
                    {"model_name": "m", "litellm_params": {"api_base": base}},
                    {"model_name": "k", "litellm_params": {"api_base": base, "api_key": BACKEND_KEY}},
                ],
            }
        )  # fmt: skip
        for model in ("m", "k"):
            for token in (USER_TOKEN, ADMIN_TOKEN):
                async with http.post(
                    f"{url}/v1/chat/completions",
                    json={"model": model, **CHAT},
                    headers={"Authorization": f"Bearer {token}", "Proxy-Authorization": token},
                ) as response:
                    assert response.status == 200
    assert len(seen) == 4
    for headers, model in zip(seen, ("m", "m", "k", "k"), strict=True):
        assert leaks(str({k: v for k, v in headers.items() if k != "Authorization"})) == []
        if model == "m":
            assert "Authorization" not in headers
        else:
            assert headers["Authorization"] == f"Bearer {BACKEND_KEY}"


def test_config_problems_do_not_quote_secrets(tmp_path: Path) -> None:
    """A mistake next to a secret (a typo in a scoped token, a key given as a list) is
    reported by its YAML path without the value, by `router check` and at start alike."""
    path = tmp_path / "router.yaml"
    config = {
        "auth": {"tokens": [{"token": USER_TOKEN, "model": ["m"]}], "admin_tokens": [[ADMIN_TOKEN]]},
        "notify": {"webhooks": [{"url": "http://127.0.0.1:9/h", "secret": [WEBHOOK_SECRET]}]},
        "model_list": [
            {"model_name": "m", "litellm_params": {"api_base": "http://h/v1", "api_key": [BACKEND_KEY], "weight": "x"}}
        ],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    result = CliRunner().invoke(router_cli, ["check", "--config", str(path)])
    assert result.exit_code != 0
    problems = getattr(result.exception, "problems", [])
    assert len(problems) == 5, problems
    assert any("auth.tokens[0]" in p and "value not shown" in p for p in problems)
    assert any("weight: must be a number (got a string 'x')" in p for p in problems)  # not secret
    assert leaks(str(result.exception)) == []
