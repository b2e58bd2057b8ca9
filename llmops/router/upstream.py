"""How upstream failures are classified: what is retried, what the client is told."""

from __future__ import annotations

from dataclasses import dataclass

from llmops.openai import error_json
from llmops.router.upstream_http import UpstreamError, UpstreamNoResources

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_ERROR_TEXT = {
    "connect": "cannot connect to",
    "connect_timeout": "timed out connecting to",
    "disconnected": "connection closed by",
    "bad_response": "invalid response from",
}
_TIMEOUT_TEXT = {
    "ttfb": "no first byte in time from",
    "idle": "stream went idle from",
    "total": "total time ran out for",
}


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    """Why one attempt on one backend failed, and the response the client gets if it is the last."""

    kind: str  # metric label: connect, connect_timeout, ttfb_timeout, disconnected, http_5xx, ...
    status: int
    body: bytes
    content_type: str = "application/json"
    retry_after_s: float | None = None

    @property
    def local(self) -> bool:
        """The router's own shortage: the backend is not to blame."""
        return self.kind == UpstreamNoResources.kind

    @property
    def message(self) -> str:
        return f"{self.kind} ({self.status})"


def failure_from_exception(exc: BaseException, backend_id: str, phase: str) -> UpstreamFailure:
    """Classify a client-side exception raised while talking to a backend."""
    if isinstance(exc, UpstreamNoResources):  # worth a retry soon, once streams have ended
        message = f"router overloaded: no connection to backend {backend_id} ({exc})"
        return UpstreamFailure(exc.kind, 503, error_json(503, message, exc.kind), retry_after_s=1.0)
    if isinstance(exc, UpstreamError):
        kind = exc.kind
        status = 504 if kind == "connect_timeout" else 502
        text = _ERROR_TEXT.get(kind, "connection error with")
    elif isinstance(exc, TimeoutError):
        kind, status, text = f"{phase}_timeout", 504, _TIMEOUT_TEXT[phase]
    else:
        kind, status, text = "connection", 502, "connection error with"
    message = f"upstream error: {text} backend {backend_id}"
    return UpstreamFailure(kind, status, error_json(status, message, kind))


def failure_from_response(
    status: int, body: bytes, content_type: str, retry_after: str | None
) -> UpstreamFailure:
    """An HTTP error answer from a backend, kept byte for byte for the client."""
    retry_after_s: float | None = None
    if retry_after is not None:
        try:
            retry_after_s = max(0.0, float(retry_after))
        except ValueError:
            retry_after_s = None
    return UpstreamFailure(f"http_{status}", status, body, content_type, retry_after_s)


def classify_failure(
    exc: BaseException, expired: str | None, backend_id: str, phase: str
) -> UpstreamFailure:
    """Why an attempt failed: the timeout the watchdog enforced (``expired``), else ``exc``."""
    if expired is not None:
        return failure_from_exception(TimeoutError(), backend_id, expired)
    return failure_from_exception(exc, backend_id, phase)
