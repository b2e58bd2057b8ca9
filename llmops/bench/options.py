"""What one load run is asked to do: a frozen description built and checked from CLI input."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from llmops.errors import BenchError

Endpoint = Literal["chat", "completions"]
Arrival = Literal["poisson", "gamma", "constant"]
UiMode = Literal["live", "plain", "none"]

DEFAULT_PERCENTILES = (99.0,)
GOODPUT_METRICS = ("ttft", "tpot", "e2el")
ENDPOINT_PATHS: dict[str, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """A validated run configuration; ``to_dict`` is what the result file records."""

    urls: tuple[str, ...]
    model: str | None = None
    endpoint: Endpoint = "chat"
    concurrency: int | None = None
    rate: float | None = None
    arrival: Arrival = "poisson"
    burstiness: float = 1.0
    num_requests: int | None = None
    duration_s: float | None = None
    warmup: int = 0
    ramp_up_s: float = 0.0
    dataset: str = "random"
    input_len: int = 128
    output_len: int = 128
    shared_prefix_len: int = 0
    seed: int = 0
    stream: bool = True
    workers: int = 1
    timeout_s: float = 600.0
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    goodput: tuple[tuple[str, float], ...] = ()
    api_key: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    ui: UiMode = "none"
    output: str | None = None
    save_requests: str | None = None
    label: str | None = None

    @property
    def closed_loop(self) -> bool:
        """Closed loop: a fixed number of requests in flight, each sent when one finishes."""
        return self.rate is None

    def endpoint_urls(self) -> tuple[str, ...]:
        return tuple(base_url(url) + ENDPOINT_PATHS[self.endpoint] for url in self.urls)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["api_key"] = "***" if self.api_key else None
        # Header values may be credentials too: record the names only.
        data["headers"] = [name for name, _ in self.headers]
        data["goodput"] = dict(self.goodput)
        data["percentiles"] = list(self.percentiles)
        data["urls"] = list(self.urls)
        return data


def base_url(url: str) -> str:
    """``http://h:p`` from ``http://h:p``, ``http://h:p/`` or ``http://h:p/v1``."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def parse_percentiles(text: str) -> tuple[float, ...]:
    """``"50,90,99"`` → (50.0, 90.0, 99.0); each must be in (0, 100]."""
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise BenchError(f"--percentiles: {part!r} is not a number") from None
        if not 0 < value <= 100:
            raise BenchError(f"--percentiles: {part} is outside (0, 100]")
        values.append(value)
    if not values:
        raise BenchError("--percentiles: give at least one percentile, e.g. 50,90,99")
    return tuple(values)


def parse_goodput(pairs: list[str]) -> tuple[tuple[str, float], ...]:
    """``["ttft:500", "tpot:50"]`` → (("ttft", 500.0), ("tpot", 50.0)), SLOs in milliseconds."""
    slos: dict[str, float] = {}
    for pair in pairs:
        for item in pair.split():
            name, sep, value_text = item.partition(":")
            if not sep or name not in GOODPUT_METRICS:
                raise BenchError(
                    f"--goodput: {item!r} should be METRIC:MS with METRIC one of ttft, tpot, e2el"
                )
            try:
                value = float(value_text)
            except ValueError:
                raise BenchError(f"--goodput: {value_text!r} is not a number of ms") from None
            if value < 0 or math.isnan(value):
                raise BenchError(f"--goodput: {name} must be a non-negative number of ms")
            slos[name] = value
    return tuple(slos.items())


def parse_headers(items: list[str]) -> tuple[tuple[str, str], ...]:
    """``["X-Team=ml", "X-Trace=1"]`` → (("X-Team", "ml"), ("X-Trace", "1"))."""
    headers: list[tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise BenchError(f"--header {item!r} should be NAME=VALUE")
        headers.append((name.strip(), value.strip()))
    return tuple(headers)


def check_options(options: BenchOptions) -> BenchOptions:
    """Raise BenchError for the first impossible combination; return ``options`` unchanged."""
    if not options.urls:
        raise BenchError("give at least one --url")
    for url in options.urls:
        if not url.startswith(("http://", "https://")):
            raise BenchError(f"--url {url!r} must start with http:// or https://")
    if options.num_requests is not None and options.duration_s is not None:
        raise BenchError("give --num-requests or --duration, not both")
    if options.num_requests is not None and options.num_requests < 1:
        raise BenchError("--num-requests must be at least 1")
    if options.duration_s is not None and options.duration_s <= 0:
        raise BenchError("--duration must be positive")
    if options.concurrency is not None and options.concurrency < 1:
        raise BenchError("--concurrency must be at least 1")
    if options.rate is not None and not options.rate > 0:
        raise BenchError("--rate must be positive")
    if options.burstiness <= 0:
        raise BenchError("--burstiness must be positive")
    if options.warmup < 0 or options.ramp_up_s < 0:
        raise BenchError("--warmup and --ramp-up cannot be negative")
    if options.num_requests is not None and options.warmup >= options.num_requests:
        raise BenchError("--warmup must be smaller than --num-requests")
    if options.input_len < 1 or options.output_len < 1:
        raise BenchError("--input-len and --output-len must be at least 1")
    if options.shared_prefix_len < 0:
        raise BenchError("--shared-prefix-len cannot be negative")
    if options.workers < 1:
        raise BenchError("--workers must be at least 1")
    if options.timeout_s <= 0:
        raise BenchError("--timeout must be positive")
    return options
