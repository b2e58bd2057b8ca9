"""The router's configuration: the YAML schema of DESIGN.md as frozen dataclasses."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from llmops.config._schema import build, non_negative, port_number, positive
from llmops.config._yaml import read_yaml, resolve_references
from llmops.config.secrets_check import redact_problems
from llmops.errors import ConfigError

Strategy = Literal["simple-shuffle", "least-connections", "least-load"]

DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class ServerTLSConfig:
    """The certificate chain and key the router serves HTTPS with (paths as in ``${file:}``)."""

    cert: str
    key: str


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = field(default=DEFAULT_PORT, metadata={"check": port_number})
    max_body_bytes: int = field(default=DEFAULT_MAX_BODY_BYTES, metadata={"check": positive})
    shutdown_timeout: float = field(default=30.0, metadata={"check": non_negative})  # seconds
    # Open client connections; past it a new connection gets one 503 and is closed.
    max_connections: int = field(default=16384, metadata={"check": positive})
    # Seconds a connection has to send a complete request head, from its opening (first
    # request) or from the head's first byte (later ones): the slowloris limit.
    header_timeout: float = field(default=30.0, metadata={"check": positive})
    # Seconds an idle keep-alive connection stays open; keep it above the keep-alive time
    # of any proxy in front (nginx: 60 s), or a request may meet a closing connection.
    keepalive_timeout: float = field(default=75.0, metadata={"check": positive})
    body_timeout: float = field(default=60.0, metadata={"check": positive})  # whole body, s
    max_header_bytes: int = field(default=8190, metadata={"check": positive})  # per line
    max_headers: int = field(default=100, metadata={"check": positive})
    tls: ServerTLSConfig | None = None


@dataclass(frozen=True)
class ScopedToken:
    """An inference token good only for ``models`` (other models answer 404)."""

    token: str = field(repr=False)
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthConfig:
    tokens: tuple[str | ScopedToken, ...] = field(default=(), repr=False)
    admin_tokens: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class UpstreamTLSConfig:
    """How HTTPS backends are verified: the system CAs, or ``ca_bundle`` (a PEM file)."""

    ca_bundle: str | None = None
    verify: bool = True  # false accepts any certificate: only by explicit choice


@dataclass(frozen=True)
class RoutingConfig:
    strategy: Strategy = "least-load"
    num_retries: int = field(default=3, metadata={"check": non_negative})
    retry_deadline: float = field(
        default=60.0, metadata={"check": positive}
    )  # seconds for all tries
    # A request with ``x-session-id`` or ``user`` sticks to one backend while it is fine.
    session_affinity: bool = True
    # Prompts sharing a long prefix prefer the backend that served it (prefix-cache hits).
    prefix_affinity: bool = False
    prefix_block_chars: int = field(default=512, metadata={"check": positive})
    prefix_cache_entries: int = field(default=65536, metadata={"check": positive})
    # How much busier (in-flight per unit of weight) an affine backend may be than the idlest.
    affinity_load_margin: float = field(default=8.0, metadata={"check": non_negative})


@dataclass(frozen=True)
class LimitsConfig:
    """Per-key rate limits and the window of every RPM/TPM limit; shared through Redis if set."""

    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    key_rpm: int | None = field(default=None, metadata={"check": positive})
    key_tpm: int | None = field(default=None, metadata={"check": positive})
    wait_s: float = field(default=1.0, metadata={"check": non_negative})  # queue before a 429
    window_s: float = field(default=60.0, metadata={"check": positive})  # 60 = per minute
    redis_timeout_s: float = field(default=0.5, metadata={"check": positive})


@dataclass(frozen=True)
class ScrapeConfig:
    """How often each engine's own ``/metrics`` is read (the load that ``least-load`` uses)."""

    interval: float = field(default=2.0, metadata={"check": positive})
    timeout: float = field(default=1.0, metadata={"check": positive})


@dataclass(frozen=True)
class TimeoutConfig:
    """Seconds allowed for each phase of an upstream request (None = no limit)."""

    connect: float = field(default=5.0, metadata={"check": positive})
    ttfb: float | None = field(default=600.0, metadata={"check": positive})
    idle: float | None = field(default=120.0, metadata={"check": positive})
    total: float | None = field(default=None, metadata={"check": positive})


@dataclass(frozen=True)
class AccessLogConfig:
    """One line per request (request id, model, backend, status, retries, TTFT, total)."""

    enabled: bool = False
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class HealthCheckConfig:
    enabled: bool = True
    interval: float = field(default=10.0, metadata={"check": positive})
    timeout: float = field(default=5.0, metadata={"check": positive})
    failure_threshold: int = field(default=3, metadata={"check": positive})
    success_threshold: int = field(default=2, metadata={"check": positive})
    max_concurrent: int = field(default=64, metadata={"check": positive})


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """Passive ejection: consecutive 5xx, timeouts or connection errors (never 4xx) open it."""

    failure_threshold: int = field(default=5, metadata={"check": positive})
    cooldown: float = field(default=30.0, metadata={"check": positive})  # seconds before a trial


def _http_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "has a bad port"
    return None


def _api_base(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        # It would show in /status, metrics and logs; credentials belong in api_key.
        return "must not hold credentials (user:password@); put the key in api_key"
    return _http_url(value)


@dataclass(frozen=True)
class LitellmParams:
    """LiteLLM's ``litellm_params``: where the backend is and how to call it."""

    api_base: str = field(metadata={"check": _api_base})
    model: str | None = None  # the upstream model name, LiteLLM style (``openai/<name>``)
    api_key: str | None = field(default=None, repr=False)  # never in a repr (logs, tracebacks)
    weight: float = field(default=1.0, metadata={"check": positive})
    rpm_limit: int | None = field(default=None, metadata={"check": positive, "alias": "rpm"})
    tpm_limit: int | None = field(default=None, metadata={"check": positive, "alias": "tpm"})


@dataclass(frozen=True)
class ModelEntry:
    model_name: str
    litellm_params: LitellmParams
    model_info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendFilesConfig:
    """Extra ``<source>_config.yaml`` files with a ``model_list`` (the DataStudio layout)."""

    config_dir: str = "configs"
    enabled_sources: tuple[str, ...] = ()


WebhookFormat = Literal["generic", "slack", "wecom", "feishu"]
# What happens to a fleet that the router records (its /status events) ...
EventKind = Literal[
    "unhealthy",
    "recovered",
    "ejected",
    "probing",
    "config_reloaded",
    "config_rejected",
    "drained",
    "undrained",
    "limits_local",
    "limits_shared",
]
# ... and what a webhook can subscribe to: those, plus the periodic traffic report.
NotifyKind = Literal[EventKind, "report"]


@dataclass(frozen=True)
class WebhookConfig:
    """Where fleet events are posted; the URL may hold a token (``${env:...}``), never logged."""

    url: str = field(repr=False, metadata={"check": _http_url})
    format: WebhookFormat = "generic"
    events: tuple[NotifyKind, ...] = get_args(NotifyKind)
    # Seconds during which repeats of one (backend, kind) are folded into a summary.
    min_interval: float = field(default=60.0, metadata={"check": non_negative})
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    # Signs each delivery: the feishu ``sign`` field, or a generic HMAC header.
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NotifyConfig:
    webhooks: tuple[WebhookConfig, ...] = ()
    batch_window: float = field(default=2.0, metadata={"check": non_negative})  # seconds
    report_interval: float | None = field(default=None, metadata={"check": positive})  # seconds
    timeout: float = field(default=5.0, metadata={"check": positive})  # per delivery
    queue_size: int = field(default=1000, metadata={"check": positive})  # events awaiting send


@dataclass(frozen=True)
class RouterConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    health_check: HealthCheckConfig = field(default_factory=HealthCheckConfig)
    circuit_breaker: CircuitBreakerConfig = field(default_factory=CircuitBreakerConfig)
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    scrape: ScrapeConfig = field(default_factory=ScrapeConfig)
    model_list: tuple[ModelEntry, ...] = ()
    backends: BackendFilesConfig | None = None
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    upstream_tls: UpstreamTLSConfig = field(default_factory=UpstreamTLSConfig)


@dataclass(frozen=True)
class _BackendFile:
    model_list: tuple[ModelEntry, ...] = ()


@dataclass(frozen=True)
class Backend:
    """One engine instance the router can send a model's requests to."""

    id: str
    model: str
    api_base: str  # ends in /v1: requests for /v1/<rest> go to <api_base>/<rest>
    api_key: str | None = field(repr=False)
    weight: float
    rpm_limit: int | None
    tpm_limit: int | None
    upstream_model: str  # the name the engine serves; differs from ``model`` when aliased
    source: str  # the file that declared it

    @property
    def root_url(self) -> str:
        """The engine's base URL without ``/v1``: where ``/health`` and ``/metrics`` live."""
        return self.api_base.removesuffix("/v1")


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config with its backends resolved from every file it names."""

    config: RouterConfig
    backends: tuple[Backend, ...]
    files: tuple[Path, ...]  # every file read, for reload watching


def load_router_config(path: str | Path) -> LoadedConfig:
    """Read, substitute, validate and resolve a router config; ConfigError lists all problems."""
    main_path = Path(path)
    problems: list[str] = []
    config = _load(RouterConfig, main_path, problems)
    if config is None:
        raise ConfigError(redact_problems(problems), str(main_path))
    files = [main_path]
    entries = [(entry, str(main_path)) for entry in config.model_list]
    if config.backends is not None:
        config_dir = main_path.parent / config.backends.config_dir
        for source in config.backends.enabled_sources:
            source_path = config_dir / f"{source}_config.yaml"
            files.append(source_path)
            if not source_path.exists():
                continue  # an enabled source with no file yet (deploy has not written it) is empty
            source_problems: list[str] = []
            extra = _load(_BackendFile, source_path, source_problems)
            problems.extend(f"{source_path}: {p}" for p in source_problems)
            if extra is not None:
                entries.extend((entry, str(source_path)) for entry in extra.model_list)
    if problems:
        raise ConfigError(redact_problems(problems), str(main_path))
    return LoadedConfig(config, resolve_backends(entries), tuple(files))


def _load(cls: type[Any], path: Path, problems: list[str]) -> Any:
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    data = resolve_references(raw, path.parent, problems)
    built = build(cls, data, problems)
    return None if problems else built


def resolve_backends(entries: list[tuple[ModelEntry, str]]) -> tuple[Backend, ...]:
    """Turn ``model_list`` entries into backends with stable, unique ids."""
    backends: list[Backend] = []
    seen: dict[str, int] = {}
    for entry, source in entries:
        params = entry.litellm_params
        api_base = _normalize_api_base(params.api_base)
        base_id = f"{entry.model_name}@{urlsplit(api_base).netloc}"
        seen[base_id] = seen.get(base_id, 0) + 1
        backend_id = base_id if seen[base_id] == 1 else f"{base_id}#{seen[base_id]}"
        upstream = (
            params.model.split("/", 1)[1] if params.model and "/" in params.model else params.model
        )
        backends.append(
            Backend(
                id=backend_id,
                model=entry.model_name,
                api_base=api_base,
                api_key=params.api_key or None,
                weight=params.weight,
                rpm_limit=params.rpm_limit,
                tpm_limit=params.tpm_limit,
                upstream_model=upstream or entry.model_name,
                source=source,
            )
        )
    return tuple(backends)


def _normalize_api_base(url: str) -> str:
    parts = urlsplit(url)
    path = posixpath.normpath(parts.path or "/").rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def mask_secret(secret: str | None) -> str:
    """How a secret is shown to people: whether it is set, never its value."""
    return "(none)" if not secret else "****"
