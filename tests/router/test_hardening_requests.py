"""Odd but possible requests: compressed bodies, paths that climb out of /v1, and malformed
requests that must not flood the logs."""

from __future__ import annotations

import asyncio
import gzip
import logging

import aiohttp
import orjson
import pytest

from llmops.router.guard import escapes_api_root
from tests.conftest import StartRouter, StartSim, router_config

CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize(
    ("path", "escapes"),
    [
        ("/v1/chat/completions", False),
        ("/v1/chat/completions?x=../y", False),  # the query is not the path
        ("/v1/models.list", False),
        ("/v1/files/a..b", False),
        ("/v1/../admin/reload", True),
        ("/v1/./chat/completions", True),
        ("/v1/%2e%2e/sim/mode", True),
        ("/v1/%2E%2e/sim/mode", True),
        ("/v1/..%2fsim/mode", True),
        ("/v1/chat/..", True),
        ("/v1/chat\\..\\x", True),
        ("/v1/%5c..%5cx", True),
    ],
)
def test_escapes_api_root(path: str, escapes: bool) -> None:
    assert escapes_api_root(path) is escapes


async def test_gzip_body_is_decoded_and_forwarded_plain(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)]))
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with http.post(
        f"{url}/v1/chat/completions", data=gzip.compress(CHAT), headers=headers
    ) as response:
        assert response.status == 200, await response.text()
    async with http.post(
        f"{url}/v1/chat/completions", data=CHAT, headers=headers
    ) as response:  # says gzip, is not
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_body"
    assert sim.state.by_path["/v1/chat/completions"] == 1


async def test_paths_out_of_v1_are_refused_not_forwarded(
    start_sim: StartSim, start_router: StartRouter
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)]))
    host, port = url.removeprefix("http://").rsplit(":", 1)
    for path in ("/v1/../sim/mode", "/v1/%2e%2e/sim/mode", "/v1/chat/..%2f..%2fsim/mode"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n"
            f"Content-Length: {len(CHAT)}\r\n\r\n".encode()
            + CHAT
        )
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b'"invalid_path"' in answer
    assert not [p for p in sim.state.by_path if p.startswith("/v1/") and p != "/v1/models"]


async def test_malformed_requests_are_not_logged_as_errors(
    start_sim: StartSim, start_router: StartRouter, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)]))
    host, port = url.removeprefix("http://").rsplit(":", 1)
    malformed = [
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GARBAGE\x00\x01\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        for raw in malformed * 20:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(raw)
            answer = await reader.read()
            writer.close()
            assert answer.startswith(b"HTTP/1.") and b" 500 " not in answer[:20], answer[:100]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
