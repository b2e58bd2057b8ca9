"""A recorded router for the dashboard tests: a real aiohttp server on 127.0.0.1 port 0
serving a /status JSON fixture, the admin drain/undrain endpoints and the dashboard page."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures"
DASHBOARD_HTML = Path(__file__).parents[2] / "llmops" / "router" / "static" / "dashboard.html"


def recorded_status() -> dict[str, object]:
    data: dict[str, object] = json.loads((FIXTURES / "status_fleet.json").read_text())
    return data


class RecordedRouter:
    """Answers /status with ``data`` (mutable by the test) and records what it was asked."""

    def __init__(self, data: dict[str, object], token: str | None = None) -> None:
        self.data = data
        self.token = token
        self.status_delay_s = 0.0
        self.status_code = 200
        self.status_requests = 0
        self.hang_up_after: int | None = None  # close the connection on later /status requests
        self.concurrent = 0
        self.max_concurrent = 0
        self.admin_calls: list[tuple[str, str, str | None]] = []  # (backend id, action, auth)
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/status", self._status)
        app.router.add_post("/admin/backends/{id}/{action}", self._admin)
        app.router.add_get("/dashboard", self._dashboard)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        # The same port after a restart, so the dashboard can recover without new settings.
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorized(self, request: web.Request) -> bool:
        return self.token is None or request.headers.get("Authorization") == f"Bearer {self.token}"

    async def _status(self, request: web.Request) -> web.Response:
        self.status_requests += 1
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if self.hang_up_after is not None and self.status_requests > self.hang_up_after:
                assert request.transport is not None
                request.transport.close()  # as a router that died mid-poll would
                return web.Response()
            if self.status_delay_s:
                await asyncio.sleep(self.status_delay_s)
            if not self._authorized(request):
                return _error(401, "admin token required")
            if self.status_code != 200:
                return _error(self.status_code, "recorded failure")
            return web.json_response(self.data)
        finally:
            self.concurrent -= 1

    async def _admin(self, request: web.Request) -> web.Response:
        backend_id, action = request.match_info["id"], request.match_info["action"]
        self.admin_calls.append((backend_id, action, request.headers.get("Authorization")))
        if not self._authorized(request):
            return _error(401, "admin token required")
        for backend in self.data["backends"]:  # type: ignore[attr-defined]
            if backend["id"] == backend_id:
                backend["state"] = "draining" if action == "drain" else "healthy"
                return web.json_response({"id": backend_id, "state": backend["state"]})
        return _error(404, f"no backend {backend_id}")

    async def _dashboard(self, request: web.Request) -> web.Response:
        return web.Response(body=DASHBOARD_HTML.read_bytes(), content_type="text/html")


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "llmops_error", "code": status}}
    return web.json_response(body, status=status)
