"""Engine load from each backend's own ``/metrics`` (vLLM or SGLang names), on an interval.

``parse_engine_load`` is pure (Prometheus text in, numbers out); ``EngineScraper`` is the
I/O edge: it reads every due backend concurrently and stores an ``EngineLoad`` on the
backend's state, where ``least-load`` and ``/status`` read it. A backend without a usable
``/metrics`` is asked again less and less often, so it costs nothing in the steady state.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from llmops.router.pool import BackendState, PoolSnapshot

log = logging.getLogger("llmops.router")

# Engine metric name -> what it measures. vLLM renamed gpu_cache_usage_perc in v0.10.
_METRICS: dict[str, str] = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv",
    "vllm:gpu_cache_usage_perc": "kv",
    "sglang:num_running_reqs": "running",
    "sglang:num_queue_reqs": "waiting",
    "sglang:token_usage": "kv",
}
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
# A sample line of one of those metrics: name, optional {labels}, value (timestamp ignored).
_SAMPLE = re.compile(
    r"^("
    + "|".join(re.escape(name) for name in _METRICS)
    + r')(?:\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?[ \t]+(\S+)',
    re.MULTILINE,
)
STALE_AFTER_INTERVALS = 3  # data older than this many scrape intervals is not used for routing
_MAX_BACKOFF_S = 300.0


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """One scrape of an engine: its queue, its KV cache, and when it was taken."""

    running: float
    waiting: float
    kv_cache_usage: float | None  # 0..1; None when the engine does not export it
    scraped_at: float  # time.monotonic()
    fresh_until: float  # time.monotonic() after which routing ignores it
    in_flight_at_scrape: int  # the router's own requests among them, then


def parse_engine_load(text: str, model: str | None = None) -> tuple[float, float, float | None]:
    """``(running, waiting, kv_cache_usage)`` from Prometheus text; ValueError if absent.

    Series of one metric are summed (several engines, e.g. data-parallel ranks, behind one
    port); KV usage is a fraction, so its series are averaged instead. When some series carry
    ``model_name`` equal to ``model``, only those count (an endpoint serving several models).
    """
    series: dict[str, list[tuple[dict[str, str], float]]] = {"running": [], "waiting": [], "kv": []}
    # One C-level scan for the few lines that matter; an engine exports hundreds of others.
    for match in _SAMPLE.finditer(text):
        name, labels_text, value_text = match.groups()
        try:
            value = float(value_text)
        except ValueError:
            continue
        labels = dict(_LABEL.findall(labels_text)) if labels_text else {}
        series[_METRICS[name]].append((labels, value))
    if not series["running"] and not series["waiting"]:
        raise ValueError("no vLLM or SGLang queue metrics found")
    running = sum(_for_model(series["running"], model))
    waiting = sum(_for_model(series["waiting"], model))
    kv_values = _for_model(series["kv"], model)
    kv = sum(kv_values) / len(kv_values) if kv_values else None
    return running, waiting, kv


def _for_model(samples: list[tuple[dict[str, str], float]], model: str | None) -> list[float]:
    matching = [
        v for labels, v in samples if model is not None and labels.get("model_name") == model
    ]
    return matching or [v for _labels, v in samples]


@dataclass(eq=False, slots=True)
class _Schedule:
    due_at: float = 0.0
    failures: int = 0
    last_error: str | None = None


class EngineScraper:
    """Scrapes the engines of the live snapshot every ``interval_s`` until cancelled."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        snapshot: Callable[[], PoolSnapshot],
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self._session = session
        self._snapshot = snapshot
        self.interval_s = interval_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._schedules: dict[str, _Schedule] = {}  # by engine root URL
        self.scrapes = 0
        self.failures = 0

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.scrape_once()
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def scrape_once(self) -> None:
        """Read every engine that is due, all at once; store what each backend should see."""
        now = time.monotonic()
        by_root: dict[str, list[BackendState]] = {}
        for state in self._snapshot().states:
            by_root.setdefault(state.backend.root_url, []).append(state)
        for gone in self._schedules.keys() - by_root.keys():
            del self._schedules[gone]  # removed by a reload
        due = [
            (root, states)
            for root, states in by_root.items()
            if self._schedules.setdefault(root, _Schedule()).due_at <= now
        ]
        await asyncio.gather(*(self._scrape(root, states) for root, states in due))

    async def _scrape(self, root_url: str, states: list[BackendState]) -> None:
        schedule = self._schedules[root_url]
        # The router's own share of the engine's queue: the larger of before and after the
        # read, so requests that finished or started meanwhile are not taken for others'.
        in_flight_before = {id(s): s.in_flight for s in states}
        try:
            async with self._session.get(f"{root_url}/metrics", timeout=self._timeout) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                text = await response.text()
            scraped_at = time.monotonic()
            fresh_until = scraped_at + STALE_AFTER_INTERVALS * self.interval_s
            for state in states:
                running, waiting, kv = parse_engine_load(text, state.backend.upstream_model)
                own = max(state.in_flight, in_flight_before[id(state)])
                state.engine = EngineLoad(running, waiting, kv, scraped_at, fresh_until, own)
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError) as exc:
            self._back_off(root_url, schedule, exc)
            return
        self.scrapes += 1
        if schedule.failures:
            log.info("engine metrics of %s readable again", root_url)
        schedule.failures = 0
        schedule.last_error = None
        schedule.due_at = 0.0

    def _back_off(self, root_url: str, schedule: _Schedule, exc: BaseException) -> None:
        self.failures += 1
        schedule.failures += 1
        schedule.last_error = str(exc) or type(exc).__name__
        delay = min(_MAX_BACKOFF_S, self.interval_s * 2 ** (schedule.failures - 1))
        schedule.due_at = time.monotonic() + delay
        if schedule.failures == 1:  # once per outage, not once per try
            log.warning(
                "cannot read engine metrics of %s (%s); least-load uses in-flight counts",
                root_url,
                schedule.last_error,
            )
