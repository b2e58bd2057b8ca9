"""Access control: admin endpoints need a token or a loopback client; tokens limited to models."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest
import yaml

from llmops.router.app import router_url, running_router
from llmops.router.auth import EVERY_MODEL, TokenSet
from llmops.router.guard import admin_refusal, is_loopback
from tests.conftest import StartRouter, StartSim, router_config

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


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine outside 127.0.0.0/8 (traffic to it stays local)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5)
        for address in out.stdout.split():
            if "." in address and not address.startswith("127."):
                with socket.socket() as probe:
                    probe.bind((address, 0))  # it really is ours
                return address
    return None


async def test_non_loopback_client_is_refused_without_admin_tokens(
    start_sim: StartSim, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The router bound on one of this machine's own non-loopback addresses: a client there
    is not a loopback client (packets to an own address never leave the machine)."""
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address; the unit tests cover it")
    sim = await start_sim(model="m")
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(router_config([("m", sim.url)])))
    async with running_router(path, address, 0) as runner:
        url = router_url(runner)
        for method, admin_path in ADMIN_PATHS:
            async with http.request(method, url + admin_path) as response:
                assert response.status == 403, admin_path
                body = await response.json()
                assert body["error"]["type"] == "permission_error"
                assert body["error"]["code"] == "admin_forbidden"
        # The OpenAI surface stays open to everyone (no inference tokens configured).
        async with http.post(f"{url}/v1/chat/completions", json={"model": "m", **CHAT}) as r:
            assert r.status == 200
        async with http.get(f"{url}/health") as r:
            assert r.status == 200
