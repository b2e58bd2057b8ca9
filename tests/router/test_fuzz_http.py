"""Property-based fuzzing of the router's HTTP surface, in front of a real sim.

Raw bytes go over a socket so that anything can be sent: malformed bodies and JSON shapes,
huge and non-UTF-8 strings, deep nesting, odd methods and paths, duplicate and oversized
headers, conflicting Content-Length/Transfer-Encoding. The properties:

- the router never answers 500 (a client's mistake is a 4xx), and it never crashes;
- it forwards exactly the requests it should: the sim's own per-path counters prove that
  nothing malformed (and nothing outside ``/v1/``) reached it, and nothing was sent twice;
- a correct request succeeds after every case.

The router and sim run on their own event loop in a thread; hypothesis drives plain sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmops.router.app import running_router
from llmops.sim import SimOptions, running_sim
from tests.conftest import router_config

MAX_BODY_BYTES = 256 * 1024
INFERENCE_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
VALID_CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
ALLOWED_STATUSES = {200, 400, 401, 403, 404, 405, 408, 413, 414, 422, 431}
CASES: Counter[str] = Counter()
SETTINGS = settings(
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@dataclass
class Lab:
    address: tuple[str, int]
    sim_paths: Counter[str]  # the sim's live per-path request counter

    def forwarded(self) -> Counter[str]:
        """What reached the sim's API (health checks and scrapes excluded)."""
        probes = ("/health", "/metrics", "/v1/models")
        return Counter({p: n for p, n in self.sim_paths.items() if p not in probes})


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    config = router_config(
        [],
        server={"max_body_bytes": MAX_BODY_BYTES, "body_timeout": 1.0, "header_timeout": 5.0},
        routing={"num_retries": 0},
        health_check={"interval": 60},
    )
    ready: dict[str, Any] = {}
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        options = SimOptions(port=0, model="m", ttft_ms=0, itl_ms=0.1, output_len=2)
        async with running_sim(options) as sim:
            config["model_list"] = [
                {"model_name": "m", "litellm_params": {"api_base": f"{sim.url}/v1"}}
            ]
            path = tmp_path_factory.mktemp("fuzz") / "router.yaml"
            path.write_text(yaml.safe_dump(config))
            async with running_router(Path(path), "127.0.0.1", 0) as runner:
                ready["lab"] = Lab(runner.addresses[0][:2], sim.state.by_path)
                started.set()
                await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        finally:
            started.set()
            loop.close()

    thread = threading.Thread(target=run, name="fuzz servers", daemon=True)
    thread.start()
    assert started.wait(30) and "lab" in ready, "router and sim did not start"
    yield ready["lab"]
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    print(f"\nfuzz cases: {dict(CASES)}; total {sum(CASES.values())}")
    assert not thread.is_alive()


def exchange(lab: Lab, raw: bytes, *, timeout_s: float = 10.0) -> tuple[int | None, bytes]:
    """Send ``raw`` on a fresh connection, read until the server closes; (status, body)."""
    with socket.create_connection(lab.address, timeout=timeout_s) as conn:
        # No half-close after sending: aiohttp takes a client's EOF as the end of the
        # connection. The server closes it after its answer (Connection: close).
        with contextlib.suppress(OSError):  # the server may answer (and close) mid-send
            conn.sendall(raw)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                data += chunk
    if not data.startswith(b"HTTP/1.1 "):
        return None, data
    return int(data[9:12]), data.partition(b"\r\n\r\n")[2]


def request(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    head = [f"{method} {path} HTTP/1.1".encode("utf-8", "surrogateescape"), b"Host: router"]
    head += [name + b": " + value for name, value in headers]
    head += [b"Connection: close", b"Content-Length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def should_forward(method: str, path: str, body: bytes) -> bool:
    """The router's contract: a POST under /v1/ with a JSON object naming a served model."""
    if method != "POST" or not path.startswith("/v1/") or len(path) <= 4:
        return False
    if len(body) > MAX_BODY_BYTES:
        return False
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and parsed.get("model") == "m"


def assert_openai_error(status: int | None, body: bytes) -> None:
    """Every error the router gives, its own or aiohttp's (a head it cannot parse), is
    OpenAI-shaped JSON."""
    if status is not None and status >= 400:
        assert set(orjson.loads(body)["error"]) >= {"message", "type", "code"}, body[:300]


def check_case(lab: Lab, raw: bytes, expected_forwards: int, kind: str) -> int | None:
    """Send one case and check every property; returns its status."""
    before = lab.forwarded()
    status, body = exchange(lab, raw)
    after = lab.forwarded()
    CASES[kind] += 1
    assert status != 500 and (status is None or status < 500), (status, body[:300])
    assert_openai_error(status, body)
    delta = after - before
    assert sum(delta.values()) == expected_forwards, (delta, raw[:200])
    assert all(p.startswith("/v1/") and "/../" not in p for p in delta), delta
    # And the router still serves a correct request.
    ok_status, ok_body = exchange(lab, request("POST", "/v1/chat/completions", [], VALID_CHAT))
    assert ok_status == 200, ok_body[:300]
    return status


# --- bodies -----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
models = st.sampled_from(["m", "M", "m ", "", "unknown", "m\x00", "ｍ"]) | json_values


def to_json(value: Any, ascii_only: bool = False) -> bytes:
    """JSON text as a client may send it (big integers, escaped lone surrogates and all)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _object_with_model(model: Any, rest: dict[str, Any], ascii_only: bool) -> bytes:
    return to_json({**rest, "model": model}, ascii_only)


def _deep(depth: int, opener: bytes, closer: bytes, closed: bool) -> bytes:
    return b'{"model":"m","x":' + opener * depth + (closer * depth if closed else b"") + b"}"


bodies = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=500).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(to_json, json_values, st.booleans()),
    st.builds(_object_with_model, models, st.dictionaries(st.text(max_size=8), json_values, max_size=4), st.booleans()),
    # Non-UTF-8 bytes inside an otherwise valid object.
    st.binary(min_size=1, max_size=50).map(lambda b: b'{"model":"m","messages":"' + b + b'"}'),
    # Deep nesting, closed and unclosed.
    st.builds(_deep, st.integers(1, 20000), st.sampled_from([b"[", b'{"a":']), st.sampled_from([b"]", b"}"]), st.booleans()),
    # Huge strings, around the body limit.
    st.integers(MAX_BODY_BYTES - 64, MAX_BODY_BYTES + 4096).map(
        lambda n: b'{"model":"m","prompt":"' + b"a" * max(0, n - 27) + b'"}'
    ),
)  # fmt: skip


@settings(SETTINGS, max_examples=250)
@given(path=st.sampled_from(INFERENCE_PATHS), body=bodies)
def test_fuzz_bodies(lab: Lab, path: str, body: bytes) -> None:
    expected = 1 if should_forward("POST", path, body) else 0
    check_case(
        lab,
        request("POST", path, [(b"Content-Type", b"application/json")], body),
        expected,
        "bodies",
    )


# --- methods, paths and headers ---------------------------------------------------------

token_chars = st.sampled_from(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
)
methods = st.sampled_from(
    ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "post"]
) | st.text(token_chars, min_size=1, max_size=12)
path_parts = st.sampled_from(
    [
        "v1",
        "chat",
        "completions",
        "..",
        ".",
        "%2e%2e",
        "%2E%2e",
        "..%2f",
        "%2f",
        "",
        "admin",
        "status",
        "\\",
        "%00",
        "%ff",
        "é",
        "?x=1",
        "#f",
        ";",
        "models",
    ]
)
paths = st.one_of(
    st.lists(path_parts, min_size=1, max_size=8).map(lambda ps: "/" + "/".join(ps)),
    st.sampled_from(INFERENCE_PATHS).map(lambda p: p + "/"),
    st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_characters=" "), min_size=1, max_size=60).map(lambda t: "/v1/" + t),
    st.just("*"),
    st.just("http://evil.example/v1/chat/completions"),
    st.integers(100, 9000).map(lambda n: "/v1/" + "a" * n),
)  # fmt: skip
header_names = st.sampled_from([b"Authorization", b"Content-Type", b"Host", b"X-Request-Id", b"Expect", b"Content-Encoding", b"Upgrade", b"Connection", b"X-Session-Id", b"Cookie"]) | st.binary(min_size=1, max_size=20)  # fmt: skip
header_values = st.binary(max_size=200) | st.integers(0, 12000).map(lambda n: b"v" * n)
headers = st.lists(st.tuples(header_names, header_values), max_size=12) | st.integers(50, 300).map(
    lambda n: [(b"X-Dup", b"1")] * n
)


def request_path(path: str) -> str:
    """The path the router routes on (a request may use the absolute form)."""
    return path.removeprefix("http://evil.example")


@settings(SETTINGS, max_examples=250)
@given(method=methods, path=paths, hdrs=headers, valid_body=st.booleans())
def test_fuzz_methods_paths_headers(
    lab: Lab, method: str, path: str, hdrs: list[tuple[bytes, bytes]], valid_body: bool
) -> None:
    """Random headers may or may not survive the parser, so forwarding is checked loosely:
    at most once, and only a POST under /v1/ with a valid body and a path without dot
    segments can be forwarded at all."""
    body = VALID_CHAT if valid_body else b"{not json"
    before = lab.forwarded()
    status, answer = exchange(lab, request(method, path, hdrs, body))
    delta = lab.forwarded() - before
    CASES["heads"] += 1
    assert status is None or status < 500, (status, answer[:300])
    if method != "HEAD":  # a HEAD answer has no body
        assert_openai_error(status, answer)
    assert sum(delta.values()) <= 1, delta
    if delta:
        assert valid_body and method == "POST", (method, path, delta)
        assert request_path(path).startswith("/v1/"), (path, delta)
    assert all(p.startswith("/v1/") and "/../" not in p and "/./" not in p for p in delta), delta
    ok_status, ok_body = exchange(lab, request("POST", "/v1/chat/completions", [], VALID_CHAT))
    assert ok_status == 200, ok_body[:300]


# --- framing: Content-Length and Transfer-Encoding -------------------------------------

SMUGGLED = (
    b"POST /v1/embeddings HTTP/1.1\r\nHost: r\r\nContent-Length: 25\r\n\r\n"
    b'{"model":"m","input":"x"}'
)


GZIPPED = gzip.compress(VALID_CHAT)
BOMB = gzip.compress(b'{"model":"m","prompt":"' + b"a" * (8 * MAX_BODY_BYTES) + b'"}')


def _chunked(body: bytes, size_format: str) -> bytes:
    return size_format.format(len(body)).encode() + b"\r\n" + body + b"\r\n0\r\n\r\n"


FRAMINGS: list[tuple[str, list[bytes], bytes]] = (
    [
        ("cl+te", [b"Content-Length: 4", b"Transfer-Encoding: chunked"], _chunked(VALID_CHAT, "{:x}")),
        ("te+cl", [b"Transfer-Encoding: chunked", b"Content-Length: 4"], _chunked(VALID_CHAT, "{:x}")),
        ("two cl", [b"Content-Length: %d" % len(VALID_CHAT), b"Content-Length: 4"], VALID_CHAT),
        ("cl list", [b"Content-Length: %d, %d" % (len(VALID_CHAT), len(VALID_CHAT))], VALID_CHAT),
        ("negative cl", [b"Content-Length: -1"], VALID_CHAT),
        ("plus cl", [b"Content-Length: +%d" % len(VALID_CHAT)], VALID_CHAT),
        ("hex cl", [b"Content-Length: 0x%x" % len(VALID_CHAT)], VALID_CHAT),
        ("huge cl", [b"Content-Length: 99999999999999999999999"], VALID_CHAT),
        ("cl too long", [b"Content-Length: %d" % (len(VALID_CHAT) + 10)], VALID_CHAT),
        ("cl short + smuggle", [b"Content-Length: %d" % len(VALID_CHAT)], VALID_CHAT + SMUGGLED),
        ("te xchunked", [b"Transfer-Encoding: xchunked"], _chunked(VALID_CHAT, "{:x}")),
        ("te chunked, identity", [b"Transfer-Encoding: chunked, identity"], _chunked(VALID_CHAT, "{:x}")),
        ("te identity", [b"Transfer-Encoding: identity"], VALID_CHAT),
        ("te twice", [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"], _chunked(VALID_CHAT, "{:x}")),
        ("te space", [b"Transfer-Encoding : chunked"], _chunked(VALID_CHAT, "{:x}")),
        ("te tab", [b"Transfer-Encoding:\tchunked"], _chunked(VALID_CHAT, "{:x}")),
        ("te folded", [b"Transfer-Encoding:\r\n chunked"], _chunked(VALID_CHAT, "{:x}")),
        ("te gzip", [b"Transfer-Encoding: gzip, chunked"], _chunked(VALID_CHAT, "{:x}")),
        ("chunk size too big", [b"Transfer-Encoding: chunked"], b"ffffffffffffffffff\r\n" + VALID_CHAT + b"\r\n0\r\n\r\n"),
        ("chunk size negative", [b"Transfer-Encoding: chunked"], b"-5\r\n" + VALID_CHAT + b"\r\n0\r\n\r\n"),
        ("chunk size wrong", [b"Transfer-Encoding: chunked"], b"5\r\n" + VALID_CHAT + b"\r\n0\r\n\r\n" + SMUGGLED),
        ("chunk ext", [b"Transfer-Encoding: chunked"], _chunked(VALID_CHAT, "{:x};ext=1")),
        ("chunk bare lf", [b"Transfer-Encoding: chunked"], _chunked(VALID_CHAT, "{:x}").replace(b"\r\n", b"\n")),
        ("chunk + smuggle", [b"Transfer-Encoding: chunked"], _chunked(VALID_CHAT, "{:x}") + SMUGGLED),
        ("chunk then cl smuggle", [b"Transfer-Encoding: chunked", b"Content-Length: 6"], b"0\r\n\r\n" + SMUGGLED),
        ("no framing", [], VALID_CHAT),
        ("expect 100", [b"Expect: 100-continue", b"Content-Length: %d" % len(VALID_CHAT)], VALID_CHAT),
        ("expect junk", [b"Expect: 999-nope", b"Content-Length: %d" % len(VALID_CHAT)], VALID_CHAT),
        ("not gzip body", [b"Content-Encoding: gzip", b"Content-Length: %d" % len(VALID_CHAT)], VALID_CHAT),
        ("gzip body", [b"Content-Encoding: gzip", b"Content-Length: %d" % len(GZIPPED)], GZIPPED),
        ("gzip bomb", [b"Content-Encoding: gzip", b"Content-Length: %d" % len(BOMB)], BOMB),
        ("deflate junk", [b"Content-Encoding: deflate", b"Content-Length: 4"], b"\x00\x01\x02\x03"),
        ("br unknown", [b"Content-Encoding: br", b"Content-Length: %d" % len(VALID_CHAT)], VALID_CHAT),
        ("http/1.0", [b"Content-Length: %d" % len(VALID_CHAT)], VALID_CHAT),
        ("bare lf head", [b"Content-Length: %d" % len(VALID_CHAT)], VALID_CHAT),
        ("nul in header", [b"X-A: a\x00b", b"Content-Length: %d" % len(VALID_CHAT)], VALID_CHAT),
        ("space before colon cl", [b"Content-Length : %d" % len(VALID_CHAT)], VALID_CHAT),
    ]
)  # fmt: skip


@pytest.mark.parametrize("framing", FRAMINGS, ids=[f[0] for f in FRAMINGS])
@settings(SETTINGS, max_examples=4)
@given(split=st.integers(0, 300))
def test_fuzz_framing(lab: Lab, framing: tuple[str, list[bytes], bytes], split: int) -> None:
    """Every framing variant, its bytes split at a few points (the parser sees two reads)."""
    name, framing_headers, body = framing
    version = b"HTTP/1.0" if name == "http/1.0" else b"HTTP/1.1"
    head = [
        b"POST /v1/chat/completions " + version,
        b"Host: r",
        b"Connection: close",
        *framing_headers,
    ]
    separator = b"\n" if name == "bare lf head" else b"\r\n"
    raw = separator.join(head) + separator + separator + body
    before = lab.forwarded()
    with socket.create_connection(lab.address, timeout=10) as conn:  # sent in two pieces
        with contextlib.suppress(OSError):
            conn.sendall(raw[:split])
            conn.sendall(raw[split:])
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                data += chunk
    CASES["framing"] += 1
    if data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
        data = data.partition(b"\r\n\r\n")[2]  # the interim answer to Expect: 100-continue
    status = int(data[9:12]) if data.startswith(b"HTTP/1.") else None
    assert status is None or status < 500, data[:300]
    assert_openai_error(status, data.partition(b"\r\n\r\n")[2])
    delta = lab.forwarded() - before
    # Never a smuggled second request: the embeddings request inside a body is never seen.
    assert delta["/v1/embeddings"] == 0, (name, delta)
    assert sum(delta.values()) <= 1, (name, delta)
    if delta:  # what was forwarded was the one well-framed chat request
        assert status == 200, (name, data[:300])
    ok_status, ok_body = exchange(lab, request("POST", "/v1/chat/completions", [], VALID_CHAT))
    assert ok_status == 200, ok_body[:300]
