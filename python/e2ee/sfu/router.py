"""The media router (SFU forwarding path): encoded frames in, the same bytes out.

::

    router = Router()                                   # e2ee=True: VP8 + Opus only
    answer = await router.publish("alice", offer)       # publisher's offer -> answer
    offer = await router.subscribe("bob<-alice", "alice")   # router offers to subscriber
    await router.accept_answer("bob<-alice", answer)
    ...
    await router.unsubscribe("bob<-alice"); await router.unpublish("alice")
    router.stats()                                      # counters, per stream / subscription
    await router.close()

What the router reads and does (docs/protocol.md "What the router sees and does")
    It never decodes media and holds no key material: the :mod:`e2ee.sfu` package imports
    nothing from ``e2ee._core``, :mod:`e2ee.crypto` or :mod:`e2ee.transform` (import-linter
    contracts check it).  Per frame it reads only the clear VP8 frame tag and, in an E2EE
    router, the SFrame header that follows the clear prefix (for stats only).  Every frame
    it forwards is byte-identical to the frame the publisher's encoder (and encryptor)
    produced; only the RTP layer is rewritten per subscriber by aiortc's packetizer.

This module is the bookkeeping: streams, subscriptions, their peer connections, ends and
callbacks.  The rest of the package, along the forwarding path:

* :mod:`e2ee.sfu.sdp`: VP8/Opus only, codec preferences, the publisher's media SSRC;
* :mod:`e2ee.sfu.ingress`: frames taken from aiortc's receivers without decoding, one
  :class:`~e2ee.sfu.ingress.Forwarder` per published track, each frame released on its
  last packet (:mod:`e2ee.sfu.assembler`);
* :mod:`e2ee.sfu.policy`: the per-frame decisions (plain bytes in, an action out);
* :mod:`e2ee.sfu.egress`: one :class:`~e2ee.sfu.egress.RelayTrack` per subscriber and
  track, relaying the publisher's packets with a rewritten RTP header;
* :mod:`e2ee.sfu.keyframes`: key frame requests (PLI) to publishers, rate-limited;
* :mod:`e2ee.rtc.compat`: every private aiortc name the hooks above use.

Ingress (one ``RTCPeerConnection`` per publisher, the router answers)
    The router pre-creates one ``recvonly`` transceiver per audio/video m-line of the
    offer and pins its codecs with ``setCodecPreferences`` (VP8 + RTX, Opus), so the
    answer negotiates only those; ``setRemoteDescription`` then binds these transceivers
    to the m-lines (aiortc picks the first transceiver of the kind whose mid is unset,
    rtcpeerconnection.py:904-908) instead of creating new ones whose codecs could not be
    pinned any more (codecs are negotiated inside ``setRemoteDescription``, :918-921).
    Each published track's :class:`~e2ee.sfu.ingress.Forwarder` installs its receive hooks
    right after, well before ``receive()`` starts the receivers (once DTLS is up).

Egress (one ``RTCPeerConnection`` per subscription, the router offers)
    One ``sendonly`` transceiver per published track, carrying only VP8 (+RTX) or Opus.
    The offer leaves out abs-send-time (:func:`e2ee.sfu.sdp.subscriber_offer`): it only
    makes subscribers send REMB bandwidth estimates, and the router adapts no bitrate.

Header extensions (E2EE)
    An E2EE router negotiates no media-derived RTP header extension (the RFC 6464 audio
    level, which aiortc and browsers fill from the raw audio): they are stripped from
    publishers' offers before ``setRemoteDescription`` (so the answer leaves them out),
    from the router's offers to subscribers (:func:`e2ee.sfu.sdp.subscriber_offer`), and
    from subscribers' answers (:func:`e2ee.sfu.sdp.without_media_derived_extensions`).

Callbacks
    ``router.on_stream_ended(stream_id, reason)``: a stream ended (``"unpublished"``,
    ``"publisher_disconnected"``, ``"closed"``).  ``router.on_subscription_ended(
    subscription_id, stream_id, reason)``: a subscription ended (``"unsubscribed"``,
    ``"stream_ended"``, ``"subscriber_disconnected"``, ``"closed"``).  Both run on the
    event loop, must not block, and exceptions they raise are logged and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp

from e2ee.rtc import compat
from e2ee.sfu.egress import RelayTrack, prepare_sender
from e2ee.sfu.errors import RouterError, UnknownStream, UnknownSubscription
from e2ee.sfu.frames import Totals
from e2ee.sfu.ingress import Forwarder
from e2ee.sfu.sdp import (
    ALLOWED_CODECS,
    check_off_loop,
    codec_preferences,
    media_ssrc,
    subscriber_offer,
)

__all__ = ["Router"]

log = logging.getLogger(__name__)


class _Stream:
    def __init__(self, stream_id: str, pc: RTCPeerConnection) -> None:
        self.id = stream_id
        self.pc = pc
        self.forwarders: list[Forwarder] = []
        self.subscriptions: set[str] = set()
        self.ending = False


class _Subscription:
    def __init__(self, sub_id: str, stream_id: str, pc: RTCPeerConnection) -> None:
        self.id = sub_id
        self.stream_id = stream_id
        self.pc = pc
        self.relays: list[RelayTrack] = []
        self.ending = False


class Router:
    """A selective forwarding router for VP8 + Opus, E2EE-safe (see the module docs).

    ``pli_interval``: the least time between two PLIs to a publisher's track, and the
    retry interval while a subscriber waits for a key frame.  ``backlog_packets``: how many
    packets a subscriber's socket may have unwritten before its video waits for a key
    frame and its audio drops frames.  ``nack_wait``: how long a publisher's missing video
    packet may hold back frames before they are given up (then a key frame is asked for).
    """

    def __init__(
        self,
        *,
        e2ee: bool = True,
        pli_interval: float = 0.3,
        backlog_packets: int = 256,
        nack_wait: float = 0.1,
        rtc_configuration: RTCConfiguration | None = None,
    ) -> None:
        if backlog_packets < 1:
            raise ValueError("backlog_packets must be at least 1")
        if nack_wait < 0:
            raise ValueError("nack_wait must not be negative")
        if pli_interval <= 0:
            raise ValueError("pli_interval must be positive")
        self.e2ee = e2ee
        self.pli_interval = pli_interval
        self.backlog_packets = backlog_packets
        self.nack_wait = nack_wait
        # No STUN server unless configured: aiortc's default would make every peer
        # connection resolve and contact a public third-party server.
        self.rtc_configuration = rtc_configuration or RTCConfiguration(iceServers=[])
        self.on_stream_ended: Callable[[str, str], None] | None = None
        self.on_subscription_ended: Callable[[str, str, str], None] | None = None
        self._streams: dict[str, _Stream] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._closed = False
        self._tasks: set[asyncio.Future[Any]] = set()
        self._totals = Totals()  # kept across ended streams/subscriptions
        compat.check()  # the receive/send hooks need an aiortc whose seams are known

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(self.rtc_configuration)
        # A lagging loop must still read whole bursts per socket, or publishers' media and
        # consent checks queue in the kernel until RFC 7675 consent expires (compat).
        compat.drain_ice_reads(pc)
        compat.compact_estimators(pc)
        return pc

    def _check_open(self) -> None:
        if self._closed:
            raise RouterError("router is closed")

    # -- publish -----------------------------------------------------------------------

    async def publish(self, stream_id: str, offer: RTCSessionDescription) -> RTCSessionDescription:
        """A publisher's offer (audio and/or video) -> the router's answer.

        Only VP8 (video) and Opus (audio) are accepted and negotiated: an audio/video
        m-line without them raises :class:`CodecNotAllowed`.  Raises ``ValueError`` if
        ``stream_id`` is already published or the description is not an offer.
        """
        self._check_open()
        if offer.type != "offer":
            raise ValueError(f"publish() needs an offer, got {offer.type!r}")
        if stream_id in self._streams:
            raise ValueError(f"stream {stream_id!r} is already published")
        # Parsed off the event loop (e2ee.sfu.sdp, "Off the event loop"); the checks
        # above are repeated after the wait, which other tasks ran during.
        text, description = await check_off_loop(offer.sdp, f"stream {stream_id!r}", e2ee=self.e2ee)
        offer = RTCSessionDescription(sdp=text, type="offer")
        self._check_open()
        if stream_id in self._streams:
            raise ValueError(f"stream {stream_id!r} is already published")
        media_av = [m for m in description.media if m.kind in ALLOWED_CODECS]
        if not media_av:
            raise ValueError(f"stream {stream_id!r}: the offer has no audio or video")

        pc = self._new_pc()
        stream = _Stream(stream_id, pc)
        self._streams[stream_id] = stream
        try:
            # One recvonly transceiver per m-line, codecs pinned before
            # setRemoteDescription binds them; hooks installed before receive() (see the
            # module docstring).
            pending: list[tuple[RTCRtpTransceiver, aiortc_sdp.MediaDescription]] = []
            for media in media_av:
                transceiver = pc.addTransceiver(media.kind, direction="recvonly")
                transceiver.setCodecPreferences(codec_preferences(media.kind))
                compat.slim_receiver(transceiver.receiver, receives=True)
                pending.append((transceiver, media))
                # A few ms each in aiortc: let the media (and other clients) run between.
                await asyncio.sleep(0)
                if stream.ending:
                    raise RouterError("router is closed")
            await pc.setRemoteDescription(offer)
            for transceiver, media in pending:
                if transceiver.mid != media.rtp.muxId:  # pragma: no cover - aiortc change
                    raise RuntimeError("router: transceiver/m-line binding changed in aiortc")
                if media.direction not in ("sendonly", "sendrecv"):
                    continue  # nothing published on this m-line
                track_id = description.webrtc_track_id(media) or f"{stream_id}:{media.rtp.muxId}"
                stream.forwarders.append(
                    self._new_forwarder(stream_id, transceiver, track_id, media_ssrc(media))
                )
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            self._streams.pop(stream_id, None)
            for forwarder in stream.forwarders:
                forwarder.close()
            await pc.close()
            raise

        @pc.on("connectionstatechange")
        def _on_state() -> None:
            if pc.connectionState in ("failed", "closed") and not stream.ending:
                self._spawn(self._end_stream(stream, "publisher_disconnected"))

        return pc.localDescription

    def _new_forwarder(
        self,
        stream_id: str,
        transceiver: RTCRtpTransceiver,
        track_id: str,
        ssrc: int | None,
    ) -> Forwarder:
        return Forwarder(
            stream_id,
            transceiver,
            track_id=track_id,
            media_ssrc=ssrc,
            e2ee=self.e2ee,
            pli_interval=self.pli_interval,
            totals=self._totals,
            on_ended=self._ingress_ended,
            nack_wait=self.nack_wait,
        )

    def _ingress_ended(self, forwarder: Forwarder) -> None:
        forwarder.close()
        stream = self._streams.get(forwarder.stream_id)
        if stream is not None and not stream.ending and all(f.ended for f in stream.forwarders):
            self._spawn(self._end_stream(stream, "publisher_disconnected"))

    async def unpublish(self, stream_id: str) -> None:
        """End a stream and all its subscriptions (subscribers see their tracks end)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise UnknownStream(f"no stream {stream_id!r}")
        await self._end_stream(stream, "unpublished")

    async def _end_stream(self, stream: _Stream, reason: str) -> None:
        if stream.ending:
            return
        stream.ending = True
        for forwarder in stream.forwarders:
            forwarder.close()  # relay tracks end: the senders stop
        subs = [self._subscriptions[s] for s in list(stream.subscriptions)]
        await asyncio.gather(
            *(self._end_subscription(sub, "stream_ended") for sub in subs),
            return_exceptions=True,
        )
        await stream.pc.close()
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]
        self._callback(self.on_stream_ended, stream.id, reason)

    # -- subscribe ---------------------------------------------------------------------

    async def subscribe(self, subscription_id: str, stream_id: str) -> RTCSessionDescription:
        """Create the router->subscriber connection for ``stream_id``'s tracks; return the
        router's offer (VP8 + RTX / Opus only).  Complete with :meth:`accept_answer`.

        Raises :class:`UnknownStream` for an unknown stream, ``ValueError`` if the
        subscription id is in use.
        """
        self._check_open()
        stream = self._streams.get(stream_id)
        if stream is None or stream.ending:
            raise UnknownStream(f"no stream {stream_id!r}")
        if subscription_id in self._subscriptions:
            raise ValueError(f"subscription {subscription_id!r} already exists")
        pc = self._new_pc()
        sub = _Subscription(subscription_id, stream_id, pc)
        self._subscriptions[subscription_id] = sub
        stream.subscriptions.add(subscription_id)
        try:
            for forwarder in stream.forwarders:
                relay = RelayTrack(forwarder, subscription_id, self.backlog_packets)
                transceiver = pc.addTransceiver(relay, direction="sendonly")
                transceiver.setCodecPreferences(codec_preferences(forwarder.kind))
                # Never receives: its bitrate estimator would be 1,000 objects for the
                # garbage collector to walk (e2ee.rtc.rate).
                compat.slim_receiver(transceiver.receiver, receives=False)
                prepare_sender(transceiver.sender, relay, stream_id)  # pack only; PLI hook
                sub.relays.append(relay)
                await asyncio.sleep(0)  # as in publish: a turn for the others
                if sub.ending:
                    raise UnknownStream(f"no stream {stream_id!r}")
            offer = subscriber_offer(await pc.createOffer(), e2ee=self.e2ee)
            await pc.setLocalDescription(offer)
        except BaseException:
            await self._end_subscription(sub, "failed", callback=False)
            raise

        @pc.on("connectionstatechange")
        def _on_state() -> None:
            if pc.connectionState in ("failed", "closed") and not sub.ending:
                self._spawn(self._end_subscription(sub, "subscriber_disconnected"))

        return pc.localDescription

    async def accept_answer(self, subscription_id: str, answer: RTCSessionDescription) -> None:
        """Apply the subscriber's answer.  Raises :class:`CodecNotAllowed` if it rejects
        VP8/Opus, :class:`UnknownSubscription` for an unknown id."""
        sub = self._subscriptions.get(subscription_id)
        if sub is None or sub.ending:
            raise UnknownSubscription(f"no subscription {subscription_id!r}")
        if answer.type != "answer":
            raise ValueError(f"accept_answer() needs an answer, got {answer.type!r}")
        what = f"subscription {subscription_id!r}"
        text, _ = await check_off_loop(answer.sdp, what, e2ee=self.e2ee)  # off the loop
        if self._subscriptions.get(subscription_id) is not sub or sub.ending:
            raise UnknownSubscription(f"no subscription {subscription_id!r}")
        await sub.pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))

    async def unsubscribe(self, subscription_id: str) -> None:
        sub = self._subscriptions.get(subscription_id)
        if sub is None:
            raise UnknownSubscription(f"no subscription {subscription_id!r}")
        await self._end_subscription(sub, "unsubscribed")

    async def _end_subscription(
        self, sub: _Subscription, reason: str, callback: bool = True
    ) -> None:
        if sub.ending:
            return
        sub.ending = True
        for relay in sub.relays:
            relay.end()
            relay.forwarder.detach(relay)
        stream = self._streams.get(sub.stream_id)
        if stream is not None:
            stream.subscriptions.discard(sub.id)
        # Closing stops the senders, which send RTCP BYE: the subscriber's tracks end.
        await sub.pc.close()
        if self._subscriptions.get(sub.id) is sub:
            del self._subscriptions[sub.id]
        if callback:
            self._callback(self.on_subscription_ended, sub.id, sub.stream_id, reason)

    # -- queries -----------------------------------------------------------------------

    def subscriber_count(self, stream_id: str) -> int:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise UnknownStream(f"no stream {stream_id!r}")
        return len(stream.subscriptions)

    def forwarders(self, stream_id: str) -> list[Forwarder]:
        """The tracks of a published stream, for extra subscribers such as an archive
        recorder (:meth:`Forwarder.attach`); :class:`UnknownStream` if none."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.ending:
            raise UnknownStream(f"no stream {stream_id!r}")
        return list(stream.forwarders)

    @property
    def streams(self) -> list[str]:
        return list(self._streams)

    @property
    def subscriptions(self) -> list[str]:
        return list(self._subscriptions)

    def stats(self) -> dict[str, Any]:
        """Counters: totals since the router started, plus per stream and subscription.

        ``frames_decoded`` counts frames handed to any decoder (aiortc's decoder thread
        included); the router has none, so it is 0.  ``frames_dropped`` counts frames not
        delivered to an attached subscriber (queue overflow, or waiting for a key frame).
        """
        streams = {
            s.id: {
                "subscribers": len(s.subscriptions),
                "tracks": {f.mid or str(i): f.stats() for i, f in enumerate(s.forwarders)},
            }
            for s in self._streams.values()
        }
        subs = {
            sub.id: {
                "stream_id": sub.stream_id,
                "connection_state": sub.pc.connectionState,
                "tracks": {r.forwarder.mid or str(i): r.stats() for i, r in enumerate(sub.relays)},
            }
            for sub in self._subscriptions.values()
        }
        live_dropped = sum(
            r.frames_dropped
            for sub in self._subscriptions.values()
            for r in sub.relays
            if not r.ended
        )
        decoded = sum(f.frames_to_decoder for s in self._streams.values() for f in s.forwarders)
        totals = self._totals
        return {
            "e2ee": self.e2ee,
            "frames_received": totals.frames_received,
            "frames_forwarded": totals.frames_forwarded,
            "bytes_forwarded": totals.bytes_forwarded,
            "frames_dropped": totals.frames_dropped_closed + live_dropped,
            "keyframe_requests": totals.keyframe_requests,
            "frames_decoded": decoded,
            "streams": streams,
            "subscriptions": subs,
        }

    # -- lifecycle ---------------------------------------------------------------------

    async def close(self) -> None:
        """End every stream and subscription; the router cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(
            *(self._end_stream(s, "closed") for s in list(self._streams.values())),
            return_exceptions=True,
        )
        await asyncio.gather(
            *(self._end_subscription(s, "closed") for s in list(self._subscriptions.values())),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _callback(callback: Callable[..., None] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("router: callback failed")
