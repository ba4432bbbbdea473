"""One client on the signaling WebSocket, as the rest of the server sees it: its
identity and role, and a bounded send queue drained by a writer task of its own, so a
slow client never blocks a broadcast to the others."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from e2ee.server.errors import CLOSE_TOO_SLOW
from e2ee.server.http_compat import abort_websocket
from e2ee.server.tokens import Role

__all__ = ["SEND_QUEUE_LIMIT", "SLOW_DRAIN_SECONDS", "Connection", "new_id"]

log = logging.getLogger(__name__)

#: Messages waiting to be written to one client; a client that falls this far behind is
#: sent ``{"type": "disconnected", "reason": "too_slow"}`` (the queue keeps room for it)
#: and closed with 4008 rather than slowing down everyone else.
SEND_QUEUE_LIMIT = 512
#: A client closed for slowness gets this long to read what is queued (the
#: ``disconnected`` message and the close frame last); then its socket is dropped.
SLOW_DRAIN_SECONDS = 10.0


def new_id() -> str:
    """A random identifier of 128 bits, URL-safe."""
    return secrets.token_urlsafe(16)


_CLOSE = object()


class Connection:
    """One client on the WebSocket.  Outgoing messages go through a bounded queue and a
    writer task, so a slow client never blocks a broadcast to the others."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        role: Role,
        data: str,
        jti: str = "",
        expires_at: float | None = None,
    ) -> None:
        self.id = new_id()
        self.role: Role = role
        self.data = data
        #: The ``jti`` of the token the client joined with: one participant, and what a
        #: force-disconnect revokes.
        self.jti = jti
        #: When that token expires (Unix time): how long its revocation is kept.
        self.expires_at = expires_at
        #: Called once when the client is dropped for being too slow.
        self.on_too_slow: Callable[[], None] | None = None
        self.created_at = time.time()
        self.ws = ws
        self.alive = True
        self.streams: set[str] = set()
        self.subscriptions: set[str] = set()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "data": self.data, "created_at": self.created_at}

    def send(self, message: Mapping[str, Any]) -> None:
        """Queues ``message`` (a JSON object) for this client; never blocks."""
        if not self.alive:
            return
        if self._queue.qsize() >= SEND_QUEUE_LIMIT:
            self._too_slow()
            return
        self._queue.put_nowait(json.dumps(message, separators=(",", ":")))

    def _too_slow(self) -> None:
        log.warning("connection %s is too slow; disconnecting it", self.id)
        # Past the limit on purpose: the room kept for the last message and the close.
        self._queue.put_nowait('{"type":"disconnected","reason":"too_slow"}')
        self.close(CLOSE_TOO_SLOW, "too slow: too many messages queued")
        asyncio.get_running_loop().call_later(SLOW_DRAIN_SECONDS, self._abort)
        callback, self.on_too_slow = self.on_too_slow, None
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("too-slow callback of connection %s failed", self.id)

    def _abort(self) -> None:
        if not self._writer.done():
            self._writer.cancel()
        abort_websocket(self.ws)

    def close(self, code: int, reason: str) -> None:
        """Closes the WebSocket after the messages already queued."""
        if not self.alive:
            return
        self.alive = False
        self._queue.put_nowait((_CLOSE, code, reason))

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, tuple) and item[0] is _CLOSE:
                    _, code, reason = item
                    with contextlib.suppress(Exception):
                        await self.ws.close(code=code, message=reason.encode()[:120])
                    return
                assert isinstance(item, str)
                await self.ws.send_str(item)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("writer of connection %s failed", self.id)
        finally:
            self.alive = False

    async def wait_closed(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._writer), timeout)
        if not self._writer.done():
            self._writer.cancel()
