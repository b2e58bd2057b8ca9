"""HTTP edge of the dashboard: GET ``/status`` and the admin drain/undrain calls.

Every failure becomes a DashboardError whose message fits the one-line stale indicator.
"""

from __future__ import annotations

import os
import time
from types import TracebackType
from urllib.parse import quote, urlsplit

import aiohttp
import orjson

from llmops.errors import DashboardError
from llmops.tui.snapshot import StatusSnapshot, parse_status

REQUEST_TIMEOUT_S = 5.0


def normalize_url(url: str) -> str:
    """``host:port`` or ``http://host:port/`` → ``http://host:port``; raise on anything else."""
    candidate = url.strip()
    if "://" not in candidate:
        candidate = f"http://{candidate}"
    parts = urlsplit(candidate)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DashboardError(f"--url {url!r} is not an http(s) URL of the router")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise DashboardError(f"--url {url!r}: {exc}") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class RouterClient:
    """One aiohttp session to one router; use as ``async with``."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = normalize_url(base_url)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RouterClient:
        self.open()
        return self

    def open(self) -> None:
        """Create the session; must run inside the event loop that will use it."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S), headers=self._headers
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch_status(self) -> StatusSnapshot:
        """One GET /status, parsed; DashboardError with a short reason on any failure."""
        body = await self._request("GET", "/status")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise DashboardError("/status answered with something that is not JSON") from None
        return parse_status(data, received_at=time.time())

    async def set_draining(self, backend_id: str, drain: bool) -> None:
        """POST /admin/backends/{id}/drain (or /undrain)."""
        action = "drain" if drain else "undrain"
        await self._request("POST", f"/admin/backends/{quote(backend_id, safe='')}/{action}")

    async def _request(self, method: str, path: str) -> bytes:
        if self._session is None:
            raise RuntimeError("RouterClient used outside `async with`")
        try:
            async with self._session.request(method, self.base_url + path) as response:
                body = await response.read()
                if response.status >= 400:
                    raise DashboardError(_http_problem(response.status, path, body))
                return body
        except aiohttp.ClientConnectorError as exc:
            errno = exc.os_error.errno if exc.os_error else None
            reason = os.strerror(errno).lower() if errno else str(exc)
            raise DashboardError(f"cannot connect: {reason}") from None
        except TimeoutError:
            raise DashboardError(f"{path}: no answer within {REQUEST_TIMEOUT_S:.0f}s") from None
        except aiohttp.ClientError as exc:
            raise DashboardError(f"{path}: {type(exc).__name__}: {exc}") from None


def _http_problem(status: int, path: str, body: bytes) -> str:
    if status in (401, 403):
        return f"{path}: HTTP {status}: an admin token is needed (pass --token)"
    return f"{path}: HTTP {status}: {_error_message(body)}"


def _error_message(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-shaped body, else the start of the body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        message = data["error"].get("message")
        if isinstance(message, str):
            return message
    return body[:120].decode("utf-8", "replace").strip() or "(empty body)"
