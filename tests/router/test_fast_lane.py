"""The fast lane over raw sockets: what it answers goes out byte-correct and in order, and
what it does not take (pieces, HTTP/1.0) still gets the right answer from aiohttp's side."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import orjson
import pytest

from llmops.router.fastlane import FastLane
from tests.conftest import StartRouter, StartSim, router_config, router_process
from tests.router.test_hardening_slow_clients import connect
from tests.router.test_resilience_health import write_config

Reader = asyncio.StreamReader


def post(body: dict[str, object], *headers: str, version: str = "1.1") -> bytes:
    raw = orjson.dumps(body)
    lines = [f"POST /v1/chat/completions HTTP/{version}", "Host: r", *headers]
    lines.append(f"Content-Length: {len(raw)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


def chat(tag: str, stream: bool = False, max_tokens: int = 3) -> dict[str, object]:
    message = {"role": "user", "content": tag}
    return {"model": "m", "messages": [message], "max_tokens": max_tokens, "stream": stream}


async def read_response(reader: Reader) -> tuple[bytes, dict[str, str], bytes]:
    """The status line, the headers (lower-case names) and the de-chunked body."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, *fields = head[:-4].split(b"\r\n")
    headers = {
        k.strip().lower().decode(): v.strip().decode()
        for k, _, v in (f.partition(b":") for f in fields)
    }
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") != "chunked":
        return status, headers, await reader.read()  # framed by the end of the connection
    body = b""
    while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
        body += await reader.readexactly(size)
        assert await reader.readexactly(2) == b"\r\n"
    assert await reader.readexactly(2) == b"\r\n"
    return status, headers, body


async def test_pipelined_requests_are_answered_in_order_on_one_connection(
    start_sim: StartSim, start_router: StartRouter
) -> None:
    sim = await start_sim(model="m", itl_ms=5)
    url = await start_router(router_config([("m", sim.url)]))
    reader, writer = await connect(url)
    tags = ["first", "second", "third"]
    writer.write(
        b"".join(post(chat(tag, stream=tag == "second"), f"X-Request-Id: {tag}") for tag in tags)
    )
    for tag in tags:
        status, headers, body = await read_response(reader)
        assert status == b"HTTP/1.1 200 OK"
        assert headers["x-request-id"] == tag
        if tag == "second":
            assert headers["transfer-encoding"] == "chunked"
            assert body.endswith(b"data: [DONE]\n\n")
        else:
            assert orjson.loads(body)["object"] == "chat.completion"
            assert "date" in headers
    writer.close()
    assert sim.state.by_path["/v1/chat/completions"] == 3


async def test_a_request_sent_during_a_stream_waits_for_the_stream_to_end(
    start_sim: StartSim, start_router: StartRouter
) -> None:
    sim = await start_sim(model="m", itl_ms=20)
    url = await start_router(router_config([("m", sim.url)]))
    reader, writer = await connect(url)
    writer.write(post(chat("stream", stream=True, max_tokens=10), "X-Request-Id: stream"))
    await reader.readuntil(b"\r\n\r\n")  # the stream has begun
    writer.write(post(chat("next"), "X-Request-Id: next"))
    body = b""
    while not body.endswith(b"0\r\n\r\n"):
        body += await reader.read(65536)
    assert body.count(b'"content":"') >= 10 and b"next" not in body
    status, headers, _ = await read_response(reader)
    assert status == b"HTTP/1.1 200 OK" and headers["x-request-id"] == "next"
    writer.close()


async def test_reading_pauses_while_a_big_request_waits_behind_a_stream(
    start_sim: StartSim, start_router: StartRouter
) -> None:
    """What a client pipelines behind a stream is held to 64 KiB: the router stops reading,
    the client's sends stall, and nothing is lost once the stream is over."""
    sim = await start_sim(model="m", itl_ms=100)
    url = await start_router(router_config([("m", sim.url)]))
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()

    async def pump() -> None:  # the socket's bytes into the reader, beside raw sends
        while data := await loop.sock_recv(sock, 65536):
            reader.feed_data(data)
        reader.feed_eof()

    pumping = asyncio.create_task(pump())
    await loop.sock_sendall(sock, post(chat("stream", stream=True, max_tokens=15)))  # ~1.5 s
    assert b" 200 " in await reader.readuntil(b"\r\n\r\n")  # the stream has begun
    big = {**chat("big"), "user": "x" * (24 * 2**20)}  # 24 MiB, padding the engine ignores
    queued = memoryview(post(big, "X-Request-Id: big"))
    sent = 0
    pushing_until = time.monotonic() + 0.5
    while time.monotonic() < pushing_until:
        try:
            sent += sock.send(queued[sent : sent + 2**20])
        except BlockingIOError:
            await asyncio.sleep(0.02)
    assert sent < 2 * 2**20, f"the router kept reading: {sent} bytes taken mid-stream"
    rest = asyncio.ensure_future(loop.sock_sendall(sock, queued[sent:]))
    stream = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10)
    assert stream.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")  # the stream ended whole
    assert stream.count(b'"content":"') >= 15
    await asyncio.wait_for(rest, 30)
    status, headers, body = await asyncio.wait_for(read_response(reader), 30)
    assert status == b"HTTP/1.1 200 OK" and headers["x-request-id"] == "big"
    assert orjson.loads(body)["object"] == "chat.completion"
    assert sim.state.by_path["/v1/chat/completions"] == 2
    pumping.cancel()
    sock.close()


async def handoffs(url: str) -> float:
    """The router's count of connections handed to aiohttp's side (this request's included)."""
    reader, writer = await connect(url)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
    _, _, text = await read_response(reader)
    writer.close()
    line = next(x for x in text.splitlines() if x.startswith(b"llmops_router_lane_handoffs_total"))
    return float(line.split()[1])


@pytest.mark.parametrize(
    ("data", "coming"),
    [
        (b"P", True),
        (b"POST /v", True),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Le", True),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\n\r\n", False),  # whole: parsed
        (b"GET /v1/models HTTP/1.1\r\n", False),
        (b"POST /admin/reload HTTP/1.1\r\n", False),
        (b"PUT /v1/x", False),
    ],
)
def test_the_lane_waits_only_for_the_rest_of_a_head_it_could_take(
    data: bytes, coming: bool
) -> None:
    assert FastLane.head_coming(data) is coming


async def test_a_request_in_pieces_stays_in_the_fast_lane(
    start_sim: StartSim, start_router: StartRouter
) -> None:
    """A head split across reads (longer than a packet, or written in pieces) is gathered
    by the lane; only what the lane cannot take moves a connection to aiohttp's side."""
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)]))
    before = await handoffs(url)
    reader, writer = await connect(url)
    raw = post(chat("pieces"), "X-Request-Id: pieces", "X-Padding: " + "p" * 3000)
    for cut in (3, 20, 1500, len(raw) - 10):  # in the request line, the head, the body
        writer.write(raw[:cut])
        raw = raw[cut:]
        await asyncio.sleep(0.05)
    writer.write(raw)
    status, headers, _ = await read_response(reader)
    assert status == b"HTTP/1.1 200 OK" and headers["x-request-id"] == "pieces"
    writer.write(post(chat("whole"), "X-Request-Id: whole"))
    status, headers, _ = await read_response(reader)
    assert status == b"HTTP/1.1 200 OK" and headers["x-request-id"] == "whole"
    assert await handoffs(url) == before + 1  # the second count's own GET, nothing else
    chunked = b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n"
    body = orjson.dumps(chat("chunked"))
    writer.write(chunked[:30])  # in pieces, and not the lane's: aiohttp answers it
    await asyncio.sleep(0.05)
    writer.write(chunked[30:] + b"\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(body), body))
    status, _, answer = await read_response(reader)
    assert status == b"HTTP/1.1 200 OK" and orjson.loads(answer)["object"] == "chat.completion"
    assert await handoffs(url) == before + 3  # this connection, and the third count's GET
    writer.close()
    assert sim.state.by_path["/v1/chat/completions"] == 3


async def test_a_head_too_long_to_gather_goes_to_aiohttps_side_whole(
    start_sim: StartSim, start_router: StartRouter
) -> None:
    """The lane gathers at most 64 KiB of a head; past that, the connection and every byte
    it gathered go to aiohttp's side, which answers the request as it came."""
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)]))
    before = await handoffs(url)
    reader, writer = await connect(url)
    big = [f"X-Big-{i}: " + "b" * 7000 for i in range(13)]  # 91 KB of head, each line allowed
    raw = post(chat("big head"), "X-Request-Id: big", *big)
    for start in range(0, len(raw), 20_000):  # 80 KB before the terminator: past the cap
        writer.write(raw[start : start + 20_000])
        await asyncio.sleep(0.05)
    status, headers, body = await asyncio.wait_for(read_response(reader), 10)
    assert status == b"HTTP/1.1 200 OK" and headers["x-request-id"] == "big"
    assert orjson.loads(body)["object"] == "chat.completion"
    writer.close()
    assert await handoffs(url) == before + 2  # this connection, and the second count's GET
    assert sim.state.by_path["/v1/chat/completions"] == 1


async def test_a_body_in_pieces_is_gathered_and_answered(
    start_sim: StartSim, start_router: StartRouter
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)]))
    reader, writer = await connect(url)
    for tag in ("first", "second"):
        raw = post(chat(" ".join([tag] * 2000)), f"X-Request-Id: {tag}")  # a long prompt
        head_end = raw.index(b"\r\n\r\n") + 4
        for piece in (raw[:head_end], raw[head_end : head_end + 100], raw[head_end + 100 :]):
            writer.write(piece)
            await asyncio.sleep(0.05)
        status, headers, body = await read_response(reader)
        assert status == b"HTTP/1.1 200 OK" and headers["x-request-id"] == tag
        assert orjson.loads(body)["usage"]["prompt_tokens"] > 1000  # the whole prompt arrived
    writer.close()
    assert sim.state.by_path["/v1/chat/completions"] == 2


async def test_connection_close_is_honoured(start_sim: StartSim, start_router: StartRouter) -> None:
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)]))
    for stream in (False, True):
        reader, writer = await connect(url)
        writer.write(post(chat("bye", stream=stream), "Connection: close"))
        status, headers, body = await read_response(reader)
        assert status == b"HTTP/1.1 200 OK" and body
        assert headers.get("connection") == "close" or stream
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the router closed it
        writer.close()


async def test_an_http10_stream_is_sent_unchunked_and_ends_with_the_connection(
    start_sim: StartSim, start_router: StartRouter
) -> None:
    sim = await start_sim(model="m", itl_ms=5)
    url = await start_router(router_config([("m", sim.url)]))
    reader, writer = await connect(url)
    writer.write(post(chat("old", stream=True), version="1.0"))
    status, headers, body = await asyncio.wait_for(read_response(reader), 10)
    assert status.startswith(b"HTTP/1.") and b" 200 " in status
    assert "transfer-encoding" not in headers and "content-length" not in headers
    assert body.startswith(b"data: {") and body.endswith(b"data: [DONE]\n\n")
    writer.close()


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout_but_not_mid_stream(
    start_sim: StartSim, start_router: StartRouter
) -> None:
    sim = await start_sim(model="m", itl_ms=100)
    url = await start_router(router_config([("m", sim.url)], server={"keepalive_timeout": 0.5}))
    reader, writer = await connect(url)
    writer.write(post(chat("long", stream=True, max_tokens=12)))  # ~1.2 s: past the timeout
    status, _, body = await read_response(reader)
    assert status == b"HTTP/1.1 200 OK" and body.endswith(b"data: [DONE]\n\n")
    idle_since = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    idle = time.monotonic() - idle_since
    assert 0.4 <= idle <= 2.0, idle
    writer.close()


async def test_sigterm_waits_for_a_request_whose_body_is_still_coming(
    start_sim: StartSim, tmp_path: Path
) -> None:
    sim = await start_sim(model="m")
    config = tmp_path / "router.yaml"
    write_config(config, router_config([("m", sim.url)]))
    async with router_process(config) as (router, url):
        reader, writer = await connect(url)
        raw = post(chat("late"))
        writer.write(raw[:-5])  # the head and most of the body
        await asyncio.sleep(0.2)
        router.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        writer.write(raw[-5:])  # the rest comes while the router is stopping
        status, _, body = await asyncio.wait_for(read_response(reader), 10)
        writer.close()
        exit_code = await asyncio.to_thread(router.wait, 20)
    assert status == b"HTTP/1.1 200 OK"
    assert orjson.loads(body)["object"] == "chat.completion"
    assert exit_code == 0
