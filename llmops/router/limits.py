"""Rate limits: sliding-window requests and tokens per backend and per API key.

Windows are bucketed counters (``windows.BucketCounter``): O(1) per request. With
``limits.redis_url`` the decision is made in Redis by one Lua script per request (check
every window, then count, atomically), so N router replicas enforce one limit. When Redis
cannot be reached the router keeps serving on its own local windows, says so once in the
log and in ``/status`` events, and tries Redis again after a back-off.

Tokens are known only when a response ends, so a TPM limit refuses new requests once the
tokens already used reach it (the usual semantics of OpenAI-style TPM limits).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from llmops.config.router import LimitsConfig
from llmops.openai import Usage
from llmops.router.pool import BackendState
from llmops.router.windows import BucketCounter

log = logging.getLogger("llmops.router")

Scope = Literal["key", "backend"]
Kind = Literal["requests", "tokens"]
BUCKETS = 60  # per window: a 60 s window counts in 1 s buckets
MAX_LOCAL_SUBJECTS = 10_000  # API keys remembered locally; the oldest is forgotten first
_REDIS_RETRY_S = (1.0, 10.0)  # first and longest pause before trying Redis again
REDIS_CONNECTIONS = 16

# KEYS: one hash per window (field = bucket index). ARGV: now_bucket, buckets counted,
# ttl_ms, then each window's limit, then what each window adds when admitted.
# Returns {1} when admitted, else {0, window index, used, oldest bucket in the window}.
_ADMIT_LUA = """
local now = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local n = #KEYS
for i = 1, n do
  local flat = redis.call('HGETALL', KEYS[i])
  local used, oldest = 0, now
  for j = 1, #flat, 2 do
    local bucket = tonumber(flat[j])
    if bucket <= now - span then
      redis.call('HDEL', KEYS[i], flat[j])
    else
      used = used + tonumber(flat[j + 1])
      if bucket < oldest then oldest = bucket end
    end
  end
  if used + 1 > tonumber(ARGV[3 + i]) then
    return {0, i, used, oldest}
  end
end
for i = 1, n do
  local add = tonumber(ARGV[3 + n + i])
  if add > 0 then redis.call('HINCRBY', KEYS[i], now, add) end
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
return {1}
"""


@dataclass(frozen=True, slots=True)
class Limited:
    """Why a request may not go ahead now, and when it may."""

    scope: Scope
    kind: Kind
    limit: int
    used: int
    retry_after_s: float

    def headers(self) -> dict[str, str]:
        """``Retry-After`` and OpenAI's ``x-ratelimit-*`` headers for the 429."""
        return {
            "Retry-After": str(max(1, math.ceil(self.retry_after_s))),
            f"x-ratelimit-limit-{self.kind}": str(self.limit),
            f"x-ratelimit-remaining-{self.kind}": str(max(0, self.limit - self.used)),
            f"x-ratelimit-reset-{self.kind}": f"{self.retry_after_s:.3f}s",
            "x-ratelimit-scope": self.scope,
        }

    @property
    def message(self) -> str:
        per = "API key" if self.scope == "key" else "backend"
        return f"rate limit reached for this {per}: {self.used}/{self.limit} {self.kind} per window"


def _checks(rpm: int | None, tpm: int | None) -> list[tuple[Kind, int, int]]:
    """(kind, limit, amount added when admitted) for each limit that is set."""
    checks: list[tuple[Kind, int, int]] = []
    if rpm is not None:
        checks.append(("requests", rpm, 1))
    if tpm is not None:
        checks.append(("tokens", tpm, 0))  # tokens are added when the response reports them
    return checks


class LocalWindows:
    """This process's own windows: the whole story without Redis, the fallback with it."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._windows: dict[tuple[Scope, str, Kind], BucketCounter] = {}

    def _window(self, scope: Scope, subject: str, kind: Kind) -> BucketCounter:
        key = (scope, subject, kind)
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= MAX_LOCAL_SUBJECTS:
                del self._windows[next(iter(self._windows))]
            window = self._windows[key] = BucketCounter(self._window_s, BUCKETS)
        return window

    def admit(
        self, now: float, scope: Scope, subject: str, rpm: int | None, tpm: int | None
    ) -> Limited | None:
        checks = _checks(rpm, tpm)
        for kind, limit, _add in checks:
            window = self._window(scope, subject, kind)
            used = window.total(now)
            if used + 1 > limit:
                retry = window.retry_after_s(now, limit)
                return Limited(scope, kind, limit, int(used), retry)
        self.count(now, scope, subject, checks)
        return None

    def count(
        self, now: float, scope: Scope, subject: str, checks: list[tuple[Kind, int, int]]
    ) -> None:
        for kind, _limit, add in checks:
            if add:
                self._window(scope, subject, kind).add(now, add)

    def add_tokens(self, now: float, scope: Scope, subject: str, tokens: int) -> None:
        self._window(scope, subject, "tokens").add(now, tokens)

    def used(self, now: float, scope: Scope, subject: str, kind: Kind) -> float:
        window = self._windows.get((scope, subject, kind))
        return 0.0 if window is None else window.total(now)


class SharedWindows:
    """The same windows in Redis, decided atomically by a server-side script."""

    def __init__(self, url: str, window_s: float, timeout_s: float) -> None:
        # No client-side retries: a slow or absent Redis must cost one timeout, then fall back.
        # A bounded pool: a burst of requests queues for a few connections (a script runs in
        # microseconds) instead of opening one connection each.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=REDIS_CONNECTIONS,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._admit = self._redis.register_script(_ADMIT_LUA)
        self._bucket_s = window_s / BUCKETS
        self._span = BUCKETS + 1  # the buckets a window covers (see BucketCounter)
        self._ttl_ms = math.ceil((window_s + 2 * self._bucket_s) * 1000)

    @staticmethod
    def _key(scope: Scope, subject: str, kind: Kind) -> str:
        return f"llmops:rl:{scope}:{subject}:{kind}"

    async def admit(
        self, now: float, scope: Scope, subject: str, rpm: int | None, tpm: int | None
    ) -> Limited | None:
        checks = _checks(rpm, tpm)
        now_bucket = math.floor(now / self._bucket_s)
        result = await self._admit(
            keys=[self._key(scope, subject, kind) for kind, _l, _a in checks],
            args=[
                now_bucket,
                self._span,
                self._ttl_ms,
                *(limit for _k, limit, _a in checks),
                *(add for _k, _l, add in checks),
            ],
        )
        if int(result[0]) == 1:
            return None
        kind, limit, _add = checks[int(result[1]) - 1]
        retry = (int(result[3]) + self._span) * self._bucket_s - now
        return Limited(scope, kind, limit, int(result[2]), max(0.0, retry))

    async def add_tokens(self, now: float, scope: Scope, subject: str, tokens: int) -> None:
        key = self._key(scope, subject, "tokens")
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, str(math.floor(now / self._bucket_s)), tokens)
            pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()

    async def close(self) -> None:
        await self._redis.aclose()


def key_subject(authorization: str | None) -> str:
    """How an API key is named in limit windows: a digest, never the secret itself."""
    if not authorization:
        return "anonymous"
    return hashlib.sha256(authorization.encode()).hexdigest()[:32]


class Limiter:
    """Rate-limit decisions for the request path: shared through Redis when it answers."""

    def __init__(
        self,
        config: LimitsConfig,
        on_change: Callable[[bool, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._local = LocalWindows(config.window_s)
        self._shared = (
            SharedWindows(config.redis_url, config.window_s, config.redis_timeout_s)
            if config.redis_url
            else None
        )
        self._on_change = on_change  # (shared now?, why) when Redis goes away or comes back
        self._clock = clock
        self._shared_ok = True
        self._retry_shared_at = 0.0
        self._retry_pause_s = _REDIS_RETRY_S[0]
        self.decisions: dict[tuple[Scope, bool], int] = {}  # (scope, limited) -> count
        # Without Redis each of N router workers enforces 1/N of every limit.
        self.local_share = 1.0

    def configure(self, config: LimitsConfig) -> None:
        """Apply a reloaded config: new limit values now; a new Redis URL or window on restart."""
        if (config.redis_url, config.window_s) != (self.config.redis_url, self.config.window_s):
            log.warning("limits.redis_url and limits.window_s take effect on restart")
            config = replace(config, redis_url=self.config.redis_url, window_s=self.config.window_s)
        self.config = config

    @property
    def mode(self) -> Literal["local", "shared", "local-fallback"]:
        if self._shared is None:
            return "local"
        return "shared" if self._shared_ok else "local-fallback"

    @property
    def limits_keys(self) -> bool:
        return self.config.key_rpm is not None or self.config.key_tpm is not None

    async def admit(
        self, scope: Scope, subject: str, rpm: int | None, tpm: int | None
    ) -> Limited | None:
        """None if the request may go ahead (and it is counted), else why not."""
        now = self._clock()
        verdict: Limited | None
        if self._shared is not None and self._use_shared(now):
            try:
                verdict = await self._shared.admit(now, scope, subject, rpm, tpm)
            except (RedisError, OSError) as exc:
                self._shared_failed(now, exc)
                verdict = self._local.admit(now, scope, subject, self._share(rpm), self._share(tpm))
            else:
                self._shared_worked()
                if verdict is None:  # keep local windows warm for a fallback
                    self._local.count(now, scope, subject, _checks(rpm, tpm))
        else:
            verdict = self._local.admit(now, scope, subject, self._share(rpm), self._share(tpm))
        decision = (scope, verdict is not None)
        self.decisions[decision] = self.decisions.get(decision, 0) + 1
        return verdict

    def _share(self, limit: int | None) -> int | None:
        if limit is None or self.local_share == 1.0:
            return limit
        return max(1, math.floor(limit * self.local_share))

    async def admit_key(self, authorization: str | None) -> Limited | None:
        if not self.limits_keys:
            return None
        return await self.admit(
            "key", key_subject(authorization), self.config.key_rpm, self.config.key_tpm
        )

    async def record_tokens(
        self, backend: BackendState, authorization: str | None, tokens: int
    ) -> None:
        """Count the tokens a finished response used against its backend's and key's TPM."""
        subjects: list[tuple[Scope, str]] = []
        if backend.backend.tpm_limit is not None:
            subjects.append(("backend", backend.id))
        if self.config.key_tpm is not None:
            subjects.append(("key", key_subject(authorization)))
        now = self._clock()
        for scope, subject in subjects:
            self._local.add_tokens(now, scope, subject, tokens)
            if self._shared is not None and self._use_shared(now):
                try:
                    await self._shared.add_tokens(now, scope, subject, tokens)
                except (RedisError, OSError) as exc:
                    self._shared_failed(now, exc)

    def counts_tokens(self, candidates: Iterable[BackendState]) -> bool:
        """Whether responses must report usage (a TPM limit applies to them)."""
        if self.config.key_tpm is not None:
            return True
        return any(c.backend.tpm_limit is not None for c in candidates)

    async def record_usage(
        self, backend: BackendState, authorization: str | None, usage: Usage | None
    ) -> None:
        if usage is not None:
            await self.record_tokens(backend, authorization, usage.total_tokens)

    def requests_in_window(self, backend_id: str) -> int:
        """Requests this router sent a backend in the current limit window (its own view)."""
        return int(self._local.used(self._clock(), "backend", backend_id, "requests"))

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()

    def _use_shared(self, now: float) -> bool:
        return self._shared_ok or now >= self._retry_shared_at

    def _shared_failed(self, now: float, exc: BaseException) -> None:
        if self._shared_ok:
            self._shared_ok = False
            self._retry_pause_s = _REDIS_RETRY_S[0]
            why = f"Redis unreachable ({type(exc).__name__}: {exc}); rate limits are local now"
            log.warning("%s", why)
            if self._on_change is not None:
                self._on_change(False, why)
        else:
            self._retry_pause_s = min(_REDIS_RETRY_S[1], self._retry_pause_s * 2)
        self._retry_shared_at = now + self._retry_pause_s

    def _shared_worked(self) -> None:
        if not self._shared_ok:
            self._shared_ok = True
            why = "Redis reachable again; rate limits are shared across replicas"
            log.info("%s", why)
            if self._on_change is not None:
                self._on_change(True, why)


Pick = Callable[[frozenset[str]], BackendState | None]


async def acquire_backend(
    pick: Pick, limiter: Limiter, exclude: frozenset[str], wait_s: float
) -> BackendState | Limited | None:
    """A backend from ``pick`` that is within its limits, waiting up to ``wait_s`` for one.

    None when no backend is routable at all; ``Limited`` (the soonest to free up) when every
    routable backend stayed at its limit for the whole wait.
    """
    deadline = time.monotonic() + wait_s
    limited: dict[str, Limited] = {}
    while True:
        backend = pick(exclude.union(limited) if limited else exclude)
        if backend is None:
            if not limited:
                return None
            soonest = min(limited.values(), key=lambda v: v.retry_after_s)
            remaining = deadline - time.monotonic()
            if soonest.retry_after_s > remaining:  # no room before the wait is over: say so now
                return soonest
            await asyncio.sleep(max(0.01, soonest.retry_after_s))
            limited.clear()
            continue
        target = backend.backend
        if target.rpm_limit is None and target.tpm_limit is None:
            return backend
        verdict = await limiter.admit("backend", target.id, target.rpm_limit, target.tpm_limit)
        if verdict is None:
            return backend
        limited[target.id] = verdict
