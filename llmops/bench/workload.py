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

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "po", "da", "fi", "gu", "he")
_VOCABULARY = tuple(first + second for first in _SYLLABLES for second in _SYLLABLES)
#: Words in the random corpus: distinct windows for this many requests, then repeats.
_CORPUS_WORDS = 1 << 18
#: A prime step between windows, so neighbouring requests share no prefix.
_STRIDE = 9973


@dataclass(frozen=True, slots=True)
class Prompt:
    """One request's input: a prompt string or chat messages, and the lengths to ask for."""

    text: str | None
    messages: list[dict[str, Any]] | None
    input_len: int
    output_len: int


class BodySource:
    """Request bodies by global request index; picklable, so a worker builds its own."""

    def prepare(self) -> None:
        """Do the expensive set-up now, before the run starts, not on the first request."""

    def body(self, index: int) -> tuple[bytes, int]:
        """The JSON body of request ``index`` and its input length in words."""
        raise NotImplementedError


class PooledBodies(BodySource):
    """A fixed list of prebuilt bodies (a file dataset), cycled by index."""

    def __init__(self, bodies: list[bytes], input_lens: list[int]) -> None:
        self.bodies = bodies
        self.input_lens = input_lens

    def body(self, index: int) -> tuple[bytes, int]:
        position = index % len(self.bodies)
        return self.bodies[position], self.input_lens[position]


class RandomBodies(BodySource):
    """Random prompts of exactly ``input_len`` words, built on demand from a seeded corpus.

    Prompt ``i`` is a window into one random word corpus, starting at a different place for
    each index, so a million-request run holds no million prompts in memory and two runs with
    the same seed send the same prompts. Only the options cross the process boundary.
    """

    def __init__(self, options: BenchOptions, model: str) -> None:
        self.options = options
        self.model = model
        self._corpus: list[str] = []
        self._prefix = ""

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options, "model": self.model}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.options, self.model = state["options"], state["model"]
        self._corpus, self._prefix = [], ""

    def prepare(self) -> None:
        self._build()

    def body(self, index: int) -> tuple[bytes, int]:
        corpus = self._corpus or self._build()
        options = self.options
        length = options.input_len
        start = (index * _STRIDE) % (len(corpus) - length)
        text = self._prefix + " ".join(corpus[start : start + length])
        prompt = Prompt(text, None, options.shared_prefix_len + length, options.output_len)
        return request_body(prompt, options, self.model), prompt.input_len

    def _build(self) -> list[str]:
        rng = random.Random(self.options.seed)
        self._prefix = _prefix(self.options)
        self._corpus = rng.choices(_VOCABULARY, k=max(_CORPUS_WORDS, 4 * self.options.input_len))
        return self._corpus


def body_source(options: BenchOptions, model: str) -> BodySource:
    """The run's bodies: random prompts, or a file dataset's prompts in seeded order."""
    kind, _, path = options.dataset.partition(":")
    if kind == "random" and not path:
        return RandomBodies(options, model)
    if kind == "sharegpt" and path:
        prompts = _sharegpt_prompts(Path(path), options)
    elif kind == "jsonl" and path:
        prompts = _jsonl_prompts(Path(path), options)
    else:
        raise BenchError(f"--dataset {options.dataset!r}: use random, sharegpt:PATH or jsonl:PATH")
    random.Random(options.seed).shuffle(prompts)
    return PooledBodies(
        [request_body(prompt, options, model) for prompt in prompts],
        [prompt.input_len for prompt in prompts],
    )


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
    # A different stream from the corpus's, so the prefix is not the first prompt's start.
    rng = random.Random(f"prefix-{options.seed}")
    return " ".join(rng.choices(_VOCABULARY, k=options.shared_prefix_len)) + " "


def _join(messages: list[dict[str, Any]] | None) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages or [])


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise BenchError(f"cannot read dataset {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise BenchError(f"{path}: not valid JSON ({exc})") from None
