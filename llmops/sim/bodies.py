"""Response bodies and stream chunks in vLLM's shapes (pure: values in, bytes out)."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import uuid
from typing import Any

import orjson

from llmops.sim.options import EngineFlavour
from llmops.sim.requests import GenerationKind

_ID_PREFIX = {"chat": "chatcmpl-", "completion": "cmpl-"}
_OBJECT = {"chat": "chat.completion", "completion": "text_completion"}
_CHUNK_OBJECT = {"chat": "chat.completion.chunk", "completion": "text_completion"}


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def generation_body(
    kind: GenerationKind,
    model: str,
    created: int,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> bytes:
    """A non-streaming chat completion or completion."""
    choice: dict[str, Any] = {"index": 0}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": text, "tool_calls": []}
    else:
        choice["text"] = text
    choice |= {"logprobs": None, "finish_reason": finish_reason, "stop_reason": None}
    return orjson.dumps(
        {
            "id": new_id(_ID_PREFIX[kind]),
            "object": _OBJECT[kind],
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": _usage(prompt_tokens, completion_tokens),
        }
    )


class StreamChunks:
    """The SSE events of one stream; token chunks come from a prebuilt template (hot path)."""

    __slots__ = ("_head", "_kind", "_token_prefix", "_token_suffix")

    def __init__(self, kind: GenerationKind, model: str, created: int) -> None:
        self._kind = kind
        self._head = {
            "id": new_id(_ID_PREFIX[kind]),
            "object": _CHUNK_OBJECT[kind],
            "created": created,
            "model": model,
        }
        head_json = orjson.dumps(self._head)[:-1]  # without the closing brace
        if kind == "chat":
            self._token_prefix = (
                b"data: " + head_json + b',"choices":[{"index":0,"delta":{"content":'
            )
            self._token_suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        else:
            self._token_prefix = b"data: " + head_json + b',"choices":[{"index":0,"text":'
            self._token_suffix = b',"logprobs":null,"finish_reason":null}]}\n\n'

    def role(self) -> bytes | None:
        """The chat stream's first event (the assistant role); completions have none."""
        if self._kind != "chat":
            return None
        return self._event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])  # fmt: skip

    def token(self, word: str) -> bytes:
        return self._token_prefix + orjson.dumps(word) + self._token_suffix

    def finish(self, finish_reason: str) -> bytes:
        body: dict[str, Any] = {"index": 0}
        if self._kind == "chat":
            body["delta"] = {}
        else:
            body["text"] = ""
        body |= {"logprobs": None, "finish_reason": finish_reason, "stop_reason": None}
        return self._event([body])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return self._event([], usage=_usage(prompt_tokens, completion_tokens))

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**self._head, "choices": choices, **extra}) + b"\n\n"


def models_body(model: str, flavour: EngineFlavour, created: int, max_model_len: int) -> bytes:
    """``GET /v1/models`` as vLLM answers it (SGLang's shape is the same)."""
    card = {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": flavour,
        "root": model,
        "parent": None,
        "max_model_len": max_model_len,
    }
    return orjson.dumps({"object": "list", "data": [card]})


def model_info_body(model: str) -> bytes:
    """SGLang's ``GET /get_model_info``."""
    return orjson.dumps({"model_path": model, "tokenizer_path": model, "is_generation": True})


def embedding_vector(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for ``text``: the same text always maps to the same vector."""
    raw = hashlib.shake_256(text.encode()).digest(2 * dim)
    values = [v / 32767.5 - 1.0 for v in struct.unpack(f"<{dim}H", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def embeddings_body(
    model: str, created: int, inputs: list[str], dim: int, prompt_tokens: int, as_base64: bool
) -> bytes:
    data = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text, dim)
        embedding: list[float] | str = vector
        if as_base64:
            embedding = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
        data.append({"index": index, "object": "embedding", "embedding": embedding})
    return orjson.dumps(
        {
            "id": new_id("embd-"),
            "object": "list",
            "created": created,
            "model": model,
            "data": data,
            "usage": _usage(prompt_tokens, 0),
        }
    )
