"""The proxy's HTTP/1.1 client against raw-socket servers that answer byte for byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmops.router.upstream_http import (
    UpstreamBodyError,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamPool,
    UpstreamProtocolError,
    encode_head,
    whole_chunks,
)

Answer = Callable[[bytes], list[bytes]]  # request bytes -> what to write back, piece by piece


class RawServer:
    """Answers each request with canned bytes, written piece by piece."""

    def __init__(self, answer: Answer, close_after: bool = False) -> None:
        self.answer, self.close_after = answer, close_after
        self.requests: list[bytes] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lengths = [
                    line
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ]
                body = await reader.readexactly(int(lengths[0].split(b":")[1]) if lengths else 0)
                self.requests.append(head + body)
                for piece in self.answer(head + body):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        for writer in self._writers:
            writer.close()
        await self.server.wait_closed()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., Awaitable[tuple[RawServer, int]]]]:
    started: list[RawServer] = []

    async def start(answer: Answer, close_after: bool = False) -> tuple[RawServer, int]:
        server = RawServer(answer, close_after)
        started.append(server)
        return server, await server.start()

    yield start
    for server in started:
        await server.stop()


async def roundtrip(pool: UpstreamPool, body: bytes = b"{}") -> tuple[int, bytes, bytes, bool]:
    connection = await pool.acquire(1.0)
    try:
        head = encode_head(
            "POST", "/v1/chat/completions", pool.host_header, b"x-a: 1\r\n", len(body)
        )
        connection.send(head, body)
        await connection.response_head()
        payload = await connection.read_body()
    except BaseException:
        connection.close()
        raise
    answer = (connection.status, connection.fields, payload, connection.reusable)
    connection.release()  # resets the connection for its next request
    return answer


def chunked(pieces: list[bytes], extension: bytes = b";ext=1") -> bytes:
    """``pieces`` as a chunked body, each size line with ``extension``."""
    sized = (b"%x%b\r\n%b\r\n" % (len(p), extension, p) for p in pieces if p)
    return b"".join(sized) + b"0\r\n\r\n"


StartRaw = Callable[..., Awaitable[tuple[RawServer, int]]]

# A body's pieces and the offsets where the network cuts it into packets.
PIECES = st.lists(st.binary(min_size=1, max_size=40), min_size=0, max_size=8)
CUTS = st.lists(st.integers(min_value=1, max_value=500), max_size=10)
PACKET_CUTS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def cut(raw: bytes, cuts: list[int]) -> list[bytes]:
    """``raw`` as packets, cut at the given offsets."""
    packets, position = [], 0
    for offset in sorted(set(cuts)):
        if position < offset < len(raw):
            packets.append(raw[position:offset])
            position = offset
    packets.append(raw[position:])
    return packets


@PACKET_CUTS
@given(pieces=PIECES, cuts=CUTS)
async def test_chunked_bodies_decode_whatever_the_packet_boundaries(
    pieces: list[bytes], cuts: list[int]
) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
        + chunked(pieces)
    )
    server = RawServer(lambda _: cut(raw, cuts))
    port = await server.start()
    pool = UpstreamPool("127.0.0.1", port, None)
    try:
        status, _, payload, reusable = await roundtrip(pool)
        assert (status, payload, reusable) == (200, b"".join(pieces), True)
        status, _, payload, _ = await roundtrip(pool)  # on the same, reused connection
        assert payload == b"".join(pieces)
        assert pool.idle_count == 1
    finally:
        pool.close()
        await server.stop()


def dechunk(framed: bytes) -> bytes:
    """The payload of whole chunks (as ``whole_chunks`` accepts them)."""
    payload, position = b"", 0
    while position < len(framed):
        end = framed.index(b"\r\n", position)
        size = int(framed[position:end], 16)
        payload += framed[end + 2 : end + 2 + size]
        position = end + 4 + size
    return payload


@PACKET_CUTS
@given(pieces=PIECES, cuts=CUTS, plain_sizes=st.booleans())
async def test_a_relay_passes_whole_chunks_on_as_they_came_and_decodes_the_rest(
    pieces: list[bytes], cuts: list[int], plain_sizes: bool
) -> None:
    # With chunk extensions, chunks are never passed on as they are.
    body = chunked(pieces, b"") if plain_sizes else chunked(pieces)
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    server = RawServer(lambda _: cut(raw, cuts))
    pool = UpstreamPool("127.0.0.1", await server.start(), None)
    relayed: list[bytes] = []
    try:
        connection = await pool.acquire(1.0)
        connection.send(encode_head("POST", "/x", pool.host_header, b"", 0), b"")
        await connection.response_head()
        await connection.relay(relayed.append, lambda framed: relayed.append(dechunk(framed)))
        assert b"".join(relayed) == b"".join(pieces)
        assert connection.reusable
        connection.release()
    finally:
        pool.close()
        await server.stop()


async def test_a_relay_passes_on_each_token_chunk_byte_for_byte() -> None:
    tokens = [b"5\r\nhello\r\n", b"1\r\n \r\n", b"5\r\nworld\r\n"]
    relaying = asyncio.Event()

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + tokens[0])
        await relaying.wait()
        for token in [*tokens[1:], b"0\r\n\r\n"]:  # one write per token, as engines do
            writer.write(token)
            await asyncio.sleep(0.01)
        await reader.read()
        writer.close()
        await writer.wait_closed()
        finished.set()

    finished = asyncio.Event()
    server = await asyncio.start_server(engine, "127.0.0.1", 0)
    pool = UpstreamPool("127.0.0.1", server.sockets[0].getsockname()[1], None)
    try:
        connection = await pool.acquire(1.0)
        connection.send(encode_head("POST", "/x", pool.host_header, b"", 0), b"")
        await connection.response_head()
        assert await connection.read_chunk() == b"hello"
        decoded: list[bytes] = []
        passed: list[bytes] = []
        relay = connection.relay(decoded.append, passed.append)
        relaying.set()
        await relay
        assert (passed, decoded) == (tokens[1:], [])
        assert connection.reusable
        connection.release()
    finally:
        pool.close()
        await asyncio.wait_for(finished.wait(), 5)
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (b"5\r\nhello\r\n", True),
        (b"5\r\nhello\r\n1\r\n!\r\n", True),
        (b"A\r\n0123456789\r\n", True),
        (b"0\r\n\r\n", False),  # the last chunk: the relay must see the end
        (b"5\r\nhello\r\n0\r\n\r\n", False),
        (b"5\r\nhel", False),
        (b"5\r\nhello", False),
        (b"5\r\nhelloXY", False),
        (b"5;x=1\r\nhello\r\n", False),
        (b"+5\r\nhello\r\n", False),
        (b"0_5\r\nhello\r\n", False),
        (b" 5\r\nhello\r\n", False),
        (b"g\r\nhello\r\n", False),
        (b"", True),
    ],
)
def test_whole_chunks(data: bytes, whole: bool) -> None:
    assert whole_chunks(data) is whole


async def test_content_length_head_and_request_bytes(raw_server: StartRaw) -> None:
    server, port = await raw_server(
        lambda _: [b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-Up: yes\r\n\r\nhel", b"lo"]
    )
    pool = UpstreamPool("127.0.0.1", port, None)
    status, headers, payload, reusable = await roundtrip(pool, b'{"a": 1}')
    pool.close()
    assert (status, payload, reusable) == (201, b"hello", True)
    assert headers == b"X-Up: yes\r\n"  # end to end only: Content-Length is the proxy's
    assert server.requests[0] == (
        b'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-a: 1\r\nContent-Length: 8\r\n\r\n{"a": 1}'
        % port
    )


async def test_interim_100_and_body_until_close(raw_server: StartRaw) -> None:
    _, port = await raw_server(
        lambda _: [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall",
            b" of it",
        ],
        close_after=True,
    )
    status, _, payload, reusable = await roundtrip(UpstreamPool("127.0.0.1", port, None))
    assert (status, payload, reusable) == (200, b"all of it", False)


async def test_broken_answers_raise_the_right_errors(raw_server: StartRaw) -> None:
    _, port = await raw_server(lambda _: [b"SMTP ready\r\n\r\n"])
    with pytest.raises(UpstreamProtocolError):
        await roundtrip(UpstreamPool("127.0.0.1", port, None))
    _, port = await raw_server(lambda _: [], close_after=True)
    with pytest.raises(UpstreamDisconnected):
        await roundtrip(UpstreamPool("127.0.0.1", port, None))
    _, port = await raw_server(
        lambda _: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"], close_after=True
    )
    with pytest.raises(UpstreamBodyError):
        await roundtrip(UpstreamPool("127.0.0.1", port, None))
    with pytest.raises(UpstreamConnectError):
        await UpstreamPool("127.0.0.1", 9, None).acquire(1.0)


async def test_a_slow_reader_pauses_the_socket(raw_server: StartRaw) -> None:
    megabyte = b"x" * (1024 * 1024)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (8 * len(megabyte))
    _, port = await raw_server(lambda _: [head] + [megabyte] * 8)
    pool = UpstreamPool("127.0.0.1", port, None)
    connection = await pool.acquire(1.0)
    connection.send(encode_head("POST", "/", pool.host_header, b"", 0), b"")
    await connection.response_head()
    await asyncio.sleep(0.3)  # the server writes as fast as it can while nobody reads
    buffered = sum(len(piece) for piece in connection._body)
    assert buffered < 2 * 1024 * 1024  # paused near the high-water mark, not 8 MiB
    assert len(await connection.read_body()) == 8 * len(megabyte)
    connection.release()
    pool.close()


async def test_bytes_on_an_idle_connection_never_answer_the_next_request(
    raw_server: StartRaw,
) -> None:
    stray = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
    fresh = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"
    answers = iter([[fresh, stray], [fresh]])  # the first answer is followed by a stray one
    _, port = await raw_server(lambda _: next(answers))
    pool = UpstreamPool("127.0.0.1", port, None)
    assert (await roundtrip(pool))[2] == b"fresh"
    await asyncio.sleep(0.1)  # the stray response arrives while the connection is idle
    assert pool.idle_count == 0  # dropped, not reused
    assert (await roundtrip(pool))[2] == b"fresh"
    pool.close()
