"""The router's admin API as rolling restart uses it: drain and undrain one backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from llmops.deploy.plan import Instance
from llmops.errors import DeployError

ADMIN_TIMEOUT_S = 10.0
DRAIN_WAIT_S = 60.0


class RouterAdmin:
    """``POST /admin/backends/{id}/drain|undrain``; ids are ``<model_name>@<host>:<port>``."""

    def __init__(self, url: str, token: str | None) -> None:
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RouterAdmin:
        timeout = aiohttp.ClientTimeout(total=ADMIN_TIMEOUT_S)
        self._session = aiohttp.ClientSession(timeout=timeout, headers=self._headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def __call__(self, action: str, instance: Instance) -> None:
        """Drain or undrain the instance's backend; after a drain, wait for its requests to end."""
        assert self._session is not None, "use RouterAdmin as an async context manager"
        backend_id = instance.backend_id
        url = f"{self._url}/admin/backends/{quote(backend_id, safe='')}/{action}"
        try:
            async with self._session.post(url) as response:
                if response.status >= 300:
                    body = (await response.text())[:300]
                    raise DeployError(
                        f"router {action} of {backend_id} answered {response.status}: {body}"
                    )
            if action == "drain":
                # Long streams may outlast the wait: stopping then cuts them, as the engine would.
                await self._wait_for(backend_id, lambda b: not b.get("in_flight"), required=False)
            else:  # the next instance goes down only once this one takes traffic again
                await self._wait_for(
                    backend_id, lambda b: b.get("state") == "healthy", required=True
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise DeployError(
                f"router {action} of {backend_id} failed: {exc or type(exc).__name__}"
            ) from None

    async def _wait_for(
        self, backend_id: str, done: Callable[[dict[str, Any]], bool], *, required: bool
    ) -> None:
        """Poll /status until ``done(backend)``; after DRAIN_WAIT_S, fail if ``required``."""
        assert self._session is not None
        deadline = asyncio.get_running_loop().time() + DRAIN_WAIT_S
        while asyncio.get_running_loop().time() < deadline:
            async with self._session.get(f"{self._url}/status") as response:
                if response.status != 200:
                    return  # no /status to read: the drain itself has to be enough
                status = await response.json()
            backends = [b for b in status.get("backends", []) if b.get("id") == backend_id]
            if not backends or done(backends[0]):
                return
            await asyncio.sleep(0.2)
        if required:
            raise DeployError(
                f"router: backend {backend_id} not healthy {DRAIN_WAIT_S:g} s after undrain"
            )
