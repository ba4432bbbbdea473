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
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from e2ee.server.errors import CLOSE_TOO_SLOW
from e2ee.server.tokens import Role

__all__ = ["SEND_QUEUE_LIMIT", "Connection", "new_id"]

log = logging.getLogger(__name__)

#: Messages waiting to be written to one client; a client that falls this far behind is
#: disconnected (close code 4008) rather than slowing down everyone else.
SEND_QUEUE_LIMIT = 512


def new_id() -> str:
    """A random identifier of 128 bits, URL-safe."""
    return secrets.token_urlsafe(16)


_CLOSE = object()


class Connection:
    """One client on the WebSocket.  Outgoing messages go through a bounded queue and a
    writer task, so a slow client never blocks a broadcast to the others."""

    def __init__(self, ws: web.WebSocketResponse, role: Role, data: str) -> None:
        self.id = new_id()
        self.role: Role = role
        self.data = data
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
            log.warning("connection %s is too slow; disconnecting it", self.id)
            self.close(CLOSE_TOO_SLOW, "too slow: too many messages queued")
            return
        self._queue.put_nowait(json.dumps(message, separators=(",", ":")))

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
