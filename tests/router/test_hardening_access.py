"""Access control: admin endpoints need a token or a loopback client; tokens limited to models."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from llmops.router.app import router_url, running_router
from llmops.router.auth import EVERY_MODEL, TokenSet
from llmops.router.guard import admin_refusal, is_loopback
from tests.conftest import StartRouter, StartSim, missing_part, require_binary, router_config

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
ADMIN_PATHS = [("GET", "/status"), ("GET", "/dashboard"), ("POST", "/admin/reload")]


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("192.0.2.2", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("0.0.0.0", False),
        ("localhost", False),  # a name is not an address: never trusted
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(peer: str | None, loopback: bool) -> None:
    assert is_loopback(peer) is loopback


def test_admin_refusal_table() -> None:
    # With admin tokens the token decides, wherever the client is.
    assert admin_refusal("10.0.0.1", True, True) is None
    assert admin_refusal("127.0.0.1", True, False) == "unauthorized"
    assert admin_refusal("10.0.0.1", True, False) == "unauthorized"
    # Without, only loopback gets in.
    assert admin_refusal("127.0.0.1", False, True) is None
    assert admin_refusal("10.0.0.1", False, True) == "forbidden"
    assert admin_refusal(None, False, True) == "forbidden"


def test_token_set_scopes() -> None:
    tokens = TokenSet(["open-token", ("scoped", frozenset({"a"})), ("both", frozenset({"a", "b"}))])
    assert tokens.allowed_models("Bearer open-token") is EVERY_MODEL
    assert tokens.allowed_models("bearer scoped") == frozenset({"a"})
    assert tokens.allowed_models("Bearer scoped2") is None
    assert tokens.allowed_models("Bearer ") is None
    assert tokens.allowed_models("Basic scoped") is None
    assert tokens.allowed_models(None) is None
    assert TokenSet([]).allowed_models(None) is EVERY_MODEL
    assert "anything" in EVERY_MODEL


async def test_admin_endpoints_need_the_admin_token_when_configured(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(
        router_config([("m", sim.url)], auth={"tokens": ["user-t"], "admin_tokens": ["admin-t"]})
    )
    for method, path in ADMIN_PATHS:
        for headers in ({}, {"Authorization": "Bearer user-t"}, {"Authorization": "admin-t"}):
            async with http.request(method, url + path, headers=headers) as response:
                assert response.status == 401, (path, headers)
                body = await response.json()
                assert body["error"]["code"] == "invalid_admin_token"
        admin = {"Authorization": "Bearer admin-t"}
        async with http.request(method, url + path, headers=admin) as response:
            assert response.status == 200, path
    # The admin token is good for inference too; a user token is not good for admin.
    admin = {"Authorization": "Bearer admin-t"}
    async with http.post(
        f"{url}/v1/chat/completions", json={"model": "m", **CHAT}, headers=admin
    ) as r:
        assert r.status == 200


async def test_scoped_tokens_see_and_use_only_their_models(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    a, b = await start_sim(model="a"), await start_sim(model="b")
    auth = {"tokens": ["all-t", {"token": "a-only", "models": ["a"]}]}
    url = await start_router(router_config([("a", a.url), ("b", b.url)], auth=auth))

    async def chat(token: str, model: str) -> tuple[int, dict[str, object]]:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(
            f"{url}/v1/chat/completions", json={"model": model, **CHAT}, headers=headers
        ) as response:
            return response.status, await response.json()

    async def models(token: str) -> list[str]:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{url}/v1/models", headers=headers) as response:
            assert response.status == 200
            return [m["id"] for m in (await response.json())["data"]]

    assert (await chat("a-only", "a"))[0] == 200
    status, body = await chat("a-only", "b")
    # Chosen: 404, exactly what an unknown model gets, so the token learns nothing about b.
    assert status == 404
    unknown_status, unknown_body = await chat("a-only", "no-such-model")
    assert unknown_status == 404
    assert body["error"]["code"] == unknown_body["error"]["code"] == "model_not_found"  # type: ignore[index]
    assert (await chat("all-t", "b"))[0] == 200
    assert (await chat("wrong", "a"))[0] == 401
    assert await models("a-only") == ["a"]
    assert await models("all-t") == ["a", "b"]
    async with http.get(f"{url}/sim/stats".replace(url, b.url)) as response:
        assert (await response.json())["requests"] == 1  # the refused request never reached b


async def test_without_admin_tokens_loopback_clients_may_administer(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)]))
    for method, path in ADMIN_PATHS:
        async with http.request(method, url + path) as response:
            assert response.status == 200, path


@contextlib.contextmanager
def network_namespace() -> Iterator[tuple[str, str, str]]:
    """A network namespace of the test's own joined to this one by a veth pair.

    Yields (namespace, address on our side, address inside): a client started inside the
    namespace reaches the router from a non-loopback address, and no packet leaves the
    machine.
    """
    ip = require_binary("ip", "/usr/sbin/ip", "/sbin/ip")
    tag = f"llm{os.getpid() % 100000}"
    namespace, host_side, inner_side = f"{tag}ns", f"{tag}h", f"{tag}n"
    ours, theirs = "10.213.7.1", "10.213.7.2"
    steps = [
        [ip, "netns", "add", namespace],
        [ip, "link", "add", host_side, "type", "veth", "peer", "name", inner_side],
        [ip, "link", "set", inner_side, "netns", namespace],
        [ip, "addr", "add", f"{ours}/24", "dev", host_side],
        [ip, "link", "set", host_side, "up"],
        [ip, "netns", "exec", namespace, ip, "addr", "add", f"{theirs}/24", "dev", inner_side],
        [ip, "netns", "exec", namespace, ip, "link", "set", inner_side, "up"],
    ]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=10)
            if done.returncode != 0:
                missing_part(f"cannot build a test network namespace: {done.stderr.strip()}")
        yield namespace, ours, theirs
    finally:
        subprocess.run([ip, "link", "del", host_side], capture_output=True, timeout=10)
        subprocess.run([ip, "netns", "del", namespace], capture_output=True, timeout=10)


_ASK_FROM_INSIDE = """
import json, sys, urllib.error, urllib.request
answers = []
for method, url in json.loads(sys.argv[1]):
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answers.append([response.status, response.read().decode()])
    except urllib.error.HTTPError as error:
        answers.append([error.code, error.read().decode()])
print(json.dumps(answers))
"""


async def test_non_loopback_client_is_refused_without_admin_tokens(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """A client in a network namespace of the test's own is not a loopback client."""
    sim = await start_sim(model="m")
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(router_config([("m", sim.url)])))
    with network_namespace() as (namespace, ours, _theirs):
        async with running_router(path, ours, 0) as runner:
            url = router_url(runner)
            calls = [[method, url + admin_path] for method, admin_path in ADMIN_PATHS]
            calls.append(["POST", f"{url}/v1/chat/completions"])  # (an empty body: a 400)
            calls.append(["GET", f"{url}/health"])
            done = await asyncio.to_thread(
                subprocess.run,
                [
                    "ip",
                    "netns",
                    "exec",
                    namespace,
                    sys.executable,
                    "-c",
                    _ASK_FROM_INSIDE,
                    json.dumps(calls),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    for (status, body), (_method, admin_path) in zip(answers, ADMIN_PATHS, strict=False):
        assert status == 403, admin_path
        error = json.loads(body)["error"]
        assert (error["type"], error["code"]) == ("permission_error", "admin_forbidden")
    # The OpenAI surface and liveness stay open to everyone (no inference tokens configured).
    assert answers[-2][0] == 400 and json.loads(answers[-2][1])["error"]["code"] == "missing_model"
    assert answers[-1][0] == 200
