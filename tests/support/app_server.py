"""The session server's real application in the test's own process, for tests that set
its budgets (:class:`e2ee.server.limits.ServerLimits`): served by the same guarded runner
as ``e2ee serve``, on a free loopback port, with the fake media router by default.

``Api(app_server(...), http)`` works as with a :class:`support.server.ServerProcess`:
both are a :class:`support.server.Served`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from e2ee.server.app import HEADER_TIMEOUT, MAX_CONNECTIONS, create_app, reject_malformed
from e2ee.server.http_compat import GuardedAppRunner
from e2ee.server.limits import ServerLimits
from support.server import Api, FakeRouter, Served


class AppServer(Served):
    def __init__(self, data_dir: Path, url: str, app: web.Application) -> None:
        self.data_dir = data_dir
        self.url = url
        self.app = app


@contextlib.asynccontextmanager
async def app_server(
    data_dir: Path, *, limits: ServerLimits | None = None, fake_router: bool = True
) -> AsyncIterator[AppServer]:
    app = await create_app(
        data_dir, router_factory=FakeRouter.factory if fake_router else None, limits=limits
    )
    runner = GuardedAppRunner(
        app,
        max_connections=MAX_CONNECTIONS,
        reject=reject_malformed,
        access_log=None,
        shutdown_timeout=2.0,
        keepalive_timeout=HEADER_TIMEOUT,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        yield AppServer(data_dir, f"http://127.0.0.1:{port}", app)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def app_api(
    data_dir: Path, http: aiohttp.ClientSession, *, limits: ServerLimits | None = None
) -> AsyncIterator[Api]:
    """:func:`app_server` with an :class:`support.server.Api` client (its signaling
    clients closed at the end)."""
    async with app_server(data_dir, limits=limits) as server:
        api = Api(server, http)
        try:
            yield api
        finally:
            await api.close()
