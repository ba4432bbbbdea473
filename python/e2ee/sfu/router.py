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
    It never decodes media and holds no key material: this module imports nothing from
    ``e2ee._core`` or :mod:`e2ee.crypto` (an import contract checks it).  Per frame it
    reads only the clear VP8 frame tag (key frame bit, start
    code, dimensions on key frames; RFC 6386 §9.1) and, in an E2EE router, the SFrame
    header that follows the clear prefix (RFC 9605 §4.3: KID and CTR, for stats only).
    Every frame it forwards is byte-identical to the frame the publisher's encoder (and
    encryptor) produced; only the RTP layer (SSRC, sequence numbers, timestamp origin,
    VP8 PictureID) is rewritten per subscriber by aiortc's packetizer.

Ingress (one ``RTCPeerConnection`` per publisher, the router answers)
    The router pre-creates one ``recvonly`` transceiver per audio/video m-line of the
    offer and pins its codecs with ``setCodecPreferences`` (VP8 + RTX, Opus), so the
    answer negotiates only those; ``setRemoteDescription`` then binds these transceivers
    to the m-lines (aiortc picks the first transceiver of the kind whose mid is unset,
    rtcpeerconnection.py:904-908) instead of creating new ones whose codecs could not be
    pinned any more (codecs are negotiated inside ``setRemoteDescription``, :918-921).

    Frames are taken without decoding by replacing each receiver's private decoder queue
    (``RTCRtpReceiver._RTCRtpReceiver__decoder_queue``, rtcrtpreceiver.py:291) with
    :class:`_IngressQueue`.  aiortc's ``_handle_rtp_packet`` (rtcrtpreceiver.py:567)
    calls ``put((codec, JitterFrame))`` on the event loop once per reassembled frame:
    the proxy hands the frame straight to the track's :class:`Forwarder` (no thread hop,
    no decoder).  The decoder thread that ``receive()`` starts (rtcrtpreceiver.py:406-416,
    called from ``RTCPeerConnection.__connect`` at rtcpeerconnection.py:1091, i.e. after
    DTLS is up, well after ``publish()`` installed the proxy) blocks in the proxy's
    ``get()`` until the ``None`` stop sentinel (``__stop_decoder``, rtcrtpreceiver.py:643)
    and then ends the (unused) remote track as usual.  ``get()`` never returns a frame,
    so ``decoder_worker`` (rtcrtpreceiver.py:54) never calls ``get_decoder``/``decode``.
    ``stats()["frames_decoded"]`` is the number of frames handed to that thread, the
    receiver's only path to a decoder: 0 by construction (``_IngressQueue.get`` returns
    only the sentinel).  This is per receiver: no process-wide
    patch of ``get_decoder``/``CODECS``, so a client in the same process is unaffected.

    The video receiver's private jitter buffer (``_RTCRtpReceiver__jitter_buffer``,
    rtcrtpreceiver.py:299, used at :551) is replaced by a subclass of aiortc's
    ``JitterBuffer`` that reports frame loss: aiortc's buffer skips frames only on the
    paths where it also raises its PLI flag (jitterbuffer.py:40-56), so every upstream gap
    makes every subscriber of the track wait for the next key frame (the VP8 PictureID
    trap: aiortc's packetizer numbers frames contiguously per subscriber, so a receiver
    could not detect a missing delta).  The audio jitter buffer (rtcrtpreceiver.py:295,
    ``prefetch=4``) is replaced by one with ``prefetch=0``: a frame leaves as soon as
    the next one starts, cutting ~60 ms of audio latency (aiortc's known latency creep
    after audio loss, #543, is unchanged).

Per subscriber and track: :class:`RelayTrack`
    A ``MediaStreamTrack`` with a bounded ``asyncio.Queue`` (``queue_frames``).  It
    attaches to its forwarder when the subscriber's sender first pulls a frame (so no
    stale frames pile up while the subscriber connects), starts only on a VP8 key frame
    and asks the publisher for one (PLI).  On overflow the queue is flushed and the track
    waits for the next key frame (a key frame that overflows the queue replaces it);
    single delta frames are never dropped.  Audio: every Opus frame is forwarded; on
    overflow the oldest one is dropped.  The per-frame decisions live in
    :func:`classify_vp8` and :class:`FrameGate` (plain bytes/ints in, an action out), the
    part meant to move to Rust.

Egress (one ``RTCPeerConnection`` per subscription, the router offers)
    The relay track yields :class:`EncodedFrame` objects (duck-typed ``av.Packet``:
    ``bytes()``, ``pts``, ``time_base``).  aiortc's sender sees a non-``Frame`` and calls
    ``encoder.pack()`` (rtcrtpsender.py:321-323), which only packetizes.  The sender's
    private encoder (``_RTCRtpSender__encoder``, rtcrtpsender.py:104, created lazily at
    :308-309) is preset to :class:`_Vp8Packer` / :class:`_OpusPacker`, which refuse to
    encode.  The offer carries only VP8 (+RTX) or Opus (``setCodecPreferences``).
    NACKs are served from the sender's packet history, SR/BYE by aiortc.

Key frame requests (PLI)
    A subscriber's PLI/FIR reaches the router's sender ``_handle_rtcp_packet``
    (rtcrtpsender.py:277-281), which calls ``self._send_keyframe()`` (:351); the router
    overrides it per sender instance.  Requests go to the publisher as an RTCP PLI with
    ``receiver._send_rtcp_pli(media_ssrc)`` (rtcrtpreceiver.py:630; the receiver's RTCP
    SSRC is set by ``__createTransceiver``, rtcpeerconnection.py:1210), where
    ``media_ssrc`` is the publisher's media SSRC from the offer (first SSRC of the FID
    group, else the first ``a=ssrc``, as aiortc's ``__remoteRtp`` does,
    rtcpeerconnection.py:1253-1269).  At most one PLI per ``pli_interval`` per track;
    requests in between are coalesced into the next allowed one.  While any subscriber
    waits for a key frame the request is repeated every ``pli_interval``, backing off to
    :data:`PLI_MAX_INTERVAL` after :data:`PLI_FAST_RETRIES` unanswered tries (bounded).

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
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.codecs.base import Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, convert_timebase
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from e2ee.errors import CodecError, E2eeError
from e2ee.wire.codecs import VP8_START_CODE, clear_prefix_length
from e2ee.wire.sframe_header import parse_sframe_header
from e2ee.wire.vp8 import parse_vp8_frame_header

__all__ = [
    "CodecNotAllowed",
    "EncodedFrame",
    "Forwarder",
    "FrameGate",
    "RelayTrack",
    "Router",
    "RouterError",
    "UnknownStream",
    "UnknownSubscription",
    "classify_vp8",
]

log = logging.getLogger(__name__)

#: Unanswered PLIs sent every ``pli_interval`` before backing off.
PLI_FAST_RETRIES = 10
#: Longest interval between repeated PLIs while a subscriber waits for a key frame.
PLI_MAX_INTERVAL = 2.0

# Private aiortc names (aiortc 1.16.0), see the module docstring for file:line.
_RECEIVER_QUEUE = "_RTCRtpReceiver__decoder_queue"  # rtcrtpreceiver.py:291
_RECEIVER_THREAD = "_RTCRtpReceiver__decoder_thread"  # rtcrtpreceiver.py:292
_RECEIVER_JITTER = "_RTCRtpReceiver__jitter_buffer"  # rtcrtpreceiver.py:295/299
_SENDER_ENCODER = "_RTCRtpSender__encoder"  # rtcrtpsender.py:104


# -- Errors ------------------------------------------------------------------------------


class RouterError(E2eeError):
    """Base class of the router's errors."""


class CodecNotAllowed(RouterError, ValueError):
    """An offer (or answer) has no VP8 for a video m-line / no Opus for an audio m-line."""


class UnknownStream(RouterError, KeyError):
    """No stream is published under this id."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "unknown stream"


class UnknownSubscription(RouterError, KeyError):
    """No subscription has this id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown subscription"


# -- Per-frame core: plain bytes in, decisions out (the part meant to move to Rust) -------

#: :func:`classify_vp8` results.
VP8_DELTA = 0
VP8_KEY = 1
VP8_INVALID = 2

#: :meth:`FrameGate.admit` actions.
ACCEPT = 0
"""Enqueue the frame."""
DROP = 1
"""Drop the frame (waiting for a key frame)."""
FLUSH_ACCEPT = 2
"""Flush the queue, then enqueue the frame (a key frame restarts the track)."""
FLUSH_DROP = 3
"""Flush the queue, drop the frame, wait for a key frame and request one."""
DROP_OLDEST = 4
"""Audio: drop the oldest queued frame, then enqueue this one."""


def classify_vp8(data: bytes) -> int:
    """Classify a VP8 frame (starting at its frame tag) from its clear bytes only.

    RFC 6386 §9.1: bit 0 of the frame tag is 0 on a key frame, whose tag is followed by
    the start code ``9d 01 2a`` and the dimensions (10 clear bytes).  A frame shorter than
    its clear header, or a "key frame" without the start code (e.g. a fragment that the
    jitter buffer started mid-frame after a loss), is :data:`VP8_INVALID`.
    """
    n = len(data)
    if n < 3:
        return VP8_INVALID
    if data[0] & 1:
        return VP8_DELTA
    if n >= 10 and data[3:6] == VP8_START_CODE:
        return VP8_KEY
    return VP8_INVALID


class FrameGate:
    """Per subscriber and track: when to forward, drop or flush.  Pure state machine.

    ``admit(key, queued)`` is called once per incoming frame with whether it is a VP8 key
    frame and how many frames the subscriber's queue holds; it returns an action
    (:data:`ACCEPT`, :data:`DROP`, :data:`FLUSH_ACCEPT`, :data:`FLUSH_DROP`,
    :data:`DROP_OLDEST`).  Video starts, and restarts after any loss, only on a key frame
    and never drops a single delta frame mid-GOP; audio never waits.
    """

    __slots__ = ("capacity", "dropped_overflow", "dropped_waiting", "need_keyframe", "video")

    def __init__(self, capacity: int, video: bool) -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be at least 1")
        self.capacity = capacity
        self.video = video
        self.need_keyframe = video
        self.dropped_waiting = 0
        self.dropped_overflow = 0

    def admit(self, key: bool, queued: int) -> int:
        if not self.video:
            if queued >= self.capacity:
                self.dropped_overflow += 1
                return DROP_OLDEST
            return ACCEPT
        if self.need_keyframe:
            if not key:
                self.dropped_waiting += 1
                return DROP
            self.need_keyframe = False
        if queued >= self.capacity:
            self.dropped_overflow += queued
            if key:
                return FLUSH_ACCEPT
            self.dropped_overflow += 1
            self.need_keyframe = True
            return FLUSH_DROP
        return ACCEPT

    def lost(self) -> None:
        """Upstream lost frames: wait for the next key frame (video)."""
        if self.video:
            self.need_keyframe = True


# -- Frames ------------------------------------------------------------------------------


class EncodedFrame:
    """One encoded frame as forwarded: a duck-typed ``av.Packet`` for aiortc's ``pack()``.

    ``bytes(frame)`` is the frame exactly as received; ``pts`` is in ``time_base`` units
    (the RTP clock, 0-based per publisher track).
    """

    __slots__ = ("data", "keyframe", "pts", "time_base")

    def __init__(self, data: bytes, pts: int, time_base: Fraction, keyframe: bool = False):
        self.data = data
        self.pts = pts
        self.time_base = time_base
        self.keyframe = keyframe

    def __bytes__(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"EncodedFrame({len(self.data)} bytes, pts={self.pts}, key={self.keyframe})"


# -- Ingress -----------------------------------------------------------------------------


class _IngressQueue:
    """Stands in for ``RTCRtpReceiver._RTCRtpReceiver__decoder_queue`` (a ``queue.Queue``).

    ``put((codec, JitterFrame))`` runs on the event loop (rtcrtpreceiver.py:567) and hands
    the frame to ``sink``; ``put(None)`` is the stop sentinel (rtcrtpreceiver.py:648).
    ``get()`` runs on aiortc's decoder thread (rtcrtpreceiver.py:64) and returns only the
    sentinel, so the thread idles without a decoder and then exits cleanly.
    """

    def __init__(
        self, sink: Callable[[Any, JitterFrame], None], on_stop: Callable[[], None]
    ) -> None:
        self._sink = sink
        self._on_stop = on_stop
        self._stopped = threading.Event()
        self.frames_to_decoder = 0  # frames handed to aiortc's decoder thread: always 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            if not self._stopped.is_set():
                self._stopped.set()
                try:
                    self._on_stop()
                except Exception:  # pragma: no cover - defensive
                    log.exception("router: stop handler failed")
            return
        codec, frame = item
        try:
            self._sink(codec, frame)
        except Exception:  # never raise inside aiortc's receive path
            log.exception("router: frame dropped")

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> None:
        self._stopped.wait()
        return None

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True


class _GapAwareJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, reporting when it skipped frames.

    aiortc drops buffered packets (so frames) only on the two paths that also set its PLI
    flag (jitterbuffer.py:40-56); ``on_gap`` is called then, before the next frame.
    """

    def __init__(self, capacity: int, on_gap: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(capacity, **kwargs)
        self._on_gap = on_gap

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        pli_flag, frame = super().add(packet)
        if pli_flag:
            self._on_gap()
        return pli_flag, frame


class Forwarder:
    """One published track: takes its frames from the ingress hook and fans them out.

    Runs entirely on the event loop; holds no queue of its own (each :class:`RelayTrack`
    has a bounded one).
    """

    def __init__(
        self,
        router: Router,
        stream_id: str,
        transceiver: RTCRtpTransceiver,
        *,
        track_id: str,
        media_ssrc: int | None,
    ) -> None:
        self.router = router
        self.stream_id = stream_id
        self.transceiver = transceiver
        self.receiver: RTCRtpReceiver = transceiver.receiver
        self.kind: str = transceiver.kind
        self.video = self.kind == "video"
        self.mid: str | None = transceiver.mid
        self.track_id = track_id
        self.media_ssrc = media_ssrc
        self.relays: set[RelayTrack] = set()
        self.ended = False
        # stats
        self.frames_received = 0
        self.bytes_received = 0
        self.keyframes_received = 0
        self.invalid_frames = 0
        self.gaps = 0
        self.keyframe_requests = 0  # requests made (subscribers' PLIs, joins, losses)
        self.plis_sent = 0  # PLIs actually sent to the publisher (rate-limited)
        self.width: int | None = None
        self.height: int | None = None
        self.sframe_kid: int | None = None
        self.sframe_ctr: int | None = None
        self.sframe_consistent = 0
        self.sframe_inconsistent = 0
        self.not_sframe = 0
        # PLI state
        self._pli_interval = router.pli_interval
        self._last_pli = -float("inf")
        self._pli_pending = False
        self._pli_task: asyncio.Task[None] | None = None
        self._codec_mime: str | None = None
        self._time_base = Fraction(1, 90000 if self.video else 48000)
        self._e2ee = router.e2ee
        self._ingress = _IngressQueue(self.on_frame, self._on_ingress_stop)
        self._install_hooks()

    # -- hooks -------------------------------------------------------------------------

    def _install_hooks(self) -> None:
        receiver = self.receiver
        for name in (_RECEIVER_QUEUE, _RECEIVER_THREAD, _RECEIVER_JITTER):
            if not hasattr(receiver, name):
                raise RuntimeError(f"aiortc RTCRtpReceiver lacks {name}: the router needs 1.16")
        if getattr(receiver, _RECEIVER_THREAD) is not None:
            raise RuntimeError("router: receiver already started; hooks must precede receive()")
        setattr(receiver, _RECEIVER_QUEUE, self._ingress)
        if self.video:
            buffer: JitterBuffer = _GapAwareJitterBuffer(512, self.on_gap, is_video=True)
        else:
            buffer = JitterBuffer(capacity=16, prefetch=0)
        setattr(receiver, _RECEIVER_JITTER, buffer)

    @property
    def frames_to_decoder(self) -> int:
        return self._ingress.frames_to_decoder

    # -- per frame (event loop) --------------------------------------------------------

    def on_frame(self, codec: Any, frame: JitterFrame) -> None:
        """One reassembled frame from the publisher (called by the ingress hook)."""
        data = frame.data
        mime = codec.mimeType
        if mime is not self._codec_mime:
            self._set_codec(codec)
        self.frames_received += 1
        self.bytes_received += len(data)
        self.router._frames_received += 1
        if not data:
            return
        key = False
        if self.video:
            cls = classify_vp8(data)
            if cls == VP8_INVALID:
                self.invalid_frames += 1
                self.on_gap()
                return
            if cls == VP8_KEY:
                key = True
                self._on_keyframe(data)
        if self._e2ee and (self.frames_received & 0xF == 1 or key):
            self._inspect_sframe(data)
        out = EncodedFrame(data, frame.timestamp, self._time_base, key)
        for relay in self.relays:
            relay.push(out, key)

    def _set_codec(self, codec: Any) -> None:
        mime = codec.mimeType
        allowed = "video/vp8" if self.video else "audio/opus"
        if mime.lower() != allowed:  # cannot happen: codecs are pinned at publish()
            raise CodecError(f"router: {mime} frames on a {allowed} track")
        self._codec_mime = mime
        self._time_base = Fraction(1, codec.clockRate)

    def _on_keyframe(self, data: bytes) -> None:
        self.keyframes_received += 1
        if self.width is None or (data[6] | data[7] << 8) & 0x3FFF != self.width:
            header = parse_vp8_frame_header(data)
            self.width, self.height = header.width, header.height

    def _inspect_sframe(self, data: bytes) -> None:
        # Diagnostics only, sampled (every 16th frame and every key frame): reads the
        # clear prefix length and the SFrame header after it.  Any byte parses as an
        # SFrame header, so "consistent" (same KID as the previous sample, higher CTR) is
        # the signal that the publisher really encrypts; plaintext gives random KIDs.
        try:
            n = clear_prefix_length("vp8" if self.video else "opus", data)
        except CodecError:
            self.not_sframe += 1
            return
        header = parse_sframe_header(data, n)
        if header is None or len(data) < n + header[2] + 4:
            self.not_sframe += 1
            return
        kid, ctr, _ = header
        if kid == self.sframe_kid and self.sframe_ctr is not None and ctr > self.sframe_ctr:
            self.sframe_consistent += 1
        else:
            self.sframe_inconsistent += 1
        self.sframe_kid, self.sframe_ctr = kid, ctr

    def on_gap(self) -> None:
        """Upstream frames were lost: every subscriber waits for a key frame."""
        if not self.video:
            return
        self.gaps += 1
        waiting = False
        for relay in self.relays:
            relay.gate.lost()
            waiting = True
        if waiting:
            self.request_keyframe()

    def _on_ingress_stop(self) -> None:
        # Called when aiortc stops the receiver (BYE, disconnect, close): synchronously
        # inside __stop_decoder, so defer the work.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_soon(self.router._ingress_ended, self)

    # -- subscribers -------------------------------------------------------------------

    def attach(self, relay: RelayTrack) -> None:
        if self.ended:
            relay.end()
            return
        self.relays.add(relay)
        if self.video:
            self.request_keyframe()

    def detach(self, relay: RelayTrack) -> None:
        self.relays.discard(relay)

    # -- key frames --------------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Ask the publisher for a key frame: at most one PLI per ``pli_interval``."""
        if not self.video or self.ended:
            return
        self.keyframe_requests += 1
        self.router._keyframe_requests += 1
        self._pli_pending = True
        if self._pli_task is None or self._pli_task.done():
            self._pli_task = asyncio.ensure_future(self._pli_loop())

    def _waiting(self) -> bool:
        return any(relay.gate.need_keyframe for relay in self.relays)

    async def _pli_loop(self) -> None:
        tries = 0
        interval = self._pli_interval
        try:
            while not self.ended and (self._pli_pending or self._waiting()):
                wait = self._last_pli + interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                if not self._pli_pending:
                    # A subscriber still waits for the key frame asked for earlier.
                    tries += 1
                    if tries >= PLI_FAST_RETRIES:
                        interval = min(interval * 2, max(PLI_MAX_INTERVAL, interval))
                else:
                    tries = 0
                    interval = self._pli_interval
                self._pli_pending = False
                self._last_pli = time.monotonic()
                await self._send_pli()
        except asyncio.CancelledError:
            pass

    async def _send_pli(self) -> None:
        ssrc = self.media_ssrc
        if ssrc is None:
            # No a=ssrc in the offer: use what has been received (may include RTX).
            sources = self.receiver.getSynchronizationSources()
            if not sources:
                return
            ssrc = sources[0].source
        self.plis_sent += 1
        try:
            # rtcrtpreceiver.py:630; catches ConnectionError itself (:616)
            await self.receiver._send_rtcp_pli(ssrc)
        except Exception:  # pragma: no cover - defensive
            log.exception("router: PLI to publisher failed")

    # -- end ---------------------------------------------------------------------------

    def close(self) -> None:
        if self.ended:
            return
        self.ended = True
        for relay in list(self.relays):
            relay.end()
        self.relays.clear()
        if self._pli_task is not None:
            self._pli_task.cancel()

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "kind": self.kind,
            "mid": self.mid,
            "track_id": self.track_id,
            "media_ssrc": self.media_ssrc,
            "frames_received": self.frames_received,
            "bytes_received": self.bytes_received,
            "subscribers": len(self.relays),
            "frames_decoded": self.frames_to_decoder,
            "ended": self.ended,
        }
        if self.video:
            stats.update(
                keyframes_received=self.keyframes_received,
                invalid_frames=self.invalid_frames,
                gaps=self.gaps,
                keyframe_requests=self.keyframe_requests,
                plis_sent=self.plis_sent,
                width=self.width,
                height=self.height,
            )
        if self._e2ee:
            stats.update(
                sframe_kid=self.sframe_kid,
                sframe_ctr=self.sframe_ctr,
                sframe_samples_consistent=self.sframe_consistent,
                sframe_samples_inconsistent=self.sframe_inconsistent,
                not_sframe=self.not_sframe,
            )
        return stats


# -- Egress ------------------------------------------------------------------------------


class RelayTrack(MediaStreamTrack):
    """What one subscriber receives of one published track: a bounded queue of
    :class:`EncodedFrame` objects, gated by a :class:`FrameGate`.

    ``recv()`` is called by the router's ``RTCRtpSender`` for this subscriber; the first
    call attaches the track to its :class:`Forwarder` (which asks for a key frame).
    """

    def __init__(self, forwarder: Forwarder, subscription_id: str, capacity: int) -> None:
        super().__init__()
        self.kind = forwarder.kind
        self._id = forwarder.track_id
        self.forwarder = forwarder
        self.subscription_id = subscription_id
        self.capacity = capacity
        self.gate = FrameGate(capacity, forwarder.video)
        self._queue: asyncio.Queue[EncodedFrame | None] = asyncio.Queue(maxsize=capacity + 1)
        self._attached = False
        self._ended = False
        self._counters = forwarder.router
        # stats
        self.frames_forwarded = 0
        self.bytes_forwarded = 0
        self.keyframes_forwarded = 0
        self.flushes = 0
        self.max_queued = 0
        self.plis_received = 0
        self.first_frame_at: float | None = None
        self.attached_at: float | None = None

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def frames_dropped(self) -> int:
        return self.gate.dropped_overflow + self.gate.dropped_waiting

    # -- producer side (forwarder, event loop) -----------------------------------------

    def push(self, frame: EncodedFrame, key: bool) -> None:
        q = self._queue
        queued = q.qsize()
        action = self.gate.admit(key, queued)
        if action == ACCEPT:
            q.put_nowait(frame)
            if queued >= self.max_queued:
                self.max_queued = queued + 1
        elif action == DROP:
            pass
        elif action == DROP_OLDEST:
            q.get_nowait()
            q.put_nowait(frame)
        else:
            self._flush()
            self.flushes += 1
            if action == FLUSH_ACCEPT:
                q.put_nowait(frame)
            else:
                self.forwarder.request_keyframe()

    def _flush(self) -> None:
        q = self._queue
        while not q.empty():
            q.get_nowait()

    def on_subscriber_pli(self) -> None:
        """Replaces the router sender's ``_send_keyframe`` (rtcrtpsender.py:351)."""
        self.plis_received += 1
        self.forwarder.request_keyframe()

    # -- consumer side (aiortc's sender) -----------------------------------------------

    async def recv(self) -> EncodedFrame:  # type: ignore[override]
        if self.readyState != "live" or self._ended:
            raise MediaStreamError
        if not self._attached:
            self._attached = True
            self.attached_at = time.monotonic()
            self.forwarder.attach(self)
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        n = len(frame.data)
        self.frames_forwarded += 1
        self.bytes_forwarded += n
        if frame.keyframe:
            self.keyframes_forwarded += 1
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
        counters = self._counters
        counters._frames_forwarded += 1
        counters._bytes_forwarded += n
        return frame

    def end(self) -> None:
        """No more frames: the sender's ``recv()`` raises ``MediaStreamError``."""
        if self._ended:
            return
        self._ended = True
        self._counters._frames_dropped_closed += self.frames_dropped
        self._flush()
        self._queue.put_nowait(None)

    def stop(self) -> None:
        self.forwarder.detach(self)
        if not self._ended:
            self._ended = True
            self._counters._frames_dropped_closed += self.frames_dropped
        super().stop()

    def stats(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "track_id": self.id,
            "frames_forwarded": self.frames_forwarded,
            "bytes_forwarded": self.bytes_forwarded,
            "keyframes_forwarded": self.keyframes_forwarded,
            "frames_dropped": self.frames_dropped,
            "dropped_overflow": self.gate.dropped_overflow,
            "dropped_waiting_keyframe": self.gate.dropped_waiting,
            "flushes": self.flushes,
            "queued": self.queued,
            "max_queued": self.max_queued,
            "queue_frames": self.capacity,
            "waiting_keyframe": self.gate.need_keyframe,
            "plis_received": self.plis_received,
            "first_frame_delay": (
                None
                if self.first_frame_at is None or self.attached_at is None
                else self.first_frame_at - self.attached_at
            ),
        }


class _Vp8Packer(Vp8Encoder):
    """aiortc's VP8 packetizer (``pack()``, vpx.py:239) without an encoder."""

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise RuntimeError("the router never encodes media")


class _OpusPacker(Encoder):
    """``OpusEncoder.pack()`` (opus.py:75) without creating a libopus encoder."""

    _TIME_BASE = Fraction(1, 48000)

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise RuntimeError("the router never encodes media")

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        return [bytes(packet)], convert_timebase(packet.pts, packet.time_base, self._TIME_BASE)


# -- SDP helpers -------------------------------------------------------------------------

_ALLOWED = {"video": "video/vp8", "audio": "audio/opus"}


def _preferences(kind: str) -> list[RTCRtpCodecCapability]:
    wanted = {_ALLOWED[kind], "video/rtx"} if kind == "video" else {_ALLOWED[kind]}
    caps = RTCRtpSender.getCapabilities(kind).codecs
    return [c for c in caps if c.mimeType.lower() in wanted]


def _check_codecs(description: aiortc_sdp.SessionDescription, what: str, e2ee: bool) -> None:
    for media in description.media:
        if media.kind not in _ALLOWED:
            continue
        offered = [c.mimeType for c in media.rtp.codecs]
        if not any(m.lower() == _ALLOWED[media.kind] for m in offered):
            reason = (
                "an end-to-end encrypted session allows only VP8 video and Opus audio"
                if e2ee
                else "this router forwards only VP8 video and Opus audio (it never transcodes)"
            )
            raise CodecNotAllowed(
                f"{what}: {media.kind} m-line (mid {media.rtp.muxId!r}) offers "
                f"{', '.join(offered) or 'no codecs'}; {reason}"
            )


def _media_ssrc(media: aiortc_sdp.MediaDescription) -> int | None:
    for group in media.ssrc_group:
        if group.semantic == "FID" and group.items:
            return int(group.items[0])
    if media.ssrc:
        return int(media.ssrc[0].ssrc)
    return None


# -- Router ------------------------------------------------------------------------------


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
    retry interval while a subscriber waits for a key frame.  ``queue_frames``: the
    capacity of each subscriber's per-track queue.
    """

    def __init__(
        self,
        *,
        e2ee: bool = True,
        pli_interval: float = 0.3,
        queue_frames: int = 64,
        rtc_configuration: RTCConfiguration | None = None,
    ) -> None:
        if queue_frames < 1:
            raise ValueError("queue_frames must be at least 1")
        if pli_interval <= 0:
            raise ValueError("pli_interval must be positive")
        self.e2ee = e2ee
        self.pli_interval = pli_interval
        self.queue_frames = queue_frames
        self.rtc_configuration = rtc_configuration
        self.on_stream_ended: Callable[[str, str], None] | None = None
        self.on_subscription_ended: Callable[[str, str, str], None] | None = None
        self._streams: dict[str, _Stream] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._closed = False
        self._tasks: set[asyncio.Future[Any]] = set()
        # totals (kept across ended streams/subscriptions)
        self._frames_received = 0
        self._frames_forwarded = 0
        self._bytes_forwarded = 0
        self._keyframe_requests = 0
        self._frames_dropped_closed = 0

    def _new_pc(self) -> RTCPeerConnection:
        return RTCPeerConnection(self.rtc_configuration)

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
        description = aiortc_sdp.SessionDescription.parse(offer.sdp)
        _check_codecs(description, f"stream {stream_id!r}", self.e2ee)
        media_av = [m for m in description.media if m.kind in _ALLOWED]
        if not media_av:
            raise ValueError(f"stream {stream_id!r}: the offer has no audio or video")

        pc = self._new_pc()
        stream = _Stream(stream_id, pc)
        self._streams[stream_id] = stream
        try:
            # One recvonly transceiver per m-line, codecs pinned, hooks installed: all
            # before setRemoteDescription binds them (see the module docstring).
            pending: list[tuple[RTCRtpTransceiver, aiortc_sdp.MediaDescription]] = []
            for media in media_av:
                transceiver = pc.addTransceiver(media.kind, direction="recvonly")
                transceiver.setCodecPreferences(_preferences(media.kind))
                pending.append((transceiver, media))
            await pc.setRemoteDescription(offer)
            for transceiver, media in pending:
                if transceiver.mid != media.rtp.muxId:  # pragma: no cover - aiortc change
                    raise RuntimeError("router: transceiver/m-line binding changed in aiortc")
                if media.direction not in ("sendonly", "sendrecv"):
                    continue  # nothing published on this m-line
                track_id = description.webrtc_track_id(media) or f"{stream_id}:{media.rtp.muxId}"
                stream.forwarders.append(
                    Forwarder(
                        self,
                        stream_id,
                        transceiver,
                        track_id=track_id,
                        media_ssrc=_media_ssrc(media),
                    )
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
                relay = RelayTrack(forwarder, subscription_id, self.queue_frames)
                transceiver = pc.addTransceiver(relay, direction="sendonly")
                transceiver.setCodecPreferences(_preferences(forwarder.kind))
                sender = transceiver.sender
                sender._stream_id = stream_id  # a=msid:<stream_id> <track id>
                # Preset the private encoder (rtcrtpsender.py:104, :308-309): pack only.
                setattr(sender, _SENDER_ENCODER, _Vp8Packer() if forwarder.video else _OpusPacker())
                if forwarder.video:
                    # Called on a subscriber's PLI/FIR (rtcrtpsender.py:277-281).
                    sender._send_keyframe = relay.on_subscriber_pli  # type: ignore[method-assign]
                sub.relays.append(relay)
            await pc.setLocalDescription(await pc.createOffer())
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
        description = aiortc_sdp.SessionDescription.parse(answer.sdp)
        _check_codecs(description, f"subscription {subscription_id!r}", self.e2ee)
        await sub.pc.setRemoteDescription(answer)

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
            if not r._ended
        )
        decoded = sum(f.frames_to_decoder for s in self._streams.values() for f in s.forwarders)
        return {
            "e2ee": self.e2ee,
            "frames_received": self._frames_received,
            "frames_forwarded": self._frames_forwarded,
            "bytes_forwarded": self._bytes_forwarded,
            "frames_dropped": self._frames_dropped_closed + live_dropped,
            "keyframe_requests": self._keyframe_requests,
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
