"""Live state of the session server: who is connected to which session, what they publish
and who subscribes, and the media router of each session.

Everything here lives in memory, in the event loop of one server process.  Durable state
(credentials, sessions) is in :mod:`e2ee.server.store`.  A :class:`Room` exists while a session
has connections; its media router is created on the first publish or subscribe and closed
when the last connection leaves.

Mutations of the dictionaries below never await in the middle, so they are atomic with
respect to other tasks (the participant limit, for one, cannot be overrun by a race).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from e2ee.server.store import SessionRecord, Store
from e2ee.server.tokens import Role

__all__ = [
    "ApiError",
    "Connection",
    "Hub",
    "MediaRouter",
    "Room",
    "RouterFactory",
    "Stream",
    "Subscription",
    "new_id",
]

log = logging.getLogger(__name__)

#: Messages waiting to be written to one client; a client that falls this far behind is
#: disconnected (close code 4008) rather than slowing down everyone else.
SEND_QUEUE_LIMIT = 512
#: Streams one connection may publish at once.
MAX_STREAMS_PER_CONNECTION = 8
#: Subscriptions one connection may hold at once.
MAX_SUBSCRIPTIONS_PER_CONNECTION = 256

# WebSocket close codes of the signaling protocol (4000-4999 are for applications).
CLOSE_FORCE_DISCONNECTED = 4001
CLOSE_TOO_SLOW = 4008
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_PARTICIPANT_LIMIT = 4429
CLOSE_GOING_AWAY = 1001


def new_id() -> str:
    """A random identifier of 128 bits, URL-safe."""
    return secrets.token_urlsafe(16)


class ApiError(Exception):
    """An error with a stable ``code`` that the client sees as
    ``{"type": "error", "code": ..., "message": ...}``.  ``status`` is the HTTP status on
    the REST API (and ignored on the WebSocket)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self, msg_id: object = None, *, with_id: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "error"}
        if with_id:
            out["id"] = msg_id
        out["code"] = self.code
        out["message"] = self.message
        return out


class MediaRouter(Protocol):
    """The part of :class:`e2ee.sfu.router.Router` the server uses."""

    async def publish(self, stream_id: str, offer: Any) -> Any: ...
    async def subscribe(self, subscription_id: str, stream_id: str) -> Any: ...
    async def accept_answer(self, subscription_id: str, answer: Any) -> None: ...
    async def unsubscribe(self, subscription_id: str) -> None: ...
    async def unpublish(self, stream_id: str) -> None: ...
    def subscriber_count(self, stream_id: str) -> int: ...
    def stats(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...


#: Makes the media router of one session.
RouterFactory = Callable[[SessionRecord], MediaRouter]


def default_router_factory(rtc_configuration: Any = None) -> RouterFactory:
    """Routers from :mod:`e2ee.sfu.router`, E2EE mode as the session says."""

    def make(record: SessionRecord) -> MediaRouter:
        try:
            from e2ee.sfu.router import Router
        except ImportError as exc:
            log.warning("media router unavailable: %s", exc)
            raise ApiError(
                "not_implemented", "the media router is not available on this server", 501
            ) from None
        router: MediaRouter = Router(e2ee=record.e2ee, rtc_configuration=rtc_configuration)
        return router

    return make


# -- live objects -----------------------------------------------------------------------


@dataclass(eq=False)
class Stream:
    id: str
    connection_id: str
    name: str
    has_audio: bool
    has_video: bool
    created_at: float = field(default_factory=time.time)

    def public(self, subscriber_count: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "connection_id": self.connection_id,
            "name": self.name,
            "has_audio": self.has_audio,
            "has_video": self.has_video,
            "created_at": self.created_at,
        }
        if subscriber_count is not None:
            out["subscriber_count"] = subscriber_count
        return out


@dataclass(eq=False)
class Subscription:
    id: str
    stream_id: str
    connection_id: str
    answered: bool = False


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


class Room:
    """The live state of one session."""

    def __init__(self, hub: Hub, record: SessionRecord) -> None:
        self.hub = hub
        self.record = record
        self.connections: dict[str, Connection] = {}
        self.streams: dict[str, Stream] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._router: MediaRouter | None = None

    # -- router ---------------------------------------------------------------------------

    def router(self) -> MediaRouter:
        """The session's media router, created on first use."""
        if self._router is None:
            router = self.hub.router_factory(self.record)
            # The router reports media that ended on its own (a peer connection that
            # failed or closed); the rest of the session hears about it.
            if hasattr(router, "on_stream_ended"):
                router.on_stream_ended = self._media_stream_ended
            if hasattr(router, "on_subscription_ended"):
                router.on_subscription_ended = self._media_subscription_ended
            self._router = router
        return self._router

    def _media_stream_ended(self, stream_id: str, reason: str) -> None:
        if stream_id in self.streams:  # not already removed by signaling
            log.info("stream %s ended in the media router: %s", stream_id, reason)
            self._detach_stream(stream_id, "media_ended")  # the router cleaned up itself

    def _media_subscription_ended(self, subscription_id: str, stream_id: str, reason: str) -> None:
        if subscription_id in self.subscriptions:
            log.info("subscription %s ended in the media router: %s", subscription_id, reason)
            self._detach_subscription(subscription_id)

    @property
    def router_if_any(self) -> MediaRouter | None:
        return self._router

    # -- views ----------------------------------------------------------------------------

    def subscriber_count(self, stream_id: str) -> int:
        return sum(1 for s in self.subscriptions.values() if s.stream_id == stream_id)

    def streams_public(self) -> list[dict[str, Any]]:
        return [s.public(self.subscriber_count(s.id)) for s in self.streams.values()]

    def connections_public(self) -> list[dict[str, Any]]:
        return [c.public() for c in self.connections.values()]

    def router_stats(self) -> dict[str, Any] | None:
        if self._router is None:
            return None
        try:
            return dict(self._router.stats())
        except Exception:
            log.exception("router stats failed")
            return None

    # -- events ---------------------------------------------------------------------------

    def broadcast(self, message: Mapping[str, Any], *, exclude: str | None = None) -> None:
        for conn in list(self.connections.values()):
            if conn.id != exclude:
                conn.send(message)

    def _announce_count(self, stream_id: str) -> None:
        if stream_id in self.streams:
            self.broadcast(
                {
                    "type": "subscriber_count",
                    "stream_id": stream_id,
                    "count": self.subscriber_count(stream_id),
                }
            )

    # -- connections ----------------------------------------------------------------------

    def add_connection(self, conn: Connection) -> None:
        """Registers ``conn``; :class:`ApiError` ``participant_limit`` if full."""
        if len(self.connections) >= self.record.max_participants:
            raise ApiError(
                "participant_limit",
                f"the session is full ({self.record.max_participants} participants)",
                403,
            )
        self.connections[conn.id] = conn
        self.broadcast({"type": "connection_created", "connection": conn.public()}, exclude=conn.id)

    async def remove_connection(
        self, conn: Connection, reason: str, *, close: tuple[int, str] | None = None
    ) -> None:
        """Removes ``conn`` with its streams and subscriptions (idempotent); with
        ``close``, tells the client why and closes its WebSocket.  The others get
        ``stream_destroyed`` for its streams, then ``connection_destroyed``."""
        if self.connections.get(conn.id) is not conn:
            return
        del self.connections[conn.id]
        if close is not None:
            conn.send({"type": "disconnected", "reason": reason})
            conn.close(*close)
        ops: list[tuple[str, str]] = []
        for sub_id in list(conn.subscriptions):
            ops += self._detach_subscription(sub_id)
        for stream_id in list(conn.streams):
            ops += self._detach_stream(stream_id, "disconnected")
        conn.streams.clear()
        conn.subscriptions.clear()
        self.broadcast(
            {"type": "connection_destroyed", "connection": conn.public(), "reason": reason}
        )
        await self._router_cleanup(ops)
        if not self.connections:
            await self.hub.retire(self)

    # -- streams --------------------------------------------------------------------------

    def add_stream(self, conn: Connection, stream: Stream) -> None:
        self.streams[stream.id] = stream
        conn.streams.add(stream.id)
        self.broadcast({"type": "stream_created", "stream": stream.public(0)})

    async def remove_stream(self, stream_id: str, reason: str) -> None:
        """Ends a stream and every subscription to it; ``unknown_stream`` if none."""
        if stream_id not in self.streams:
            raise ApiError("unknown_stream", "no such stream in this session", 404)
        await self._router_cleanup(self._detach_stream(stream_id, reason))

    def _detach_stream(self, stream_id: str, reason: str) -> list[tuple[str, str]]:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return []
        owner = self.connections.get(stream.connection_id)
        if owner is not None:
            owner.streams.discard(stream_id)
        ops: list[tuple[str, str]] = []
        for sub in [s for s in self.subscriptions.values() if s.stream_id == stream_id]:
            self._forget_subscription(sub)
            ops.append(("unsubscribe", sub.id))
        ops.append(("unpublish", stream_id))
        self.broadcast({"type": "stream_destroyed", "stream": stream.public(), "reason": reason})
        return ops

    # -- subscriptions --------------------------------------------------------------------

    def add_subscription(self, conn: Connection, sub: Subscription) -> None:
        self.subscriptions[sub.id] = sub
        conn.subscriptions.add(sub.id)
        self._announce_count(sub.stream_id)

    def _forget_subscription(self, sub: Subscription) -> None:
        self.subscriptions.pop(sub.id, None)
        conn = self.connections.get(sub.connection_id)
        if conn is not None:
            conn.subscriptions.discard(sub.id)

    def _detach_subscription(self, sub_id: str) -> list[tuple[str, str]]:
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return []
        self._forget_subscription(sub)
        self._announce_count(sub.stream_id)
        return [("unsubscribe", sub.id)]

    async def remove_subscription(self, conn: Connection, sub_id: str) -> None:
        """Ends one of ``conn``'s subscriptions; ``unknown_subscription`` if not its."""
        sub = self.subscriptions.get(sub_id)
        if sub is None or sub.connection_id != conn.id:
            raise ApiError("unknown_subscription", "no such subscription on this connection")
        conn.subscriptions.discard(sub_id)
        await self._router_cleanup(self._detach_subscription(sub_id))

    async def _router_cleanup(self, ops: list[tuple[str, str]]) -> None:
        router = self._router
        if router is None:
            return
        for op, ident in ops:
            call = router.unsubscribe(ident) if op == "unsubscribe" else router.unpublish(ident)
            await _quietly(call, op)

    # -- shutdown -------------------------------------------------------------------------

    async def close_router(self) -> None:
        router, self._router = self._router, None
        if router is not None:
            await _quietly(router.close(), "router close")


async def _quietly(aw: Awaitable[Any], what: str) -> None:
    """Runs a clean-up call of the router; a failure is logged, never raised."""
    try:
        await aw
    except Exception as exc:
        log.debug("router %s failed: %r", what, exc)


class Hub:
    """All rooms of this process, the store, and the project credentials."""

    def __init__(
        self, store: Store, api_key: str, api_secret: str, router_factory: RouterFactory
    ) -> None:
        self.store = store
        self.api_key = api_key
        self._api_secret = api_secret
        self.router_factory = router_factory
        self.rooms: dict[str, Room] = {}
        self._sessions: dict[str, SessionRecord] = {}

    @property
    def api_secret(self) -> str:
        return self._api_secret

    def __repr__(self) -> str:  # never show the secret
        return f"Hub(api_key={self.api_key!r}, rooms={len(self.rooms)})"

    async def session(self, session_id: str) -> SessionRecord | None:
        """The session record (cached: sessions are immutable)."""
        record = self._sessions.get(session_id)
        if record is None:
            if not session_id or len(session_id) > 128:
                return None
            record = await self.store.get_session(session_id)
            if record is not None:
                self._sessions[session_id] = record
        return record

    async def require_session(self, session_id: str) -> SessionRecord:
        record = await self.session(session_id)
        if record is None:
            raise ApiError("session_not_found", "no such session", 404)
        return record

    def remember(self, record: SessionRecord) -> None:
        self._sessions[record.id] = record

    def room(self, record: SessionRecord) -> Room:
        room = self.rooms.get(record.id)
        if room is None:
            room = self.rooms[record.id] = Room(self, record)
        return room

    async def retire(self, room: Room) -> None:
        """Forgets an empty room and closes its router."""
        if self.rooms.get(room.record.id) is room and not room.connections:
            del self.rooms[room.record.id]
        await room.close_router()

    async def shutdown(self) -> None:
        """Tells every client the server is going away, then closes the routers."""
        conns: list[Connection] = []
        for room in list(self.rooms.values()):
            for conn in list(room.connections.values()):
                conns.append(conn)
                conn.send({"type": "disconnected", "reason": "server_shutdown"})
                conn.close(CLOSE_GOING_AWAY, "server shutting down")
        await asyncio.gather(*(c.wait_closed(2.0) for c in conns), return_exceptions=True)
        for room in list(self.rooms.values()):
            await room.close_router()
        self.rooms.clear()
