"""Bearer-token checks, constant-time against every configured token."""

from __future__ import annotations

import hmac
from collections.abc import Collection, Iterable, Iterator

from aiohttp import web

# Where a scoped token's models are kept on its request, for the proxy to check.
ALLOWED_MODELS = web.RequestKey("allowed_models", Collection[str])


class _EveryModel(Collection[str]):
    """The models of an unscoped token: every one."""

    def __contains__(self, model: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


EVERY_MODEL: Collection[str] = _EveryModel()
#: What a request without a valid API key is told (message, code), whichever side it came in.
REFUSED_KEY = ("invalid or missing API key", "invalid_api_key")


class TokenSet:
    """A set of accepted bearer tokens, each maybe limited to some models; empty means open."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: Iterable[str | tuple[str, Collection[str]]]) -> None:
        entries = ((t, EVERY_MODEL) if isinstance(t, str) else t for t in tokens)
        self._tokens = tuple((token.encode(), models) for token, models in entries if token)

    @property
    def open(self) -> bool:
        return not self._tokens

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries one of the tokens."""
        return self.allowed_models(authorization) is not None

    def allowed_models(self, authorization: str | None) -> Collection[str] | None:
        """The models the header's token may use (``EVERY_MODEL``), or None if it is refused."""
        if not self._tokens:
            return EVERY_MODEL
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        given = authorization[7:].strip().encode()
        allowed: Collection[str] | None = None
        for token, models in self._tokens:  # no early exit: timing does not tell which matched
            if hmac.compare_digest(given, token):
                allowed = models
        return allowed
