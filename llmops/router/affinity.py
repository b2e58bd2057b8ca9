"""Session and prompt-prefix affinity: which backend a request would rather go to.

A session key (``x-session-id`` header, else the OpenAI ``user`` field) pins a backend; a
prompt's leading blocks (chained hashes of ``prefix_block_chars`` characters) remember the
backend that last served them, whose prefix cache likely still holds them. Either binding
is used only while its backend is routable and within ``affinity_load_margin`` of the
least busy candidate; otherwise the strategy chooses and the binding moves. Both maps are
LRU-bounded, so memory stays within a fixed number of entries.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmops.config.router import RoutingConfig
from llmops.router.balance import connections_load
from llmops.router.pool import BackendState

SESSION_HEADER = "x-session-id"
MAX_SESSIONS = 100_000
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
        self._sessions = _Lru(MAX_SESSIONS)
        self._prefixes = _Lru(routing.prefix_cache_entries)

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
        """The bound backend if it is among ``usable`` and not overloaded, else None."""
        if hints.session_key is not None:
            chosen = self._usable(self._sessions.get(hints.session_key), usable)
            if chosen is not None:
                return chosen
        for block_hash in reversed(hints.prefix_hashes):  # the longest shared prefix first
            backend_id = self._prefixes.get(block_hash)
            if backend_id is not None:
                return self._usable(backend_id, usable)
        return None

    def remember(self, hints: RouteHints, backend_id: str) -> None:
        if hints.session_key is not None:
            self._sessions.put(hints.session_key, backend_id)
        for block_hash in hints.prefix_hashes:
            self._prefixes.put(block_hash, backend_id)

    def bound_to(self, session_key: str) -> str | None:
        """The backend id a session is pinned to (for tests and debugging)."""
        return self._sessions.get(session_key)

    def _usable(
        self, backend_id: str | None, usable: Sequence[BackendState]
    ) -> BackendState | None:
        if backend_id is None:
            return None
        bound = next((s for s in usable if s.id == backend_id), None)
        if bound is None:
            return None
        idlest = min(connections_load(s) for s in usable)
        return bound if connections_load(bound) <= idlest + self._margin else None


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
