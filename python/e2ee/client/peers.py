"""The peer connections a :class:`~e2ee.client.session.Session` owns.

Each published stream is a :class:`Publisher` and each subscription a :class:`Subscriber`,
with one ``RTCPeerConnection`` each.  The session closes that connection whenever the
stream or subscription ends: the application ends it, the server says it is gone, the
WebSocket drops, or the connection fails on its own.  :func:`watch` tells which of these
a closed connection was: a connection closed through :func:`close` is the session's own
doing; one that reaches ``"failed"`` or ``"closed"`` otherwise was lost (ICE or DTLS
failure, RFC 7675 consent expiry, or the router closing its end).

After a reconnect the same objects carry on: :meth:`Publisher.replace` and
:meth:`Subscriber.replace` move them to their new connection and ids, so an application
keeps one handle per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from e2ee.client.errors import SessionError
from e2ee.transform.protect import E2eeEvent, E2eeTransform

__all__ = [
    "LINK_DOWN",
    "LentTrack",
    "PeerSet",
    "Publisher",
    "Subscriber",
    "close",
    "closed_by_us",
    "watch",
]

#: Error codes of a request that failed because the WebSocket is down (then the server
#: ends everything of the connection by itself, and a reconnect restores it).
LINK_DOWN = frozenset({"not_connected", "disconnected"})

#: Connections being closed by their owner (so their end is not a failure).
_CLOSING: weakref.WeakSet[RTCPeerConnection] = weakref.WeakSet()


class LentTrack(MediaStreamTrack):
    """An application's track as one peer connection sends it.

    aiortc stops a sender's track when the sender stops, which every close of its
    connection does, also one the remote end starts.  Each connection gets its own
    :class:`LentTrack`, so that the application's track stays live for the next
    connection after a reconnect; frames are pulled from it at the sender's pace, as
    without it.  The session stops the application's tracks itself when the stream
    ends for good (:meth:`Publisher.stop_tracks`)."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        # A pre-encoded source answers key-frame requests itself (the E2EE sender asks
        # the sender's track for ``request_keyframe``, e2ee.transform.sender): without
        # passing it on, a new subscriber waited for the source's next natural key frame.
        request = getattr(source, "request_keyframe", None)
        if callable(request):
            self.request_keyframe = request

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        return await self.source.recv()


@dataclass(eq=False)
class Publisher:
    """A stream this client publishes.

    After a reconnect the session publishes the same tracks again: ``stream_id``,
    ``pc`` and ``transform`` then name the new stream (event ``republished``).  ``ended``
    is ``None`` while the stream lives, else why it ended."""

    stream_id: str
    pc: RTCPeerConnection
    transform: E2eeTransform | None
    audio: MediaStreamTrack | None = None
    video: MediaStreamTrack | None = None
    name: str | None = None
    ended: str | None = None
    generation: int = 0  # the session link the stream id belongs to

    def stats(self) -> list[dict[str, Any]]:
        return self.transform.stats() if self.transform else []

    def stop_tracks(self) -> None:
        """Stops the application's tracks (the stream ended for good)."""
        for track in (self.audio, self.video):
            if track is not None:
                track.stop()

    def replace(
        self, stream_id: str, pc: RTCPeerConnection, transform: E2eeTransform | None, gen: int
    ) -> None:
        self.stream_id, self.pc, self.transform, self.generation = stream_id, pc, transform, gen


@dataclass(eq=False)
class Subscriber:
    """A stream this client receives; ``audio``/``video`` are the decoded tracks.

    After a reconnect the session subscribes again if the stream still exists:
    ``subscription_id``, ``pc``, ``transform`` and the tracks are then new (event
    ``resubscribed``); the old tracks have ended.  ``ended`` is ``None`` while the
    subscription lives, else why it ended."""

    stream_id: str
    subscription_id: str
    pc: RTCPeerConnection
    transform: E2eeTransform | None
    audio: MediaStreamTrack | None = None
    video: MediaStreamTrack | None = None
    events: list[E2eeEvent] = field(default_factory=list)
    ended: str | None = None
    generation: int = 0

    def stats(self) -> list[dict[str, Any]]:
        return self.transform.stats() if self.transform else []

    def replace(
        self,
        subscription_id: str,
        pc: RTCPeerConnection,
        transform: E2eeTransform | None,
        gen: int,
    ) -> None:
        self.subscription_id, self.pc, self.transform = subscription_id, pc, transform
        self.generation = gen
        self.audio = self.video = None  # the new connection's tracks arrive with its offer

    def follow(
        self,
        pc: RTCPeerConnection,
        transform: E2eeTransform | None,
        emit: Callable[[str, dict[str, Any]], None],
    ) -> None:
        """Takes the tracks of ``pc`` (while it is this subscriber's connection) and
        reports the E2EE events of ``transform`` through ``emit``, with ``stream_id``."""

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if self.pc is not pc:
                return  # a late track of a replaced connection
            if track.kind == "audio":
                self.audio = track
            else:
                self.video = track

        if transform is not None:

            def on_event(event: E2eeEvent) -> None:
                self.events.append(event)
                emit(event.type, {"type": event.type, "stream_id": self.stream_id, "event": event})

            transform.add_listener(on_event)


def closed_by_us(pc: RTCPeerConnection) -> bool:
    """Whether ``pc`` is being or was closed through :func:`close`."""
    return pc in _CLOSING


async def close(pc: RTCPeerConnection) -> None:
    """Closes ``pc`` as its owner: :func:`watch` does not report it."""
    _CLOSING.add(pc)
    with contextlib.suppress(Exception):  # closing twice, or a transport already gone
        await pc.close()


def watch(pc: RTCPeerConnection, on_lost: Callable[[str], None]) -> None:
    """Calls ``on_lost(state)`` once when ``pc`` reaches ``"failed"`` or ``"closed"``
    without :func:`close` (``state`` is the connection state then)."""
    reported = False

    @pc.on("connectionstatechange")
    def _on_state() -> None:
        nonlocal reported
        state = pc.connectionState
        if state in ("failed", "closed") and not reported and pc not in _CLOSING:
            reported = True
            on_lost(state)


Emit = Callable[[str, dict[str, Any]], None]
Spawn = Callable[[Awaitable[Any]], None]
Request = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class PeerSet:
    """The peer connections of one session, and the publishers and subscribers they
    carry.  Every connection the session makes is added here and stays until closed.

    ``generation()`` is the session's link number: stream and subscription ids belong to
    the link they were made on, and only those of the current link are ended by what
    the server says (the ids of a dropped link are being restored).  ``request`` sends
    to the server; ``emit`` raises a session event; ``spawn`` runs a task.
    """

    def __init__(
        self, *, generation: Callable[[], int], request: Request, emit: Emit, spawn: Spawn
    ) -> None:
        self._generation = generation
        self._request = request
        self._emit = emit
        self._spawn = spawn
        self.pcs: set[RTCPeerConnection] = set()
        self.publishers: dict[str, Publisher] = {}
        self.subscribers: dict[str, Subscriber] = {}

    def add(self, pc: RTCPeerConnection) -> RTCPeerConnection:
        self.pcs.add(pc)
        return pc

    async def close(self, pc: RTCPeerConnection) -> None:
        await close(pc)
        self.pcs.discard(pc)

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(pc) for pc in list(self.pcs)))

    # -- adopting ----------------------------------------------------------------------

    def adopt_publisher(self, pub: Publisher) -> None:
        pc = pub.pc
        self.publishers[pub.stream_id] = pub
        watch(pc, lambda state: self._spawn(self._publisher_lost(pub, pc, state)))

    def adopt_subscriber(self, sub: Subscriber) -> None:
        pc = sub.pc
        self.subscribers[sub.subscription_id] = sub
        watch(pc, lambda state: self._spawn(self._subscriber_lost(sub, pc, state)))

    def readopt_publisher(self, pub: Publisher) -> None:
        """``pub`` moved to a new stream id and connection (a reconnect)."""
        _drop(self.publishers, pub)
        self.adopt_publisher(pub)

    def readopt_subscriber(self, sub: Subscriber) -> None:
        _drop(self.subscribers, sub)
        self.adopt_subscriber(sub)

    def stale(self) -> tuple[list[Publisher], list[Subscriber]]:
        """Publishers and subscribers of an earlier link, still to be restored."""
        gen = self._generation()
        return (
            [p for p in self.publishers.values() if p.generation < gen and p.ended is None],
            [s for s in self.subscribers.values() if s.generation < gen and s.ended is None],
        )

    # -- what the server says ----------------------------------------------------------

    def stream_destroyed(self, stream_id: str, reason: str) -> None:
        gen = self._generation()
        pub = self.publishers.get(stream_id)
        if pub is not None and pub.generation == gen:
            self.end_publisher(pub, reason)
        for sub in list(self.subscribers.values()):
            if sub.stream_id == stream_id and sub.generation == gen:
                self.end_subscriber(sub, reason)

    def subscription_expired(self, subscription_id: str) -> None:
        sub = self.subscribers.get(subscription_id)
        if sub is not None and sub.generation == self._generation():
            self.end_subscriber(sub, "subscription_expired")

    # -- ending ------------------------------------------------------------------------

    def end_publisher(self, pub: Publisher, reason: str, *, failed: bool = False) -> None:
        """Ends ``pub`` now (idempotent): out of :attr:`publishers`, then, once its
        connection is closed, ``publisher_ended``."""
        if pub.ended is not None:
            return
        pub.ended = reason
        _drop(self.publishers, pub)
        pub.stop_tracks()
        event = {"publisher": pub, "stream_id": pub.stream_id, "reason": reason, "failed": failed}
        self._spawn(self._closed_then("publisher_ended", pub.pc, event))

    def end_subscriber(self, sub: Subscriber, reason: str, *, failed: bool = False) -> None:
        """Ends ``sub`` now (idempotent), then ``subscriber_ended``."""
        if sub.ended is not None:
            return
        sub.ended = reason
        _drop(self.subscribers, sub)
        event = {"subscriber": sub, "stream_id": sub.stream_id, "reason": reason, "failed": failed}
        self._spawn(self._closed_then("subscriber_ended", sub.pc, event))

    def forget_publisher(self, pub: Publisher, reason: str) -> None:
        """Ends ``pub`` without an event (the application ended it)."""
        pub.ended = pub.ended or reason
        _drop(self.publishers, pub)
        pub.stop_tracks()

    def forget_subscriber(self, sub: Subscriber, reason: str) -> None:
        sub.ended = sub.ended or reason
        _drop(self.subscribers, sub)

    async def end_all(self, reason: str) -> None:
        """Ends everything without events (the session is over) and closes every
        connection."""
        for pub in list(self.publishers.values()):
            self.forget_publisher(pub, reason)
        for sub in list(self.subscribers.values()):
            self.forget_subscriber(sub, reason)
        await self.close_all()

    async def _closed_then(
        self, event: str, pc: RTCPeerConnection, message: dict[str, Any]
    ) -> None:
        await self.close(pc)
        self._emit(event, message)

    async def _publisher_lost(self, pub: Publisher, pc: RTCPeerConnection, state: str) -> None:
        if pub.pc is not pc or pub.ended is not None or pub.generation != self._generation():
            return
        # The server's reply comes after any stream_destroyed it sent first (one ordered
        # socket), so a stream the server ended keeps the server's reason.
        if await self._tell({"type": "unpublish", "stream_id": pub.stream_id}):
            self.end_publisher(pub, f"connection_{state}", failed=True)

    async def _subscriber_lost(self, sub: Subscriber, pc: RTCPeerConnection, state: str) -> None:
        if sub.pc is not pc or sub.ended is not None or sub.generation != self._generation():
            return
        if await self._tell({"type": "unsubscribe", "subscription_id": sub.subscription_id}):
            self.end_subscriber(sub, f"connection_{state}", failed=True)

    async def _tell(self, message: dict[str, Any]) -> bool:
        """Sends a clean-up request; false when the link is down (a reconnect will
        restore what the request was about)."""
        try:
            await self._request(message)
        except SessionError as exc:
            return exc.code not in LINK_DOWN
        except TimeoutError:
            return True
        return True


def _drop(table: dict[str, Any], obj: object) -> None:
    """Removes ``obj`` from ``table`` under whatever key (its id may have changed)."""
    for key in [k for k, v in table.items() if v is obj]:
        del table[key]
