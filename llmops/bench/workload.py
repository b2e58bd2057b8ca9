"""Request bodies: random prompts of exact length, ShareGPT conversations or a JSONL file.

Lengths are counted in whitespace-separated words: without a tokenizer that is the only
count a client can make exactly, and it is the token count ``llmops sim`` uses. The server's
usage (when it reports one) is what the metrics use; these counts are the fallback.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from llmops.bench.options import BenchOptions
from llmops.errors import BenchError

#: Pool size for runs whose request count is not known up front (``--duration``); cycled.
DURATION_POOL_SIZE = 1000

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "po", "da", "fi", "gu", "he")


@dataclass(frozen=True, slots=True)
class Prompt:
    """One request's input: a prompt string or chat messages, and the lengths to ask for."""

    text: str | None
    messages: list[dict[str, Any]] | None
    input_len: int
    output_len: int


def load_prompts(options: BenchOptions, count: int) -> list[Prompt]:
    """``count`` prompts for the run (fewer for a file dataset, which is then cycled)."""
    rng = random.Random(options.seed)
    kind, _, path = options.dataset.partition(":")
    if kind == "random" and not path:
        return _random_prompts(rng, count, options)
    if kind == "sharegpt" and path:
        return _sample(rng, _sharegpt_prompts(Path(path), options), count)
    if kind == "jsonl" and path:
        return _sample(rng, _jsonl_prompts(Path(path), options), count)
    raise BenchError(f"--dataset {options.dataset!r}: use random, sharegpt:PATH or jsonl:PATH")


def request_body(prompt: Prompt, options: BenchOptions, model: str) -> bytes:
    """The JSON body of one request, as ``vllm bench serve`` would send it."""
    body: dict[str, Any] = {"model": model, "max_tokens": prompt.output_len, "temperature": 0.0}
    if options.endpoint == "chat":
        messages = prompt.messages or [{"role": "user", "content": prompt.text or ""}]
        body["messages"] = messages
    else:
        body["prompt"] = prompt.text if prompt.text is not None else _join(prompt.messages)
    if options.dataset == "random":
        # Exact output lengths: vLLM's bench sets ignore_eos for its random dataset too.
        body["ignore_eos"] = True
    if options.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def words(rng: random.Random, count: int) -> str:
    """``count`` random short words separated by single spaces."""
    choice = rng.choice
    return " ".join(choice(_SYLLABLES) + choice(_SYLLABLES) for _ in range(count))


def _random_prompts(rng: random.Random, count: int, options: BenchOptions) -> list[Prompt]:
    prefix = words(rng, options.shared_prefix_len) + " " if options.shared_prefix_len else ""
    input_len = options.shared_prefix_len + options.input_len
    return [
        Prompt(prefix + words(rng, options.input_len), None, input_len, options.output_len)
        for _ in range(count)
    ]


def _sharegpt_prompts(path: Path, options: BenchOptions) -> list[Prompt]:
    data = _read_json(path)
    if not isinstance(data, list):
        raise BenchError(f"{path}: a ShareGPT file is a JSON list of conversations")
    prefix = _prefix(options)
    prompts: list[Prompt] = []
    for entry in data:
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            continue
        question, answer = turns[0].get("value"), turns[1].get("value")
        if not isinstance(question, str) or not isinstance(answer, str) or not question.strip():
            continue
        text = prefix + question
        prompts.append(Prompt(text, None, len(text.split()), max(1, len(answer.split()))))
    if not prompts:
        raise BenchError(f"{path}: no conversation with a question and an answer")
    return prompts


def _jsonl_prompts(path: Path, options: BenchOptions) -> list[Prompt]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise BenchError(f"cannot read dataset {path}: {exc.strerror}") from None
    prefix = _prefix(options)
    prompts: list[Prompt] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise BenchError(f"{path}:{number}: not valid JSON") from None
        prompts.append(_jsonl_prompt(item, prefix, options.output_len, f"{path}:{number}"))
    if not prompts:
        raise BenchError(f"{path}: no prompts")
    return prompts


def _jsonl_prompt(item: Any, prefix: str, output_len: int, where: str) -> Prompt:
    if isinstance(item, str):
        item = {"prompt": item}
    if not isinstance(item, dict):
        raise BenchError(f"{where}: expected a string or an object with prompt or messages")
    max_tokens = item.get("max_tokens", item.get("output_len", output_len))
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise BenchError(f"{where}: max_tokens must be a positive integer")
    prompt, messages = item.get("prompt"), item.get("messages")
    if isinstance(prompt, str):
        text = prefix + prompt
        return Prompt(text, None, len(text.split()), max_tokens)
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages) and messages:
        if prefix:
            messages = [{"role": "system", "content": prefix.strip()}, *messages]
        return Prompt(None, messages, len(_join(messages).split()), max_tokens)
    raise BenchError(f"{where}: expected a string or an object with prompt or messages")


def _prefix(options: BenchOptions) -> str:
    if not options.shared_prefix_len:
        return ""
    return words(random.Random(options.seed), options.shared_prefix_len) + " "


def _sample(rng: random.Random, prompts: list[Prompt], count: int) -> list[Prompt]:
    order = list(prompts)
    rng.shuffle(order)
    return order[:count]


def _join(messages: list[dict[str, Any]] | None) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages or [])


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise BenchError(f"cannot read dataset {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise BenchError(f"{path}: not valid JSON ({exc})") from None
