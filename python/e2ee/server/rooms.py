"""Live state of one session: who is connected, what they publish and who subscribes,
and the session's media router.

Everything here lives in memory, in the event loop of one server process.  Durable state
(credentials, sessions) is in :mod:`e2ee.server.store`; all rooms of the process are in
:class:`e2ee.server.hub.Hub`.  A :class:`Room` exists while a session has connections; its
media router is created on the first publish or subscribe and closed when the last
connection leaves.

Mutations of the dictionaries below never await in the middle, so they are atomic with
respect to other tasks (the participant limit, for one, cannot be overrun by a race).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from e2ee.server.connection import Connection
from e2ee.server.errors import CLOSE_FORCE_DISCONNECTED, ApiError
from e2ee.server.media import MediaRouter, RouterFactory
from e2ee.server.store import SessionRecord

__all__ = [
    "MAX_STREAMS_PER_CONNECTION",
    "MAX_SUBSCRIPTIONS_PER_CONNECTION",
    "Room",
    "RoomOwner",
    "Stream",
    "Subscription",
]

log = logging.getLogger(__name__)

#: Streams one connection may publish at once.
MAX_STREAMS_PER_CONNECTION = 8
#: Subscriptions one connection may hold at once.
MAX_SUBSCRIPTIONS_PER_CONNECTION = 256


class RoomOwner(Protocol):
    """What a :class:`Room` needs of the :class:`e2ee.server.hub.Hub` that holds it."""

    router_factory: RouterFactory

    async def retire(self, room: Room) -> None: ...


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


class Room:
    """The live state of one session."""

    def __init__(self, hub: RoomOwner, record: SessionRecord) -> None:
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

    async def force_disconnect(self, connection_id: str) -> None:
        """Removes a connection (moderator or REST); ``unknown_connection`` if none."""
        conn = self.connections.get(connection_id)
        if conn is None:
            raise ApiError("unknown_connection", "no such connection in this session", 404)
        await self.remove_connection(
            conn, "force_disconnected", close=(CLOSE_FORCE_DISCONNECTED, "force disconnected")
        )

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
