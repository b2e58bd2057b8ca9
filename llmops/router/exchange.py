"""One client request's journey through the router, filled in along the way.

The proxy fills it in; ``finish_exchange`` hands it to accounting (access log, metrics,
windows) once, when the response is complete or the client has gone.
"""

from __future__ import annotations

from llmops.openai import Usage
from llmops.router.stream_usage import UsageTap


class Exchange:
    __slots__ = (
        "attempts",
        "backend_id",
        "cancelled",
        "chosen_at",
        "error_kind",
        "finished_at",
        "first_byte_at",
        "model",
        "request_id",
        "started_at",
        "status",
        "stream",
        "usage",
        "usage_tap",
    )

    def __init__(self, request_id: str, model: str, started_at: float) -> None:
        self.request_id = request_id
        self.model = model
        self.started_at = started_at  # loop time
        self.backend_id: str | None = None
        self.attempts = 0
        self.status = 0
        self.stream = False
        self.chosen_at: float | None = None  # when the first backend was chosen
        self.first_byte_at: float | None = None
        self.finished_at: float | None = None
        self.error_kind: str | None = None  # the last upstream failure's kind
        self.cancelled = False  # the client went away before the end
        self.usage: Usage | None = None
        self.usage_tap: UsageTap | None = None  # set when a TPM limit needs the usage

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_byte_at is None else self.first_byte_at - self.started_at

    @property
    def total_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at
