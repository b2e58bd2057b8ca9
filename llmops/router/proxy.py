"""The data path: one client request in, bytes forwarded to a chosen backend, bytes back.

Only ``model`` (and whether to stream) is read from the body; the original bytes are what
the backend receives unless the backend serves the model under another name. A request is
retried on a different backend while nothing has reached the client; after the first byte
a failure ends the stream with an SSE error event instead (a stream is never replayed).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from llmops.openai import error_json, usage_from_body
from llmops.router.accounting import account_failure, finish_exchange
from llmops.router.balance import pick_backend
from llmops.router.breaker import record_success
from llmops.router.exchange import Exchange
from llmops.router.inbound import Inbound, Reply, Sent, own_fields, send_reply
from llmops.router.limits import Limited, acquire_backend
from llmops.router.pool import BackendState
from llmops.router.relay import answer_fields, relay_stream
from llmops.router.state import RouterState
from llmops.router.stream_usage import UsageTap, ask_for_usage
from llmops.router.upstream import (
    RETRYABLE_STATUSES,
    UpstreamFailure,
    classify_failure,
    failure_from_response,
)
from llmops.router.upstream_http import (
    UpstreamConnection,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamPool,
    encode_head,
)
from llmops.router.watchdog import WatchedRequest

# Request ids: unique per process start, then a counter (uuid4 costs a syscall each time).
_REQUEST_ID_PREFIX = os.urandom(6).hex()
_request_counter = itertools.count(1)
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 2.0


def _next_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_request_counter):010x}"


def error_reply(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> Reply:
    """An OpenAI-shaped error."""
    fields = own_fields([("Content-Type", "application/json"), *(headers or {}).items()])
    return Reply(status, fields, error_json(status, message, code))


def json_error(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """The same error, answered through aiohttp."""
    return web.Response(
        status=status,
        body=error_json(status, message, code),
        content_type="application/json",
        headers=headers,
    )


async def read_body(request: web.Request, timeout_s: float | None = None) -> bytes | web.Response:
    """The request body, or an error response if it is too large or too slow to arrive."""
    try:
        if timeout_s is None or request.content.is_eof():  # all of it is in: no timer needed
            return await request.read()
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        message = f"request body not received within {timeout_s:g} s"
        return json_error(408, message, "body_timeout", {"Connection": "close"})
    except RequestPayloadError as exc:  # bad chunked framing or content encoding
        message = f"request body cannot be read: {exc.__cause__ or exc}"
        return json_error(400, message, "invalid_body", {"Connection": "close"})
    except web.HTTPRequestEntityTooLarge:
        return json_error(
            413,
            f"request body too large: limit is {request.client_max_size} bytes",
            "body_too_large",
        )


def parse_request(body: bytes) -> tuple[dict[str, Any], str] | Reply:
    """The parsed JSON object and its ``model``, or a 400 saying what is wrong."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return error_reply(400, f"request body is not valid JSON: {exc}", "invalid_json")
    if not isinstance(parsed, dict):
        return error_reply(400, "request body must be a JSON object", "invalid_json")
    model = parsed.get("model")
    if model is None:
        return error_reply(400, "you must provide a model parameter", "missing_model")
    if not isinstance(model, str) or not model:
        return error_reply(400, "model must be a non-empty string", "invalid_model")
    return parsed, model


async def proxy_request(inbound: Inbound, router: RouterState) -> Sent:
    """Forward one OpenAI API request to a backend of its model; the answer is sent."""
    parsed_or_error = parse_request(inbound.body)
    if isinstance(parsed_or_error, Reply):
        return send_reply(inbound, parsed_or_error)
    parsed, model = parsed_or_error
    candidates = router.snapshot.by_model.get(model)
    # A token limited to other models learns nothing about this one: the same 404.
    if not candidates or model not in inbound.allowed:
        missing = error_reply(404, f"The model `{model}` does not exist.", "model_not_found")
        return send_reply(inbound, missing)

    request_id = inbound.headers.get("x-request-id") or _next_request_id()
    fields = b"%bx-request-id: %b\r\n" % (inbound.forward, request_id.encode())
    loop = asyncio.get_running_loop()
    exchange = Exchange(request_id, model, loop.time())
    try:
        answer = await _forward(inbound, router, candidates, fields, parsed, exchange)
        sent = send_reply(inbound, answer) if isinstance(answer, Reply) else answer
        exchange.status = sent.status
        return sent
    except asyncio.CancelledError:
        exchange.cancelled = True
        exchange.status = 499  # nginx's "client closed request"
        raise
    finally:
        # After whatever the caller still does with the answer.
        loop.call_soon(finish_exchange, router, exchange, loop.time())


async def _forward(
    inbound: Inbound,
    router: RouterState,
    candidates: tuple[BackendState, ...],
    fields: bytes,
    parsed: dict[str, Any],
    exchange: Exchange,
) -> Reply | Sent:
    """Try backends until one answers or the retries, backends or deadline run out."""
    limits = router.limits
    body = inbound.body
    limited = await limits.admit_key(inbound.headers.get("Authorization"))
    if limited is not None:
        return _limited(limited, exchange.request_id)
    if limits.counts_tokens(candidates):
        parsed, body, added = ask_for_usage(inbound.path, parsed, body)
        exchange.usage_tap = UsageTap(strip=added)
    affinity = router.affinity
    hints = affinity.hints(inbound.headers, parsed) if affinity.enabled else None

    def pick(exclude: frozenset[str]) -> BackendState | None:
        return pick_backend(candidates, router.picker, router.rng, exclude, hints, affinity)

    path = inbound.target.removeprefix("/v1")
    deadline = time.monotonic() + router.config.routing.retry_deadline
    tried: set[str] = set()
    failure: UpstreamFailure | None = None
    for attempt in range(router.config.routing.num_retries + 1):
        chosen = await acquire_backend(pick, limits, frozenset(tried), router.config.limits.wait_s)
        if isinstance(chosen, Limited):
            if failure is None:
                return _limited(chosen, exchange.request_id)
            break
        if chosen is None:
            break
        backend = chosen
        tried.add(backend.id)
        if not attempt:
            exchange.chosen_at = asyncio.get_running_loop().time()
        if attempt:
            await asyncio.sleep(_retry_delay(attempt, failure, deadline, router.rng))
        exchange.attempts = attempt + 1
        exchange.backend_id = backend.id
        outcome = await _attempt(inbound, router, backend, path, fields, parsed, body, exchange)
        if not isinstance(outcome, UpstreamFailure):
            return outcome
        failure = outcome
        exchange.error_kind = failure.kind
        if failure.local or time.monotonic() >= deadline:
            break  # a shortage of the router's own would meet every backend: answer it now
    if failure is None:
        message = f"no healthy backend for model `{exchange.model}`"
        return error_reply(503, message, "no_healthy_backend")
    reply_headers = [("Content-Type", failure.content_type), ("x-request-id", exchange.request_id)]
    if failure.retry_after_s is not None:
        reply_headers.append(("Retry-After", str(max(1, round(failure.retry_after_s)))))
    return Reply(failure.status, own_fields(reply_headers), failure.body)


def _limited(limited: Limited, request_id: str) -> Reply:
    headers = {**limited.headers(), "x-request-id": request_id}
    return error_reply(429, limited.message, "rate_limit_exceeded", headers)


def _retry_delay(
    attempt: int, failure: UpstreamFailure | None, deadline: float, rng: random.Random
) -> float:
    """Exponential back-off with full jitter, at least any Retry-After, within the deadline."""
    delay = rng.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2 ** (attempt - 1)))
    if failure is not None and failure.retry_after_s is not None:
        delay = max(delay, failure.retry_after_s)
    return max(0.0, min(delay, deadline - time.monotonic()))


async def _attempt(
    inbound: Inbound,
    router: RouterState,
    backend: BackendState,
    path: str,
    fields: bytes,
    parsed: dict[str, Any],
    body: bytes,
    exchange: Exchange,
) -> Reply | Sent | UpstreamFailure:
    """One try on one backend: the client's answer (sent from here, before the clean-up,
    when the backend answered whole), or why this backend failed."""
    target = backend.backend
    if target.upstream_model != target.model:
        body = orjson.dumps({**parsed, "model": target.upstream_model})
    upstream = router.upstream_for(backend)
    head = encode_head(
        inbound.method,
        upstream.path_prefix + path,
        upstream.pool.host_header,
        fields + upstream.extra_fields,
        len(body),
    )
    backend.in_flight += 1
    backend.requests += 1
    connection: UpstreamConnection | None = None
    watched: WatchedRequest | None = None
    loop_time = asyncio.get_running_loop().time
    try:
        try:
            connection = await upstream.pool.acquire(router.config.timeouts.connect)
            watched = router.watchdog.watch(connection)
            connection = await _send(connection, upstream.pool, head, body, watched)
            streaming = connection.status < 400 and connection.content_type == "text/event-stream"
            # A stream's first chunk counts as its first byte; other answers are read whole.
            payload = await (connection.read_chunk() if streaming else connection.read_body())
            exchange.first_byte_at = watched.last_byte_at = loop_time()
        except (UpstreamError, TimeoutError) as exc:
            expired = watched.expired if watched is not None else None
            failure = classify_failure(exc, expired, target.id, "ttfb")
            return account_failure(router, backend, failure)
        status = connection.status
        if status >= 400:
            failure = failure_from_response(
                status, payload, connection.content_type, connection.retry_after
            )
            if status in RETRYABLE_STATUSES:
                return account_failure(router, backend, failure)
        record_success(backend, router.events)
        if not streaming:
            if exchange.usage_tap is not None and status < 400:
                exchange.usage = usage_from_body(payload)
                auth = inbound.headers.get("Authorization")
                await router.limits.record_usage(backend, auth, exchange.usage)
            reply = Reply(status, answer_fields(connection, exchange.request_id), payload)
            return send_reply(inbound, reply)
        exchange.stream = True
        return await relay_stream(inbound, router, connection, watched, payload, backend, exchange)
    finally:
        backend.in_flight -= 1
        if watched is not None:
            router.watchdog.forget(watched)
        if connection is not None:
            connection.release()


async def _send(
    connection: UpstreamConnection,
    pool: UpstreamPool,
    head: bytes,
    body: bytes,
    watched: WatchedRequest,
) -> UpstreamConnection:
    """Send the request and wait for the response head.

    A kept-alive connection the backend closed while it sat idle fails before any answer; the
    request was not processed, so it is sent once more on a fresh connection.
    """
    connection.send(head, body)
    try:
        await connection.response_head()
    except UpstreamDisconnected:
        if not connection.reused or watched.expired is not None:
            raise
        connection.close()
        connection = await pool.acquire(None)
        watched.connection = connection
        connection.send(head, body)
        await connection.response_head()
    return connection
