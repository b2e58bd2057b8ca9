"""Slow and greedy clients: slowloris heads and bodies, oversized heads, too many connections,
and a reader so slow that only backpressure keeps the router's memory bounded."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import yaml

from llmops.sim import SimOptions, running_sim
from tests.conftest import StartRouter, StartSim, router_config

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAT = orjson.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
)


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def sim_requests(sim_url: str) -> int:
    host, port = sim_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /sim/stats HTTP/1.1\r\nHost: s\r\n\r\n")
    _, _, body = await read_response(reader)
    writer.close()
    return int(orjson.loads(body)["requests"])


async def closed_after(reader: asyncio.StreamReader, limit_s: float) -> float:
    """Seconds until the server closes the connection (EOF or reset)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit_s):
            while await reader.read(4096):
                pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


async def test_slowloris_head_is_cut_off(start_sim: StartSim, start_router: StartRouter) -> None:
    sim = await start_sim(model="m")
    url = await start_router(
        router_config([("m", sim.url)], server={"header_timeout": 1.0, "keepalive_timeout": 3.0})
    )
    head = post(CHAT).split(b"\r\n\r\n")[0]

    async def dribble(writer: asyncio.StreamWriter) -> None:
        for byte in head:  # one byte every 50 ms: the head would take seconds to arrive
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    # The first request's head, dribbled from the start: cut ~1 s after the connection opened.
    reader, writer = await connect(url)
    sender = asyncio.create_task(dribble(writer))
    assert 0.8 < await closed_after(reader, 10) < 3
    sender.cancel()
    writer.close()

    # A connection that sends nothing at all is cut as soon.
    reader, writer = await connect(url)
    assert 0.8 < await closed_after(reader, 10) < 3
    writer.close()

    # A keep-alive connection may idle longer than a head may take (keepalive_timeout) ...
    reader, writer = await connect(url)
    writer.write(post(CHAT))
    assert (await read_response(reader))[0] == 200
    await asyncio.sleep(1.5)
    writer.write(post(CHAT))
    assert (await read_response(reader))[0] == 200
    # ... but its next head is timed from its first byte.
    await asyncio.sleep(0.5)
    sender = asyncio.create_task(dribble(writer))
    started = time.monotonic()
    await closed_after(reader, 10)
    assert 0.8 < time.monotonic() - started < 2.5
    sender.cancel()
    writer.close()

    # An idle keep-alive connection is closed after keepalive_timeout.
    reader, writer = await connect(url)
    writer.write(post(CHAT))
    assert (await read_response(reader))[0] == 200
    assert 2 < await closed_after(reader, 10) < 5
    writer.close()
    assert await sim_requests(sim.url) == 3  # only the complete requests


async def test_slow_body_gets_408_and_is_not_forwarded(
    start_sim: StartSim, start_router: StartRouter
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)], server={"body_timeout": 0.5}))
    reader, writer = await connect(url)
    request = post(CHAT)
    writer.write(request[:-10])  # all but the last 10 bytes of the body, then nothing
    started = time.monotonic()
    status, headers, body = await read_response(reader)
    assert 0.4 < time.monotonic() - started < 4
    assert status == 408
    assert orjson.loads(body)["error"]["code"] == "body_timeout"
    assert headers["connection"] == "close"
    assert await sim_requests(sim.url) == 0
    writer.close()


async def test_oversized_and_too_many_headers_are_refused(
    start_sim: StartSim, start_router: StartRouter
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(
        router_config([("m", sim.url)], server={"max_header_bytes": 4096, "max_headers": 20})
    )
    cases = {
        "one huge header": b"X-Big: " + b"a" * 5000 + b"\r\n",
        "huge request line": b"",
        "too many headers": b"".join(b"X-H%d: v\r\n" % i for i in range(30)),
    }
    for name, extra in cases.items():
        reader, writer = await connect(url)
        request = post(CHAT, extra)
        if name == "huge request line":
            request = request.replace(b"/v1/chat/completions", b"/v1/" + b"p" * 5000, 1)
        writer.write(request)
        status, headers, body = await read_response(reader)
        assert status in (400, 413, 431), (name, status)
        assert headers["content-type"] == "application/json"  # OpenAI-shaped, as all errors
        assert orjson.loads(body)["error"]["type"] == "invalid_request_error"
        writer.close()
    # Just under the limits is fine.
    reader, writer = await connect(url)
    writer.write(post(CHAT, b"X-Big: " + b"a" * 4000 + b"\r\n"))
    assert (await read_response(reader))[0] == 200
    writer.close()
    assert await sim_requests(sim.url) == 1


async def test_connections_past_the_cap_get_a_clear_503(
    start_sim: StartSim, start_router: StartRouter
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)], server={"max_connections": 3}))
    held = []
    for _ in range(3):  # three keep-alive connections, each proven open by a request
        reader, writer = await connect(url)
        writer.write(post(CHAT))
        assert (await read_response(reader))[0] == 200
        held.append((reader, writer))

    reader, writer = await connect(url)
    writer.write(post(CHAT))
    status, headers, body = await read_response(reader)
    assert status == 503
    assert headers["retry-after"] == "1"
    assert orjson.loads(body)["error"]["code"] == "too_many_connections"
    assert await closed_after(reader, 5) < 5
    writer.close()

    # The held connections still work, and once one closes a newcomer gets in.
    reader, writer = held[0]
    writer.write(post(CHAT))
    assert (await read_response(reader))[0] == 200
    writer.close()
    await writer.wait_closed()
    for _ in range(50):  # the router notices the close within a loop turn or two
        await asyncio.sleep(0.02)
        reader, writer = await connect(url)
        writer.write(post(CHAT))
        status, _, _ = await read_response(reader)
        writer.close()
        if status == 200:
            break
    assert status == 200
    for _, held_writer in held[1:]:
        held_writer.close()
    assert await sim_requests(sim.url) == 5


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_stalled_stream_reader_does_not_make_the_router_buffer(tmp_path: Path) -> None:
    """Eight streams of ~3 MB each; their clients stop reading. The engine generates them all
    anyway, so if the router read on regardless it would hold ~25 MB. With backpressure the
    router process grows by a small fraction of that, and every byte arrives once read."""
    streams, tokens = 8, 15000
    options = SimOptions(
        port=0, model="m", ttft_ms=1, itl_ms=0.01, output_len=tokens, max_model_len=32768
    )
    async with running_sim(options) as sim:
        config = tmp_path / "router.yaml"
        config.write_text(yaml.safe_dump(router_config([("m", sim.url)])))
        # The code under test, not whatever `llmops` is first on PATH.
        router = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmops", "router", "serve", "--config", str(config),
            "--port", "0", stdout=subprocess.PIPE, cwd=REPO_ROOT,
        )  # fmt: skip
        clients: list[socket.socket] = []
        try:
            assert router.stdout is not None
            ready = (await asyncio.wait_for(router.stdout.readline(), 30)).decode()
            found = re.search(r"http://([\d.]+):(\d+)", ready)
            assert found, ready
            address = (found.group(1), int(found.group(2)))
            body = orjson.dumps(
                {
                    "model": "m",
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": True,
                    "max_tokens": tokens,
                    "ignore_eos": True,
                }
            )
            baseline = _rss_bytes(router.pid)
            for _ in range(streams):
                client = socket.socket()
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader
                client.setblocking(False)
                await asyncio.get_running_loop().sock_connect(client, address)
                await asyncio.get_running_loop().sock_sendall(
                    client, post(body, b"Connection: close\r\n")
                )
                clients.append(client)
            peak = baseline
            # Stall until the engine is done: every token exists, held back by backpressure.
            async with asyncio.timeout(60):
                while sim.state.stats()["completed"] < streams:
                    await asyncio.sleep(0.1)
                    peak = max(peak, _rss_bytes(router.pid))
            for _ in range(5):  # and a little longer, in case anything still trickles in
                await asyncio.sleep(0.1)
                peak = max(peak, _rss_bytes(router.pid))

            received = 0
            async with asyncio.timeout(60):
                for client in clients:  # each answer ends with the connection (Connection: close)
                    tail = b""
                    while data := await asyncio.get_running_loop().sock_recv(client, 65536):
                        received += len(data)
                        tail = (tail + data)[-64:]
                    assert b"data: [DONE]" in tail, tail
                    client.close()
            growth = peak - baseline
            print(f"streamed {received / 1e6:.1f} MB; router RSS grew {growth / 1e6:.1f} MB")
            assert received > streams * tokens * 100  # ~200 bytes per token chunk
            assert growth < 0.25 * received
        finally:
            for client in clients:
                client.close()
            router.terminate()
            try:
                await asyncio.wait_for(router.wait(), 30)
            except TimeoutError:
                router.kill()
                await router.wait()
