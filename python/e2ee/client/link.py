"""One signaling WebSocket of the client: the server's hello, requests paired with their
replies, and events handed to a callback, until the socket ends.

A :class:`~e2ee.client.session.Session` opens one :class:`Link` at connect and a new one
for each reconnect.  The link records how it ended (the close code, and the reason of the
server's ``disconnected`` message if one came) so that the session can tell a dropped
connection from a deliberate goodbye (:func:`e2ee.client.reconnect.is_terminal`).

With ``heartbeat`` the client pings the server and drops the link when no pong comes
within half of it (aiohttp's WebSocket heartbeat): a silent path, such as 100 % packet
loss, is noticed in seconds rather than at TCP's retransmission timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from e2ee.client.errors import Redirected, SessionError

__all__ = ["Link"]

log = logging.getLogger(__name__)

#: How long a closing handshake may take before the socket is dropped.
CLOSE_TIMEOUT = 2.0


class Link:
    """One WebSocket to ``url`` (the session's ``/ws`` endpoint)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        on_event: Callable[[dict[str, Any]], None],
        timeout: float,
        heartbeat: float | None,
    ) -> None:
        self._url = url
        self._token = token
        self._on_event = on_event
        self._timeout = timeout
        self._heartbeat = heartbeat
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ended = asyncio.Event()
        #: The ``reason`` of the server's ``disconnected`` message, if one came.
        self.reason: str | None = None
        #: The WebSocket close code once ended (1006 for a dropped connection).
        self.close_code: int | None = None

    @property
    def open(self) -> bool:
        return self._ws is not None and not self._ws.closed and not self.ended.is_set()

    async def connect(self) -> dict[str, Any]:
        """Opens the WebSocket and returns the server's first message, a ``session``
        hello; a refusal raises :class:`SessionError` with the server's code, a
        ``redirect`` (cluster mode) :class:`Redirected`.  Nothing
        is read after it until :meth:`start`; on any failure the link is closed."""
        self._http = aiohttp.ClientSession()
        try:
            self._ws = await self._http.ws_connect(
                self._url,
                params={"token": self._token},
                heartbeat=self._heartbeat,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
            )
            first = await self._ws.receive_json(timeout=self._timeout)
            if not isinstance(first, dict):
                raise SessionError("protocol_error", "the server's hello is not an object")
            if first.get("type") == "redirect":
                raise Redirected(str(first.get("url", "")), str(first.get("node_id", "")))
            if first.get("type") == "error":
                raise SessionError(str(first.get("code", "error")), str(first.get("message", "")))
            if first.get("type") != "session" or not isinstance(first.get("session"), dict):
                raise SessionError("protocol_error", "the server's hello has no session")
        except BaseException:
            await self.close()
            raise
        return first

    def start(self) -> None:
        """Starts reading: replies and events from now on (the messages that came after
        the hello wait in the socket until then, so none is missed)."""
        if self._reader is None and self._ws is not None:
            self._reader = asyncio.create_task(self._read())

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Sends one message and waits for its reply; errors raise :class:`SessionError`
        (``disconnected`` if the link ends first)."""
        if not self.open:
            raise SessionError("not_connected", "the session is not connected")
        assert self._ws is not None
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            try:
                await self._ws.send_str(json.dumps({**message, "id": rid}))
            except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
                raise SessionError("disconnected", f"the connection closed: {exc}") from None
            reply = await asyncio.wait_for(fut, self._timeout)
        finally:
            self._pending.pop(rid, None)
        if reply.get("type") == "error":
            raise SessionError(str(reply.get("code", "error")), str(reply.get("message", "")))
        return reply

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    log.warning("server sent invalid JSON")
                    continue
                if isinstance(data, dict):
                    self._dispatch(data)
        except Exception as exc:  # a transport error ends the link like a close
            log.info("signaling connection failed: %r", exc)
        finally:
            self._end()

    def _dispatch(self, data: dict[str, Any]) -> None:
        rid = data.get("id")
        fut = self._pending.get(rid) if isinstance(rid, int) else None
        if fut is not None:
            if not fut.done():
                fut.set_result(data)
            return
        if data.get("type") == "disconnected":
            self.reason = str(data.get("reason", ""))
        try:
            self._on_event(data)
        except Exception:
            log.exception("handling a %r event failed", data.get("type"))

    def _end(self) -> None:
        if self.ended.is_set():
            return
        if self._ws is not None:
            self.close_code = self._ws.close_code
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(SessionError("disconnected", "the connection closed"))
        self.ended.set()

    async def close(self) -> None:
        """Closes the WebSocket (a closing handshake of at most :data:`CLOSE_TIMEOUT`)
        and its HTTP session; idempotent."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._end()
