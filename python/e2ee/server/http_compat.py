"""Every private aiohttp name the server relies on (checked against aiohttp 3.14), in one
place.

aiohttp answers a request its HTTP parser refuses with a plain-text 400 that echoes the
request bytes, and logs it with a traceback; it has no public hook for that nor for
refusing connections over a bound.  Both live in the protocol object
(``aiohttp.web_protocol.RequestHandler``) that ``web.Server`` makes per connection, and
``web.AppRunner`` builds that server in its private ``_make_server``.  This module
swaps in a protocol with two overrides, keeping the rest of aiohttp as it is.

aiohttp names itself and its version in a ``Server`` header on every response
(``StreamResponse._prepare_headers``).  The application drops it in its
``on_response_prepare`` signal, which a request the parser refused never reaches: the
responses to those are made :class:`_NoServerHeader` here.

Moving to another aiohttp minor: re-check ``RequestHandler.handle_error`` and
``connection_made``, ``web.Server.__call__`` (``_loop``, ``_kwargs``),
``AppRunner._make_server``, ``StreamResponse._prepare_headers`` and
``WebSocketResponse._req``; tests/e2e/test_hardening_http.py and tests/e2e/test_abuse.py
fail first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["GuardedAppRunner", "Reject", "abort_websocket"]

log = logging.getLogger(__name__)

#: ``reject(remote, status, reason)``: the response to a request the parser refused.
Reject = Callable[[str | None, int, str], web.StreamResponse]


class _NoServerHeader(web.Response):
    """A response without aiohttp's ``Server`` header."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("Server", None)


def _without_server_header(resp: web.StreamResponse) -> web.StreamResponse:
    if type(resp) is web.Response:
        resp.__class__ = _NoServerHeader  # same layout; only header preparation differs
    return resp


class _GuardedHandler(RequestHandler):
    _max_connections: int
    _reject: Reject

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        if manager is not None and len(manager.connections) >= self._max_connections:
            log.warning("too many open connections (%d): one refused", self._max_connections)
            transport.close()
            self._manager = None  # connection_lost then does nothing
            return
        super().connection_made(transport)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return _without_server_header(super().handle_error(request, status, exc, message))
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        return _without_server_header(
            self._reject(request.remote, status, message or type(exc).__name__)
        )


class _GuardedServer(web.Server):
    _max_connections: int
    _reject: Reject

    def __call__(self) -> RequestHandler:
        handler = _GuardedHandler(self, loop=self._loop, **self._kwargs)
        handler._max_connections = self._max_connections
        handler._reject = self._reject
        return handler


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer parser-refused requests with
    ``reject`` and which closes new connections beyond ``max_connections`` at once."""

    def __init__(
        self, app: web.Application, *, max_connections: int, reject: Reject, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._max_connections = max_connections
        self._reject = reject

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer  # same layout; only the protocol factory differs
        guarded: Any = server
        guarded._max_connections = self._max_connections
        guarded._reject = self._reject
        return server


def abort_websocket(ws: web.WebSocketResponse) -> None:
    """Drop a WebSocket's TCP connection at once (a client too slow to read even its
    close): the upgraded request, ``WebSocketResponse._req``, holds the transport."""
    request = getattr(ws, "_req", None)
    transport = getattr(request, "transport", None)
    if transport is not None:
        transport.abort()
