"""Everything the request path needs, in one object built at startup and passed down."""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from llmops.config import LoadedConfig, RouterConfig
from llmops.router.accesslog import FORMATTERS
from llmops.router.affinity import Affinity
from llmops.router.auth import TokenSet
from llmops.router.balance import STRATEGIES, Picker
from llmops.router.events import EventLog
from llmops.router.exchange import Exchange
from llmops.router.limits import Limiter
from llmops.router.metrics import RouterMetrics
from llmops.router.pool import BackendState, PoolSnapshot, build_snapshot
from llmops.router.upstream_http import UpstreamPool, UpstreamTarget
from llmops.router.watchdog import RequestWatchdog


@dataclass(eq=False)
class RouterState:
    loaded: LoadedConfig
    session: aiohttp.ClientSession
    snapshot: PoolSnapshot = field(init=False)
    picker: Picker = field(init=False)
    inference_tokens: TokenSet = field(init=False)
    admin_tokens: TokenSet = field(init=False)
    upstream_ssl: ssl.SSLContext | None = None  # for HTTPS backends on the proxy path
    affinity: Affinity = field(init=False)
    limits: Limiter = field(init=False)
    metrics: RouterMetrics = field(init=False)
    access_formatter: Callable[[Exchange], str] | None = field(init=False)
    events: EventLog = field(default_factory=EventLog)
    watchdog: RequestWatchdog = field(default_factory=RequestWatchdog)
    rng: random.Random = field(default_factory=random.Random)
    started_at: float = field(default_factory=time.time)
    shutting_down: bool = False
    cancelled: int = 0
    stream_errors: int = 0
    lane_handoffs: int = 0  # client connections the fast lane handed to aiohttp's side
    _pools: dict[str, UpstreamPool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.metrics = RouterMetrics(lambda: self)
        self.limits = Limiter(self.loaded.config.limits, self._limits_shared)
        self.swap(self.loaded, build_snapshot(self.loaded.backends, None, 1))

    @property
    def config(self) -> RouterConfig:
        return self.loaded.config

    def swap(self, loaded: LoadedConfig, snapshot: PoolSnapshot) -> None:
        """Make ``loaded`` and its ``snapshot`` the live config, all at once."""
        config = loaded.config
        auth = config.auth
        self.loaded = loaded
        self.snapshot = snapshot
        self.picker = STRATEGIES[config.routing.strategy]
        if getattr(self, "affinity", None) is None or self.affinity.routing != config.routing:
            self.affinity = Affinity(config.routing)  # new routing settings: bindings start afresh
        self.limits.configure(config.limits)
        # An admin token is good for inference too; no inference tokens = open.
        scoped = (t if isinstance(t, str) else (t.token, frozenset(t.models)) for t in auth.tokens)
        self.inference_tokens = TokenSet((*scoped, *auth.admin_tokens) if auth.tokens else ())
        self.admin_tokens = TokenSet(auth.admin_tokens)
        timeouts = config.timeouts
        self.watchdog.configure(timeouts.ttfb, timeouts.idle, timeouts.total)
        log = config.access_log
        self.access_formatter = FORMATTERS[log.format] if log.enabled else None

    def upstream_for(self, state: BackendState) -> UpstreamTarget:
        """How to reach ``state``'s backend; pools are shared by backends on one host:port."""
        if state.upstream is not None:
            return state.upstream
        backend = state.backend
        parts = urlsplit(backend.api_base)
        secure = parts.scheme == "https"
        key = f"{parts.scheme}://{parts.netloc}"
        pool = self._pools.get(key)
        if pool is None:
            port = parts.port or (443 if secure else 80)
            pool = UpstreamPool(parts.hostname or "", port, self.upstream_ssl if secure else None)
            self._pools[key] = pool
        auth = f"Authorization: Bearer {backend.api_key}\r\n".encode() if backend.api_key else b""
        state.upstream = UpstreamTarget(pool, parts.path, auth)
        return state.upstream

    def close_pools(self) -> None:
        for pool in self._pools.values():
            pool.close()

    def _limits_shared(self, shared: bool, why: str) -> None:
        if shared:
            self.events.record("limits_shared", "info", why)
        else:
            self.events.record("limits_local", "warning", why)
