"""The simulated engine's tokenizer: one token per whitespace-separated word.

This is a contract other parts rely on: ``llmops bench`` builds random prompts of exactly
N words to send N prompt tokens, and the sim reports ``usage.prompt_tokens`` = N for them.
Chat requests count the words of every message's text content (no chat template tokens);
completions count the words of the prompt string, or of every string in a prompt list, or
one token per id when the prompt is given as token ids.
"""

from __future__ import annotations

import random
import zlib

_WORDS = """the a of to and in is it that for on with as was at by be this from or an are not
    have but had they his her she he you we one all were there their what so up out if
    about who get which go me when make can like time no just him know take people into
    year your good some could them see other than then now look only come its over think
    also back after use two how our work first well way even new want because any these
    give day most us model token engine batch stream cache route"""
#: What the sim "generates": one word (plus a space) per output token.
VOCABULARY: tuple[str, ...] = tuple(_WORDS.split())


def count_prompt_tokens(text: str) -> int:
    """How many tokens the sim charges for ``text``: its whitespace-separated words."""
    return len(text.split())


def chat_prompt_text(messages: list[object]) -> str | None:
    """The text of a chat ``messages`` list (string or text-part contents), or None if invalid."""
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            return None
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    parts.append(part["text"])
        elif content is not None:
            return None
    return " ".join(parts)


def completion_prompt_text(prompt: object) -> str | None:
    """The text of a completions ``prompt`` (string, list of strings, token ids), or None."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        if all(isinstance(item, str) for item in prompt):
            return " ".join(prompt)
        if all(_is_token_id(item) for item in prompt):
            return " ".join(str(item) for item in prompt)
        if all(isinstance(item, list) and all(_is_token_id(t) for t in item) for item in prompt):
            return " ".join(str(t) for item in prompt for t in item)
    return None


def generated_words(seed: int, prompt_text: str, count: int) -> list[str]:
    """The ``count`` output words for a prompt: the same prompt and seed give the same text."""
    rng = random.Random(seed * 1_000_003 + zlib.crc32(prompt_text.encode()))
    return [word + " " for word in rng.choices(VOCABULARY, k=count)]


def _is_token_id(item: object) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)
