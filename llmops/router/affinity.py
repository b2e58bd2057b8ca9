"""Session and prompt-prefix affinity: which backend a request would rather go to.

A session key (``x-session-id`` header, else the OpenAI ``user`` field) ranks the backends
by rendezvous hashing: the first usable one in that order wins, so the choice needs no
memory and is the same in every router worker and replica. While that backend is drained,
unhealthy or overloaded the session moves to the next in its order, and back when it is fine.

A prompt's leading blocks (chained hashes of ``prefix_block_chars`` characters) remember the
backend that last served them, whose prefix cache likely still holds them, in an LRU map of
``prefix_cache_entries`` (the memory budget). Either binding yields to the strategy when its
backend is more than ``affinity_load_margin`` busier than the idlest candidate.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmops.config.router import RoutingConfig
from llmops.router.balance import connections_load
from llmops.router.pool import BackendState

SESSION_HEADER = "x-session-id"
_MASK64 = (1 << 64) - 1
MAX_PREFIX_BLOCKS = 64  # longer prompts are bound by their first 64 blocks


@dataclass(frozen=True, slots=True)
class RouteHints:
    session_key: str | None
    prefix_hashes: tuple[int, ...]  # one per full block, shortest prefix first


class _Lru:
    __slots__ = ("_capacity", "_entries")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[object, str] = OrderedDict()

    def get(self, key: object) -> str | None:
        return self._entries.get(key)

    def put(self, key: object, value: str) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class Affinity:
    """Bindings from session keys and prompt prefixes to backend ids."""

    def __init__(self, routing: RoutingConfig) -> None:
        self.routing = routing
        self._sessions_on = routing.session_affinity
        self._prefixes_on = routing.prefix_affinity
        self._block_chars = routing.prefix_block_chars
        self._margin = routing.affinity_load_margin
        self._prefixes = _Lru(routing.prefix_cache_entries)
        self._backend_hashes: dict[str, int] = {}  # by backend id, bounded by the fleet

    @property
    def enabled(self) -> bool:
        return self._sessions_on or self._prefixes_on

    def hints(self, headers: Mapping[str, str], parsed: dict[str, Any]) -> RouteHints | None:
        """What in this request could bind it to a backend; None when nothing does."""
        session_key: str | None = None
        if self._sessions_on:
            session_key = headers.get(SESSION_HEADER) or None
            if session_key is None and isinstance(parsed.get("user"), str):
                session_key = parsed["user"] or None
        prefix_hashes: tuple[int, ...] = ()
        if self._prefixes_on:
            prefix_hashes = prefix_block_hashes(prompt_text(parsed), self._block_chars)
        if session_key is None and not prefix_hashes:
            return None
        return RouteHints(session_key, prefix_hashes)

    def prefer(self, hints: RouteHints, usable: Sequence[BackendState]) -> BackendState | None:
        """The backend the hints point to if it is usable and not overloaded, else None."""
        if hints.session_key is not None:
            chosen = self.session_home(hints.session_key, usable)
            if chosen is not None:
                return chosen
        for block_hash in reversed(hints.prefix_hashes):  # the longest shared prefix first
            backend_id = self._prefixes.get(block_hash)
            if backend_id is not None:
                bound = next((s for s in usable if s.id == backend_id), None)
                if bound is not None and self._within_margin(bound, usable):
                    return bound
                return None
        return None

    def session_home(self, session_key: str, usable: Sequence[BackendState]) -> BackendState | None:
        """The first backend in the session's rendezvous order that is not overloaded."""
        key_hash = _stable_hash(session_key)
        ranked = sorted(usable, key=lambda s: _mix(key_hash ^ self._backend_hash(s.id)))
        return next((s for s in reversed(ranked) if self._within_margin(s, usable)), None)

    def remember(self, hints: RouteHints, backend_id: str) -> None:
        """Bind the prompt's prefix blocks to the backend that serves them now."""
        for block_hash in hints.prefix_hashes:
            self._prefixes.put(block_hash, backend_id)

    def _within_margin(self, bound: BackendState, usable: Sequence[BackendState]) -> bool:
        idlest = min(connections_load(s) for s in usable)
        return connections_load(bound) <= idlest + self._margin

    def _backend_hash(self, backend_id: str) -> int:
        cached = self._backend_hashes.get(backend_id)
        if cached is None:
            cached = self._backend_hashes[backend_id] = _stable_hash(backend_id)
        return cached


def _stable_hash(text: str) -> int:
    """The same 64 bits in every process (``hash()`` of a str is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _mix(value: int) -> int:
    """splitmix64's finalizer: spreads a combined key so every backend order is as likely."""
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def prompt_text(parsed: dict[str, Any]) -> str:
    """The text a prefix cache would see first: chat messages in order, or the prompt."""
    messages = parsed.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        for message in messages:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, list):  # content parts: only the text ones matter here
                content = "".join(
                    p.get("text", "")
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
            if isinstance(content, str):
                parts.append(f"{message.get('role')}\x00{content}\x00")
        return "".join(parts)
    prompt = parsed.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        return prompt[0]
    return ""


def prefix_block_hashes(text: str, block_chars: int) -> tuple[int, ...]:
    """Chained hashes of each full leading block: equal prefixes give equal leading hashes."""
    hashes: list[int] = []
    chained = 0
    for start in range(0, min(len(text), block_chars * MAX_PREFIX_BLOCKS), block_chars):
        block = text[start : start + block_chars]
        if len(block) < block_chars:
            break
        chained = hash((chained, block))
        hashes.append(chained)
    return tuple(hashes)
