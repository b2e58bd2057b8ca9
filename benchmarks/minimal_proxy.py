"""The Python ceiling the router is measured against: the naive aiohttp proxy.

One shared ClientSession, the body forwarded as is, the answer relayed chunk by chunk.
About 60 lines, no routing, limits, health or metrics: what "just proxy it" costs.
Usage: python benchmarks/minimal_proxy.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def build_app(upstream: str) -> web.Application:
    async def open_session(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )
        yield
        await app["session"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        session: aiohttp.ClientSession = request.app["session"]
        async with session.request(
            request.method, upstream + request.path_qs, data=body, headers=headers
        ) as upstream_response:
            response = web.StreamResponse(
                status=upstream_response.status,
                headers={
                    k: v
                    for k, v in upstream_response.headers.items()
                    if k.lower() not in HOP_BY_HOP
                },
            )
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(open_session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


if __name__ == "__main__":
    port, upstream = int(sys.argv[1]), sys.argv[2]
    uvloop.install()
    web.run_app(build_app(upstream), host="127.0.0.1", port=port, access_log=None, print=None)
