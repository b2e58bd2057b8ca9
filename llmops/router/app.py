"""The router's aiohttp application: routes, access control and the server's lifetime."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from llmops.config import LoadedConfig, load_router_config
from llmops.config.router import EventKind
from llmops.config.secrets_check import secrets_warnings
from llmops.errors import RouterError
from llmops.router.auth import ALLOWED_MODELS, EVERY_MODEL, REFUSED_KEY
from llmops.router.cluster import (
    WorkerRole,
    ask_peers,
    follow_leader,
    internal_app,
    merge_metrics,
    merge_status,
)
from llmops.router.fastlane import FastLane
from llmops.router.guard import admin_refusal, escapes_api_root, protocol_options
from llmops.router.health import admit_new_backends, run_health_checks
from llmops.router.inbound import HeadLimits, Inbound, Sent, forwarded_fields
from llmops.router.loop import settle_collector
from llmops.router.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from llmops.router.notify import run_notifier
from llmops.router.proxy import json_error, proxy_request, read_body
from llmops.router.reload import ConfigWatcher
from llmops.router.scrape import EngineScraper
from llmops.router.server import GuardedSite
from llmops.router.state import RouterState
from llmops.router.status import build_status
from llmops.router.tls import server_ssl_context, tls_warnings, upstream_ssl_context

log = logging.getLogger("llmops.router")

ROUTER = web.AppKey("router", RouterState)
DASHBOARD_HTML = Path(__file__).with_name("static") / "dashboard.html"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


WATCHER = web.AppKey("watcher", ConfigWatcher)
ROLE = web.AppKey("role", WorkerRole)


def build_app(
    loaded: LoadedConfig, config_path: Path, role: WorkerRole | None = None
) -> web.Application:
    """The application for ``loaded``; the HTTP client and background tasks start with it."""
    app = web.Application(client_max_size=loaded.config.server.max_body_bytes)
    if role is not None:
        app[ROLE] = role
    app.cleanup_ctx.append(_router_lifetime(loaded, config_path, role))
    app.router.add_get("/health", _health)
    app.router.add_get("/ready", _ready)
    app.router.add_get("/status", _admin(_status))
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/dashboard", _admin(_dashboard, query_token=True))
    app.router.add_post("/admin/backends/{backend_id:.+}/drain", _admin(_drain))
    app.router.add_post("/admin/backends/{backend_id:.+}/undrain", _admin(_undrain))
    app.router.add_post("/admin/reload", _admin(_reload))
    app.router.add_get("/v1/models", _inference(_list_models))
    app.router.add_post("/v1/{tail:.+}", _inference(_proxy))
    app.router.add_route("*", "/v1/{tail:.*}", _method_not_allowed)
    return app


def _router_lifetime(
    loaded: LoadedConfig, config_path: Path, role: WorkerRole | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        upstream_ssl = upstream_ssl_context(loaded.config.upstream_tls, config_path.parent)
        connector = aiohttp.TCPConnector(
            limit=0, keepalive_timeout=60, ttl_dns_cache=300, ssl=upstream_ssl
        )
        session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )
        router = RouterState(loaded, session, upstream_ssl=upstream_ssl)
        leader = role is None or role.leader
        if leader and loaded.config.health_check.enabled:
            await admit_new_backends(router, router.snapshot.states)
        watcher = ConfigWatcher(router, config_path)
        app[ROUTER] = router
        app[WATCHER] = watcher
        tasks = [
            asyncio.create_task(router.watchdog.run(), name="request watchdog"),
            asyncio.create_task(watcher.run(), name="config watcher"),
            asyncio.create_task(run_notifier(router), name="webhooks"),
        ]
        if leader:  # followers copy the leader's view instead of probing the backends again
            tasks.append(asyncio.create_task(run_health_checks(router), name="health checks"))
            tasks.append(asyncio.create_task(_engine_scraper(router).run(), name="engine metrics"))
        internal: web.AppRunner | None = None
        if role is not None:
            router.limits.local_share = 1 / role.count
            if not role.leader:
                tasks.append(asyncio.create_task(follow_leader(router, role), name="follow leader"))
            internal = await _serve_internal(router, watcher, role)
        yield
        if internal is not None:
            await internal.cleanup()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await router.limits.close()
        router.close_pools()
        await session.close()

    return lifetime


def _inference(handler: _Handler) -> _Handler:
    async def checked(request: web.Request) -> web.StreamResponse:
        tokens = request.app[ROUTER].inference_tokens
        allowed = tokens.allowed_models(request.headers.get("Authorization"))
        if allowed is None:
            return json_error(401, *REFUSED_KEY)
        if allowed is not EVERY_MODEL:
            request[ALLOWED_MODELS] = allowed
        return await handler(request)

    return checked


def _admin(handler: _Handler, query_token: bool = False) -> _Handler:
    """Admin access; ``query_token`` also takes ``?token=`` (a browser opening a page)."""

    async def checked(request: web.Request) -> web.StreamResponse:
        tokens = request.app[ROUTER].admin_tokens
        given = request.headers.get("Authorization")
        if given is None and query_token and "token" in request.query:
            given = f"Bearer {request.query['token']}"
        refusal = admin_refusal(request.remote, not tokens.open, tokens.accepts(given))
        if refusal == "unauthorized":
            return json_error(401, "this endpoint needs an admin token", "invalid_admin_token")
        if refusal == "forbidden":
            message = "admin endpoints answer only loopback clients when no admin_tokens are set"
            return json_error(403, message, "admin_forbidden")
        return await handler(request)

    return checked


async def _proxy(request: web.Request) -> web.StreamResponse:
    """An inference request the fast lane did not take, through aiohttp's side."""
    if escapes_api_root(request.raw_path):
        return json_error(400, "the path must not contain . or .. segments", "invalid_path")
    router = request.app[ROUTER]
    body = await read_body(request, router.config.server.body_timeout)
    if isinstance(body, web.Response):
        return body
    transport = request.transport
    if transport is None:  # the client has gone
        return web.Response(status=499)
    inbound = Inbound(
        request.method,
        request.rel_url.raw_path_qs,
        request.path,
        request.headers,
        forwarded_fields(request.headers),
        body,
        request.keep_alive,
        request.version >= (1, 1),
        transport,
        request.get(ALLOWED_MODELS, EVERY_MODEL),
    )
    return _AlreadySent(await proxy_request(inbound, router))


class _AlreadySent(web.StreamResponse):
    """An answer the data path wrote to the socket itself: aiohttp sends nothing more and
    learns whether the connection goes on."""

    def __init__(self, sent: Sent) -> None:
        super().__init__(status=sent.status)
        self._goes_on = not sent.close

    @property
    def keep_alive(self) -> bool:
        return self._goes_on

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


async def _method_not_allowed(request: web.Request) -> web.StreamResponse:
    return json_error(
        405, f"method {request.method} is not allowed on {request.path}", "method_not_allowed"
    )


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _ready(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    healthy = sum(1 for s in router.snapshot.states if s.routable)
    status = 200 if healthy and not router.shutting_down else 503
    return web.json_response({"ready": bool(healthy), "healthy_backends": healthy}, status=status)


async def _list_models(request: web.Request) -> web.Response:
    allowed = request.get(ALLOWED_MODELS, EVERY_MODEL)
    models = [m for m in request.app[ROUTER].snapshot.models if m in allowed]
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "llmops"} for m in models]
    return _json({"object": "list", "data": data})


def _engine_scraper(router: RouterState) -> EngineScraper:
    scrape = router.config.scrape
    return EngineScraper(router.session, lambda: router.snapshot, scrape.interval, scrape.timeout)


async def _serve_internal(
    router: RouterState, watcher: ConfigWatcher, role: WorkerRole
) -> web.AppRunner:
    """This worker's private unix socket, where its peers ask it for its own numbers."""

    def local_metrics() -> str:
        return router.metrics.render().decode()

    app = internal_app(router, lambda: build_status(router), local_metrics, watcher.reload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, str(role.socket_path(role.index))).start()
    return runner


async def _metrics(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    role = request.app.get(ROLE)
    if role is None:
        body = router.metrics.render()
    else:
        own = (role.index, router.metrics.render().decode())
        texts = sorted([own, *await ask_peers(role, "GET", "/internal/metrics")])
        body = merge_metrics([text for _, text in texts]).encode()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def _status(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    role = request.app.get(ROLE)
    if role is None:
        return _json(build_status(router))
    views = sorted(
        [(role.index, build_status(router)), *await ask_peers(role, "GET", "/internal/status")],
        key=lambda v: v[0],
    )
    return _json(merge_status([view for _, view in views]))


async def _dashboard(request: web.Request) -> web.StreamResponse:
    if not DASHBOARD_HTML.exists():
        return json_error(404, "the dashboard page is not installed", "not_found")
    return web.FileResponse(DASHBOARD_HTML, headers={"Content-Type": "text/html; charset=utf-8"})


async def _drain(request: web.Request) -> web.Response:
    return await _set_draining(request, True)


async def _undrain(request: web.Request) -> web.Response:
    return await _set_draining(request, False)


async def _reload(request: web.Request) -> web.Response:
    applied = await request.app[WATCHER].reload()
    role = request.app.get(ROLE)
    if role is not None and applied:
        await ask_peers(role, "POST", "/internal/reload")
    router = request.app[ROUTER]
    status = 200 if applied else 422
    last = router.events.recent(1)
    return _json(
        {
            "reloaded": applied,
            "generation": router.snapshot.generation,
            "message": last[0].message if last else "",
        },
        status,
    )


async def _set_draining(request: web.Request, draining: bool) -> web.Response:
    backend_id = request.match_info["backend_id"]
    router = request.app[ROUTER]
    state = next((s for s in router.snapshot.states if s.id == backend_id), None)
    if state is None:
        return json_error(404, f"no backend with id {backend_id!r}", "backend_not_found")
    if state.drained != draining:
        state.drained = draining
        kind: EventKind = "drained" if draining else "undrained"
        router.events.record(
            kind, "info", f"backend {backend_id} {kind} by an operator", backend_id
        )
    role = request.app.get(ROLE)
    if role is not None:
        await ask_peers(role, "POST", "/internal/drain", {"id": backend_id, "drained": draining})
    return _json({"id": backend_id, "state": state.state})


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


@asynccontextmanager
async def running_router(
    config_path: str | Path,
    host: str | None = None,
    port: int | None = None,
    role: WorkerRole | None = None,
) -> AsyncIterator[web.AppRunner]:
    """Start the router for ``config_path``; stopping it lets in-flight requests finish."""
    loaded = load_router_config(config_path)
    for warning in (*secrets_warnings(loaded.files), *tls_warnings(loaded.config)):
        log.warning("%s", warning)
    app = build_app(loaded, Path(config_path), role)
    server = loaded.config.server
    ssl_context = server_ssl_context(server.tls, Path(config_path).parent)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=server.shutdown_timeout,
        **protocol_options(server),
    )
    await runner.setup()
    bind_host = host if host is not None else server.host
    bind_port = port if port is not None else server.port
    site = GuardedSite(
        runner,
        bind_host,
        bind_port,
        max_connections=server.max_connections,
        header_timeout_s=server.header_timeout,
        body_timeout_s=server.body_timeout,
        lane=FastLane(
            app[ROUTER],
            HeadLimits(server.max_header_bytes, server.max_headers, server.max_body_bytes),
        ),
        ssl_context=ssl_context,
        backlog=4096,
        reuse_port=role is not None,
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise RouterError(
            f"cannot listen on {bind_host}:{bind_port}: {exc.strerror or exc}"
        ) from None
    try:
        yield runner
    finally:
        app[ROUTER].shutting_down = True
        await runner.cleanup()


def router_url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    scheme = "https" if runner.app[ROUTER].config.server.tls is not None else "http"
    return f"{scheme}://{host}:{port}"


async def serve(
    config_path: str | Path, host: str | None, port: int | None, role: WorkerRole | None = None
) -> None:
    """Run the router until SIGINT or SIGTERM (graceful: in-flight requests finish)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running_router(config_path, host, port, role) as runner:
        router = runner.app[ROUTER]
        loop.add_signal_handler(signal.SIGHUP, runner.app[WATCHER].request_reload)
        settle_collector()
        print(
            f"llmops router: serving {len(router.snapshot.models)} model(s), "
            f"{len(router.snapshot.states)} backend(s) on {router_url(runner)}",
            flush=True,
        )
        await stop.wait()
        in_flight = sum(s.in_flight for s in router.snapshot.states)
        print(
            f"llmops router: stopping; letting {in_flight} in-flight request(s) finish", flush=True
        )
