"""Publish and subscribe as offer/answer: the peer connection behind each stream of a
:class:`~e2ee.client.session.Session`, from its first description to the server's reply.

Each stream has its own peer connection (publishing: the client offers; subscribing: the
router offers and the client answers).  The media must be what the application asked
for: with an encryption secret, every connection is protected
(:func:`~e2ee.transform.protect.protect`) before its first track or description, and
every description applied or sent is stripped of the RFC 6464/6465 audio levels and
other media-derived RTP header extensions (docs/protocol.md §9); without E2EE in a
session the application gave a secret for, nothing is negotiated at all
(:class:`~e2ee.client.errors.E2eeRequired`).  A negotiation that fails after the
server made its half (a stream, a subscription) ends that half on the server too.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from e2ee.client.errors import E2eeRequired, SessionError
from e2ee.client.peers import LentTrack, PeerSet, Subscriber
from e2ee.crypto.keyring import KeyRing
from e2ee.errors import EncryptionSecretMissing
from e2ee.rtc import compat
from e2ee.transform.protect import E2eeTransform, protect
from e2ee.wire.extmap import strip_media_derived_extensions

__all__ = ["Negotiating", "check_media", "publish", "subscribe"]


class Negotiating(Protocol):
    """What a negotiation needs of its :class:`~e2ee.client.session.Session`."""

    ring: KeyRing | None
    peers: PeerSet
    _generation: int

    @property
    def e2ee(self) -> bool: ...
    @property
    def connected(self) -> bool: ...
    @property
    def _wants_e2ee(self) -> bool: ...

    def _new_pc(self) -> RTCPeerConnection: ...
    def _spawn(self, aw: Any) -> None: ...
    def _emit(self, event: str, message: dict[str, Any]) -> None: ...
    async def request(self, message: dict[str, Any]) -> dict[str, Any]: ...
    async def _tell(self, message: dict[str, Any]) -> None: ...


def check_media(s: Negotiating, action: str) -> None:
    """Refuses ``action`` before any peer connection exists unless its media will be
    what the application asked for: end to end encrypted when it gave a secret."""
    if not s.connected:
        raise SessionError("not_connected", "the session is not connected")
    if s.e2ee:
        if s.ring is None or not s.ring.has_secret:
            raise EncryptionSecretMissing(
                f"{action} in an end-to-end encrypted session needs a secret"
            )
    elif s._wants_e2ee:
        raise E2eeRequired(
            f"{action} refused: this session is not end-to-end encrypted, and the "
            "application gave an encryption secret"
        )


def _protect(s: Negotiating, pc: RTCPeerConnection) -> E2eeTransform | None:
    """The connection's E2EE transform; ``None`` only in a session without E2EE that
    the application joined without a secret."""
    if not s.e2ee:
        if s._wants_e2ee:
            raise E2eeRequired("this session is not end-to-end encrypted")
        return None
    if s.ring is None or not s.ring.has_secret:
        raise EncryptionSecretMissing("an end-to-end encrypted session needs a secret")
    return protect(pc, s.ring)


def _sdp(s: Negotiating, sdp: object) -> str:
    """A description to apply or to send: in an E2EE session, without media-derived
    RTP header extensions (the audio level would show the router voice activity)."""
    if not isinstance(sdp, str):
        raise SessionError("protocol_error", "the server sent no SDP")
    return strip_media_derived_extensions(sdp) if s.e2ee else sdp


async def _undo(s: Negotiating, exc: BaseException, message: dict[str, Any]) -> None:
    # Cancelled: tell the server in the background, the caller is leaving.
    if isinstance(exc, asyncio.CancelledError):
        s._spawn(s._tell(message))
    else:
        await s._tell(message)


async def publish(
    s: Negotiating,
    audio: MediaStreamTrack | None,
    video: MediaStreamTrack | None,
    name: str | None,
) -> tuple[str, RTCPeerConnection, E2eeTransform | None]:
    """A new publishing connection for the tracks, negotiated: its stream id, the
    connection and its transform.  On failure the connection is closed and a stream the
    server made is unpublished."""
    pc = s._new_pc()
    stream_id: str | None = None
    try:
        transform = _protect(s, pc)  # before any track or description
        for track in (audio, video):
            if track is not None:
                pc.addTrack(LentTrack(track))  # the track outlives this connection
        compat.slim_receivers(pc, receives=False)  # a publisher's connection only sends
        await pc.setLocalDescription(await pc.createOffer())
        msg: dict[str, Any] = {"type": "publish", "sdp": _sdp(s, pc.localDescription.sdp)}
        if name is not None:
            msg["name"] = name
        reply = await s.request(msg)
        if not isinstance(reply.get("stream_id"), str):
            raise SessionError("protocol_error", "the server's answer has no stream_id")
        stream_id = reply["stream_id"]
        answer = _sdp(s, reply.get("sdp"))
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    except BaseException as exc:
        await s.peers.close(pc)
        if stream_id is not None:  # the server made the stream: end it there too
            await _undo(s, exc, {"type": "unpublish", "stream_id": stream_id})
        raise
    return stream_id, pc, transform


async def subscribe(s: Negotiating, stream_id: str, sub: Subscriber | None) -> Subscriber:
    """A new subscription to ``stream_id`` on a new connection, negotiated: a new
    :class:`Subscriber`, or ``sub`` moved onto it (after a reconnect).  On failure the
    connection is closed and the subscription ended on the server."""
    reply = await s.request({"type": "subscribe", "stream_id": stream_id})
    sub_id = reply.get("subscription_id")
    if not isinstance(sub_id, str):
        raise SessionError("protocol_error", "the server's offer has no subscription_id")
    pc = s._new_pc()
    try:
        offer = _sdp(s, reply.get("sdp"))
        transform = _protect(s, pc)  # before the offer is applied
        if sub is None:
            sub = Subscriber(stream_id, sub_id, pc, transform, generation=s._generation)
        else:
            sub.replace(sub_id, pc, transform, s._generation)
        sub.follow(pc, transform, s._emit)
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        compat.slim_receivers(pc, receives=True)
        await pc.setLocalDescription(await pc.createAnswer())
        answer = _sdp(s, pc.localDescription.sdp)
        await s.request({"type": "answer", "subscription_id": sub_id, "sdp": answer})
    except BaseException as exc:
        await s.peers.close(pc)
        await _undo(s, exc, {"type": "unsubscribe", "subscription_id": sub_id})
        raise
    return sub
