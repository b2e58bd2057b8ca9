"""Bearer-token checks, constant-time against every configured token."""

from __future__ import annotations

import hmac
from collections.abc import Iterable


class TokenSet:
    """A set of accepted bearer tokens; empty means open access."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(t.encode() for t in tokens if t)

    @property
    def open(self) -> bool:
        return not self._tokens

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries one of the tokens."""
        if not self._tokens:
            return True
        if not authorization or authorization[:7].lower() != "bearer ":
            return False
        given = authorization[7:].strip().encode()
        matched = False
        for token in self._tokens:  # no early exit: timing does not tell which token matched
            matched |= hmac.compare_digest(given, token)
        return matched
