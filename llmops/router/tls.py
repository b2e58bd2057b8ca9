"""TLS for both sides of the router: the HTTPS it serves and how it verifies HTTPS backends.

Paths in the config are relative to the config file, like ``${file:...}`` references.
Both contexts are built once at start (a reload does not change them).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from llmops.config.router import RouterConfig, ServerTLSConfig, UpstreamTLSConfig
from llmops.errors import ConfigError

VERIFY_OFF_WARNING = (
    "TLS VERIFICATION OF BACKENDS IS OFF (upstream_tls.verify: false): any certificate is "
    "accepted, so anyone on the path to a backend can read and change its traffic and API key"
)


def _config_path(base_dir: Path, name: str) -> Path:
    return (base_dir / Path(name).expanduser()).resolve()


def server_ssl_context(tls: ServerTLSConfig | None, base_dir: Path) -> ssl.SSLContext | None:
    """The context the router serves HTTPS with (TLS 1.2+), or None for plain HTTP."""
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cert, key = _config_path(base_dir, tls.cert), _config_path(base_dir, tls.key)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ConfigError(
            [f"server.tls: cannot load certificate {cert} and key {key}: {reason}"]
        ) from None
    return context


def upstream_ssl_context(tls: UpstreamTLSConfig, base_dir: Path) -> ssl.SSLContext:
    """The context every request to an HTTPS backend uses (proxy, health checks, scrapes)."""
    if not tls.verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if tls.ca_bundle is None:
        return ssl.create_default_context()
    bundle = _config_path(base_dir, tls.ca_bundle)
    try:
        return ssl.create_default_context(cafile=str(bundle))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ConfigError([f"upstream_tls.ca_bundle: cannot load {bundle}: {reason}"]) from None


def tls_warnings(config: RouterConfig) -> list[str]:
    """What an operator must hear about the TLS settings at start."""
    return [] if config.upstream_tls.verify else [VERIFY_OFF_WARNING]
