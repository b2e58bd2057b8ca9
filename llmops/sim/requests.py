"""Reading an OpenAI request body into what the engine needs, or the error vLLM would answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from llmops.sim.options import SimOptions
from llmops.sim.tokens import chat_prompt_text, completion_prompt_text, count_prompt_tokens

GenerationKind = Literal["chat", "completion"]


class RequestError(Exception):
    """The request cannot be served: answer ``status`` with an OpenAI-shaped ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    kind: GenerationKind
    prompt_text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: str  # "length" when max_tokens cut it, "stop" when the simulated EOS did
    stream: bool
    include_usage: bool


def parse_generation(body: bytes, kind: GenerationKind, options: SimOptions) -> GenerationRequest:
    """Validate a chat or completions body; raises RequestError with vLLM's status."""
    data = _json_object(body)
    _check_model(data, options.model)
    if kind == "chat":
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "`messages` must be a non-empty list of messages")
        text = chat_prompt_text(messages)
        if text is None:
            raise RequestError(400, "every message must be an object with string or text content")
    else:
        if "prompt" not in data:
            raise RequestError(400, "`prompt` is required")
        text = completion_prompt_text(data["prompt"])
        if text is None:
            raise RequestError(400, "`prompt` must be a string, a list of strings or token ids")
    prompt_tokens = count_prompt_tokens(text)
    output_tokens, finish_reason = _output_length(data, kind, prompt_tokens, options)
    stream = data.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise RequestError(400, "`stream` must be a boolean")
    stream_options = data.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    return GenerationRequest(
        kind=kind,
        prompt_text=text,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        finish_reason=finish_reason,
        stream=bool(stream),
        include_usage=include_usage,
    )


def parse_embeddings(body: bytes, options: SimOptions) -> tuple[list[str], bool]:
    """The inputs of an embeddings body and whether base64 encoding was asked for."""
    data = _json_object(body)
    _check_model(data, options.model)
    raw = data.get("input")
    inputs: list[str] | None = None
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw:
        if isinstance(raw[0], int):  # one input given as token ids
            texts = [completion_prompt_text(raw)]
        else:  # several inputs: strings or token-id lists
            texts = [completion_prompt_text(item) for item in raw]
        if None not in texts:
            inputs = [text for text in texts if text is not None]
    if inputs is None:
        raise RequestError(400, "`input` must be a string, a list of strings or token ids")
    encoding = data.get("encoding_format", "float")
    if encoding not in ("float", "base64", None):
        raise RequestError(400, "`encoding_format` must be 'float' or 'base64'")
    return inputs, encoding == "base64"


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, "request body must be a JSON object")
    return data


def _check_model(data: dict[str, Any], served: str) -> None:
    model = data.get("model")
    if model is None:
        return  # like vLLM: no model means the served one
    if not isinstance(model, str):
        raise RequestError(400, "`model` must be a string")
    if model != served:
        raise RequestError(404, f"The model `{model}` does not exist.")


def _output_length(
    data: dict[str, Any], kind: GenerationKind, prompt_tokens: int, options: SimOptions
) -> tuple[int, str]:
    """How many tokens to generate and why it stops, as the sim's contract defines."""
    max_tokens = data.get("max_completion_tokens") if kind == "chat" else None
    if max_tokens is None:
        max_tokens = data.get("max_tokens")
    context_len = options.context_len
    if max_tokens is None:
        room = context_len - prompt_tokens
        if room < 1:
            raise RequestError(400, _too_long(context_len, prompt_tokens, 1))
        if options.output_len > room:
            return room, "length"
        return options.output_len, "stop"
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestError(400, "`max_tokens` must be an integer >= 1")
    if prompt_tokens + max_tokens > context_len:
        raise RequestError(400, _too_long(context_len, prompt_tokens, max_tokens))
    if data.get("ignore_eos") is True or max_tokens <= options.output_len:
        return max_tokens, "length"
    return options.output_len, "stop"


def _too_long(context_len: int, prompt_tokens: int, output_tokens: int) -> str:
    return (
        f"This model's maximum context length is {context_len} tokens. However, you requested "
        f"{prompt_tokens + output_tokens} tokens ({prompt_tokens} in the messages, "
        f"{output_tokens} in the completion). Please reduce the length of the messages or "
        "completion."
    )
