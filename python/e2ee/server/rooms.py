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

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from e2ee.server.connection import Connection
from e2ee.server.errors import CLOSE_FORCE_DISCONNECTED, CLOSE_NOT_FOUND, ApiError
from e2ee.server.limits import RateLimiter, ServerLimits
from e2ee.server.media import MediaRouter, RouterFactory
from e2ee.server.memory import MemoryTrimmer
from e2ee.server.store import SessionRecord

__all__ = [
    "COUNT_INTERVAL_SECONDS",
    "MAX_CONNECTIONS_PER_TOKEN",
    "MAX_PENDING_SUBSCRIPTIONS",
    "MAX_STREAMS_PER_CONNECTION",
    "MAX_SUBSCRIPTIONS_PER_CONNECTION",
    "MODERATOR_RESERVE",
    "PENDING_SUBSCRIPTION_SECONDS",
    "Room",
    "RoomObserver",
    "RoomOwner",
    "Stream",
    "Subscription",
]

log = logging.getLogger(__name__)

#: Streams one connection may publish at once.
MAX_STREAMS_PER_CONNECTION = 8
#: Subscriptions one connection may hold at once.
MAX_SUBSCRIPTIONS_PER_CONNECTION = 256
#: Subscriptions one connection may hold unanswered (each holds a router peer connection).
MAX_PENDING_SUBSCRIPTIONS = 8
#: An unanswered subscription ends (``subscription_expired``) after this long.
PENDING_SUBSCRIPTION_SECONDS = 15.0
#: Connections open at once with the same token (``jti``): one participant's tabs/devices.
MAX_CONNECTIONS_PER_TOKEN = 4
#: Moderators are admitted above ``max_participants`` by up to
#: ``min(MODERATOR_RESERVE, max_participants // 10)`` participants.
MODERATOR_RESERVE = 5
#: ``subscriber_count`` goes out at most once per stream in this interval, with the
#: latest count once the changes of the interval are in.
COUNT_INTERVAL_SECONDS = 0.25


class RoomOwner(Protocol):
    """What a :class:`Room` needs of the :class:`e2ee.server.hub.Hub` that holds it."""

    router_factory: RouterFactory
    limits: ServerLimits
    trimmer: MemoryTrimmer

    async def retire(self, room: Room) -> None: ...

    async def revoke(self, jti: str, expires_at: float | None = None) -> None: ...

    def revoked_here(self, jti: str) -> bool: ...


class RoomObserver(Protocol):
    """Follows a room's media (an archive): both run on the event loop and must not
    block or raise."""

    def stream_added(self, room: Room, stream: Stream) -> None: ...

    def room_closing(self, room: Room) -> None: ...


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
    expiry: asyncio.TimerHandle | None = None

    def settle(self) -> None:
        """Cancels the expiry timer (answered or gone)."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None


class Room:
    """The live state of one session."""

    def __init__(self, hub: RoomOwner, record: SessionRecord) -> None:
        self.hub = hub
        self.record = record
        self.connections: dict[str, Connection] = {}
        self.streams: dict[str, Stream] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._router: MediaRouter | None = None
        self._token_connections: dict[str, int] = {}  # jti -> open connections
        self._budgets: dict[str, RateLimiter] = {}  # jti -> its rate limits (all connections)
        self._forget_timer: asyncio.TimerHandle | None = None  # for budgets of tokens gone
        self.subscribing: dict[str, int] = {}  # jti -> subscriptions being set up
        self._count_timers: dict[str, asyncio.TimerHandle] = {}  # stream -> pending count
        self._cleanups: set[asyncio.Task[None]] = set()  # router clean-ups in flight
        #: Told of new streams and of the room closing (archives, :mod:`e2ee.server.archiving`).
        self.observers: list[RoomObserver] = []

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
        self.hub.trimmer.request()  # its peer connections are closed

    def _media_subscription_ended(self, subscription_id: str, stream_id: str, reason: str) -> None:
        if subscription_id in self.subscriptions:
            log.info("subscription %s ended in the media router: %s", subscription_id, reason)
            self._detach_subscription(subscription_id)
        self.hub.trimmer.request()

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
        """Schedules one ``subscriber_count`` for ``stream_id`` (coalesced: see
        :data:`COUNT_INTERVAL_SECONDS`)."""
        if stream_id in self.streams and stream_id not in self._count_timers:
            self._count_timers[stream_id] = asyncio.get_running_loop().call_later(
                COUNT_INTERVAL_SECONDS, self._send_count, stream_id
            )

    def _send_count(self, stream_id: str) -> None:
        self._count_timers.pop(stream_id, None)
        if stream_id in self.streams and self.connections:
            self.broadcast(
                {
                    "type": "subscriber_count",
                    "stream_id": stream_id,
                    "count": self.subscriber_count(stream_id),
                }
            )

    def _cancel_count(self, stream_id: str) -> None:
        timer = self._count_timers.pop(stream_id, None)
        if timer is not None:
            timer.cancel()

    # -- connections ----------------------------------------------------------------------

    def budget(self, jti: str) -> RateLimiter:
        """The rate limits of the participant with token ``jti``: one for all its
        connections, kept after it leaves until it has rested, so a reconnection does
        not start with full buckets."""
        budget = self._budgets.get(jti)
        if budget is None:
            budget = self._budgets[jti] = RateLimiter(self.hub.limits)
        return budget

    def _forget_rested(self) -> None:
        """Drops the budgets of tokens with no connection once they have refilled (then
        a new one is the same); runs again when the next of the others will have."""
        self._forget_timer = None
        wait = 0.0
        for jti in [j for j in self._budgets if j not in self._token_connections]:
            left = self._budgets[jti].rest_time()
            if left > 0:
                wait = max(wait, left)
            else:
                del self._budgets[jti]
        if wait > 0:
            loop = asyncio.get_running_loop()
            self._forget_timer = loop.call_later(wait + 0.01, self._forget_rested)

    @property
    def participant_count(self) -> int:
        """Participants: distinct tokens (``jti``) among the connections."""
        return len(self._token_connections)

    def add_connection(self, conn: Connection) -> None:
        """Registers ``conn``; :class:`ApiError` ``participant_limit`` if the session is
        full (participants are tokens; moderators get a small reserve above the limit)
        ``token_connection_limit`` if its token already has
        :data:`MAX_CONNECTIONS_PER_TOKEN` connections, and ``rate_limited`` if its token
        connects more often than its budget (:meth:`budget`) allows."""
        if self.hub.revoked_here(conn.jti):  # revoked while this connection was checked
            raise ApiError("token_revoked", "this token was revoked: ask for a new one", 401)
        same_token = self._token_connections.get(conn.jti, 0)
        if same_token >= MAX_CONNECTIONS_PER_TOKEN:
            raise ApiError(
                "token_connection_limit",
                f"at most {MAX_CONNECTIONS_PER_TOKEN} connections may use the same token",
                403,
            )
        if same_token == 0:  # a new participant
            limit = self.record.max_participants
            if conn.role == "moderator":
                limit += min(MODERATOR_RESERVE, limit // 10)
            if self.participant_count >= limit:
                raise ApiError(
                    "participant_limit",
                    f"the session is full ({self.record.max_participants} participants)",
                    403,
                )
        if not self.budget(conn.jti).connect():
            if self._forget_timer is None:
                self._forget_rested()  # the token may have no connection to leave
            raise ApiError("rate_limited", "this token connects too often: retry later", 429)
        self._token_connections[conn.jti] = same_token + 1
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
        left = self._token_connections.get(conn.jti, 1) - 1
        if left > 0:
            self._token_connections[conn.jti] = left
        else:
            self._token_connections.pop(conn.jti, None)
            if self._forget_timer is None:
                self._forget_rested()
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
        """Removes a connection (moderator or REST) and revokes its token, so that it
        cannot come straight back (``token_revoked``); ``unknown_connection`` if none.
        The token's other connections go too: participants are counted by token, so
        removing one means removing all its connections."""
        conn = self.connections.get(connection_id)
        if conn is None:
            raise ApiError("unknown_connection", "no such connection in this session", 404)
        # Revoked before it is removed: a reconnect racing the removal is refused.
        await self.hub.revoke(conn.jti, conn.expires_at)
        await self.remove_connection(
            conn, "force_disconnected", close=(CLOSE_FORCE_DISCONNECTED, "force disconnected")
        )
        await self.disconnect_token(conn.jti)

    async def disconnect_token(self, jti: str) -> int:
        """Force-disconnects every connection that joined with the token ``jti`` (after
        its revocation); how many there were."""
        conns = [c for c in self.connections.values() if c.jti == jti]
        for conn in conns:
            await self.remove_connection(
                conn, "force_disconnected", close=(CLOSE_FORCE_DISCONNECTED, "token revoked")
            )
        return len(conns)

    async def close_all(self, reason: str) -> None:
        """Disconnects everyone (the session was deleted): ``disconnected`` with
        ``reason``, then close 4404, as a client joining a missing session gets."""
        conns = list(self.connections.values())
        for conn in conns:  # all told and closed first: no one hears of the others leaving
            conn.send({"type": "disconnected", "reason": reason})
            conn.close(CLOSE_NOT_FOUND, reason)
        for conn in conns:
            await self.remove_connection(conn, reason)

    # -- streams --------------------------------------------------------------------------

    def add_stream(self, conn: Connection, stream: Stream) -> None:
        self.streams[stream.id] = stream
        conn.streams.add(stream.id)
        self.broadcast({"type": "stream_created", "stream": stream.public(0)})
        for observer in list(self.observers):
            observer.stream_added(self, stream)

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
        self._cancel_count(stream_id)
        for sub in [s for s in self.subscriptions.values() if s.stream_id == stream_id]:
            self._forget_subscription(sub)
            ops.append(("unsubscribe", sub.id))
        ops.append(("unpublish", stream_id))
        self.broadcast({"type": "stream_destroyed", "stream": stream.public(), "reason": reason})
        return ops

    # -- subscriptions --------------------------------------------------------------------

    def pending_subscriptions(self, conn: Connection) -> int:
        """``conn``'s subscriptions not answered yet."""
        subs = (self.subscriptions.get(i) for i in conn.subscriptions)
        return sum(1 for s in subs if s is not None and not s.answered)

    def pending_subscriptions_of_token(self, jti: str) -> int:
        """Subscriptions not answered yet (or being set up) of every connection of the
        token ``jti``."""
        held = sum(self.pending_subscriptions(c) for c in self.connections.values() if c.jti == jti)
        return held + self.subscribing.get(jti, 0)

    def add_subscription(self, conn: Connection, sub: Subscription) -> None:
        """Registers ``sub`` (unanswered): it expires after
        ``limits.pending_subscription_seconds`` (default
        :data:`PENDING_SUBSCRIPTION_SECONDS`) unless answered."""
        self.subscriptions[sub.id] = sub
        conn.subscriptions.add(sub.id)
        if not sub.answered:
            self.arm_expiry(sub)
        self._announce_count(sub.stream_id)

    def arm_expiry(self, sub: Subscription) -> None:
        """(Re)starts the timer that ends ``sub`` if it stays unanswered."""
        sub.settle()
        sub.expiry = asyncio.get_running_loop().call_later(
            self.hub.limits.pending_subscription_seconds, self._expire_subscription, sub.id
        )

    def _expire_subscription(self, sub_id: str) -> None:
        sub = self.subscriptions.get(sub_id)
        if sub is None or sub.answered:
            return
        sub.expiry = None
        conn = self.connections.get(sub.connection_id)
        log.info("subscription %s expired unanswered", sub_id)
        ops = self._detach_subscription(sub_id)
        if conn is not None:
            conn.send(
                {
                    "type": "subscription_expired",
                    "subscription_id": sub_id,
                    "stream_id": sub.stream_id,
                }
            )
        task = asyncio.get_running_loop().create_task(self._router_cleanup(ops))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _forget_subscription(self, sub: Subscription) -> None:
        sub.settle()
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
        if ops:
            self.hub.trimmer.request()  # peer connections were closed

    # -- shutdown -------------------------------------------------------------------------

    async def close_router(self) -> None:
        observers, self.observers = self.observers, []
        for observer in observers:
            observer.room_closing(self)
        for stream_id in list(self._count_timers):
            self._cancel_count(stream_id)
        if self._forget_timer is not None:
            self._forget_timer.cancel()
            self._forget_timer = None
        router, self._router = self._router, None
        if router is not None:
            await _quietly(router.close(), "router close")


async def _quietly(aw: Awaitable[Any], what: str) -> None:
    """Runs a clean-up call of the router; a failure is logged, never raised."""
    try:
        await aw
    except Exception as exc:
        log.debug("router %s failed: %r", what, exc)
