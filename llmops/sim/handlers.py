"""The sim's HTTP surface: aiohttp handlers for the OpenAI, engine and ``/sim/*`` endpoints."""

from __future__ import annotations

import hmac
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from llmops.openai import DONE_EVENT, error_json
from llmops.sim import bodies
from llmops.sim.engine import Engine, SeqState, Sequence
from llmops.sim.faults import Faults
from llmops.sim.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from llmops.sim.metrics import render_metrics
from llmops.sim.options import SIM_MODES, SimOptions
from llmops.sim.requests import (
    GenerationKind,
    GenerationRequest,
    RequestError,
    parse_embeddings,
    parse_generation,
)
from llmops.sim.tokens import count_prompt_tokens, generated_words

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SimState:
    """Everything the handlers share: options, engine, faults and request counters."""

    def __init__(self, options: SimOptions, engine: Engine, faults: Faults) -> None:
        self.options = options
        self.engine = engine
        self.faults = faults
        self.created = int(time.time())
        self.requests = 0  # inference requests received
        self.errors = 0  # responses with status >= 400
        self.by_path: Counter[str] = Counter()
        self.expected_authorization = (
            f"Bearer {options.api_key}".encode() if options.api_key is not None else None
        )

    def stats(self) -> dict[str, Any]:
        snap = self.engine.snapshot()
        return {
            "requests": self.requests,
            "running": snap.running,
            "waiting": snap.waiting,
            "aborted": snap.finished["abort"],
            "completed": snap.finished["stop"] + snap.finished["length"],
            "errors": self.errors,
            "mode": self.faults.mode,
            "abort_after_tokens": self.faults.abort_after_tokens,
            "by_path": dict(self.by_path),
        }


STATE = web.AppKey("llmops_sim_state", SimState)


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json(error_json(status, message), status)


@web.middleware
async def _count_and_shape_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by path, check the API key on ``/v1/*`` as vLLM does, and turn
    aiohttp's own 404/405 into OpenAI-shaped errors."""
    state = request.app[STATE]
    state.by_path[request.path] += 1
    try:
        if state.expected_authorization is not None and request.path.startswith("/v1/"):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, state.expected_authorization):
                raise web.HTTPUnauthorized(reason="Unauthorized")
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.reason)
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "")
    if response.status >= 400:
        state.errors += 1
    return response


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completion")


async def _generate(request: web.Request, kind: GenerationKind) -> web.StreamResponse:
    state = request.app[STATE]
    state.requests += 1
    await state.faults.wait_until_answering()
    if state.faults.closing:
        return _error(503, "the engine is shutting down")
    try:
        parsed = parse_generation(await request.read(), kind, state.options)
    except RequestError as exc:
        return _error(exc.status, exc.message)
    if state.faults.should_fail():
        return _error(500, "injected failure (llmops sim)")
    seq = Sequence(parsed.prompt_tokens, parsed.output_tokens, parsed.finish_reason)
    state.engine.submit(seq)
    try:
        if parsed.stream:
            return await _stream(request, state, parsed, seq)
        await seq.wait_done()
        if seq.state is SeqState.ABORTED:
            return _error(503, "the request was aborted: the engine is shutting down")
        words = generated_words(state.options.seed, parsed.prompt_text, seq.generated)
        body = bodies.generation_body(
            kind,
            state.options.model,
            int(time.time()),
            "".join(words),
            seq.finish_reason,
            parsed.prompt_tokens,
            seq.generated,
        )
        return _json(body)
    finally:
        # Cancelled (the client went away) or failed while writing: leave the batch at once.
        state.engine.abort(seq)


async def _stream(
    request: web.Request, state: SimState, parsed: GenerationRequest, seq: Sequence
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    chunks = bodies.StreamChunks(parsed.kind, state.options.model, int(time.time()))
    words = generated_words(state.options.seed, parsed.prompt_text, parsed.output_tokens)
    faults = state.faults
    try:
        await response.prepare(request)
        sent = 0
        while True:
            generated = await seq.wait_tokens(sent)
            # ABORTED here means the engine is shutting down.
            if seq.state is SeqState.ABORTED or _cut_now(faults.abort_after_tokens, sent):
                _cut(request, state.engine, seq)
                return response
            if sent == 0 and (role := chunks.role()) is not None:
                # vLLM sends the role chunk with the first token, not before it.
                await response.write(role)
            while sent < generated:
                await response.write(chunks.token(words[sent]))
                sent += 1
                if _cut_now(faults.abort_after_tokens, sent):
                    _cut(request, state.engine, seq)
                    return response
            if seq.state is SeqState.FINISHED:
                break
        await response.write(chunks.finish(seq.finish_reason))
        if parsed.include_usage:
            await response.write(chunks.usage(parsed.prompt_tokens, sent))
        await response.write(DONE_EVENT)
    except ConnectionResetError:
        # The client went away mid-write: an abort, not an error worth a traceback.
        state.engine.abort(seq)
    return response


def _cut_now(abort_after_tokens: int | None, sent: int) -> bool:
    return abort_after_tokens is not None and sent >= abort_after_tokens


def _cut(request: web.Request, engine: Engine, seq: Sequence) -> None:
    """Drop the connection mid-stream, as a dying engine would (no finish chunk, no [DONE])."""
    engine.abort(seq)
    if request.transport is not None:
        request.transport.close()


async def _embeddings(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.requests += 1
    await state.faults.wait_until_answering()
    try:
        inputs, as_base64 = parse_embeddings(await request.read(), state.options)
    except RequestError as exc:
        return _error(exc.status, exc.message)
    if state.faults.should_fail():
        return _error(500, "injected failure (llmops sim)")
    prompt_tokens = sum(count_prompt_tokens(text) for text in inputs)
    body = bodies.embeddings_body(
        state.options.model,
        int(time.time()),
        inputs,
        state.options.embedding_dim,
        prompt_tokens,
        as_base64,
    )
    return _json(body)


async def _models(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    await state.faults.wait_until_answering()
    options = state.options
    return _json(
        bodies.models_body(options.model, options.engine, state.created, options.context_len)
    )


async def _health(request: web.Request) -> web.StreamResponse:
    await request.app[STATE].faults.wait_until_answering()
    return web.Response(status=200)


async def _health_generate(request: web.Request) -> web.StreamResponse:
    """SGLang's liveness probe that runs a one-token generation through the engine."""
    state = request.app[STATE]
    await state.faults.wait_until_answering()
    if state.faults.mode == "error":
        return web.Response(status=503)
    seq = Sequence(prompt_tokens=1, target_tokens=1, finish_reason="length")
    state.engine.submit(seq)
    try:
        await seq.wait_done()
    finally:
        state.engine.abort(seq)
    return web.Response(status=200 if seq.state is SeqState.FINISHED else 503)


async def _model_info(request: web.Request) -> web.StreamResponse:
    return _json(bodies.model_info_body(request.app[STATE].options.model))


async def _metrics(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    text = render_metrics(state.options.engine, state.options.model, state.engine.snapshot())
    return web.Response(body=text.encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def _sim_stats(request: web.Request) -> web.StreamResponse:
    return _json(orjson.dumps(request.app[STATE].stats()))


async def _sim_mode(request: web.Request) -> web.StreamResponse:
    """``POST /sim/mode {"mode": "ok"|"error"|"hang"|"stall", "abort_after_tokens": N|null}``."""
    state = request.app[STATE]
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(400, "request body is not valid JSON")
    if not isinstance(data, dict):
        return _error(400, "request body must be a JSON object")
    mode = data.get("mode", state.faults.mode)
    abort_after = data.get("abort_after_tokens")
    if mode not in SIM_MODES:
        return _error(400, f"`mode` must be one of {', '.join(SIM_MODES)}")
    if abort_after is not None and (
        not isinstance(abort_after, int) or isinstance(abort_after, bool) or abort_after < 0
    ):
        return _error(400, "`abort_after_tokens` must be an integer >= 0 or null")
    state.faults.set_mode(mode, abort_after)
    return _json(orjson.dumps(state.stats()))


def build_app(state: SimState) -> web.Application:
    # Long-context prompts are big; accept what the router's default max_body_bytes lets through.
    app = web.Application(middlewares=[_count_and_shape_errors], client_max_size=100 * 2**20)
    app[STATE] = state
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/sim/stats", _sim_stats)
    app.router.add_post("/sim/mode", _sim_mode)
    if state.options.engine == "sglang":
        app.router.add_get("/get_model_info", _model_info)
        app.router.add_get("/health_generate", _health_generate)
    return app
