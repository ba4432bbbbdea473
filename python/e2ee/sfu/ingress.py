"""Ingress: a publisher's frames taken from aiortc without decoding, one
:class:`Forwarder` per published track.

Frames without a decoder
    Each receiver's decoder queue is replaced (:func:`e2ee.rtc.compat.set_decoder_queue`)
    by :class:`_IngressQueue`.  aiortc's receive path calls ``put((codec, JitterFrame))``
    on the event loop once per reassembled frame (rtcrtpreceiver.py:567): the proxy hands
    the frame straight to the track's :class:`Forwarder` (no thread hop, no decoder).  The
    decoder thread that ``receive()`` starts (rtcrtpreceiver.py:406-416, called when the
    peer connection connects, rtcpeerconnection.py:1091, i.e. after DTLS is up, well after
    ``publish()`` installed the proxy) blocks in the proxy's ``get()`` until the ``None``
    stop sentinel (rtcrtpreceiver.py:643-648) and then ends the (unused) remote track as
    usual.  ``get()`` never returns a frame, so ``decoder_worker`` (rtcrtpreceiver.py:54)
    never calls ``get_decoder``/``decode``.  ``stats()["frames_decoded"]`` is the number
    of frames handed to that thread, the receiver's only path to a decoder: 0 by
    construction.  This is per receiver: no process-wide patch of
    ``get_decoder``/``CODECS``, so a client in the same process is unaffected.

Jitter buffers
    The video receiver's jitter buffer (rtcrtpreceiver.py:299, used at :551) is replaced
    (:func:`e2ee.rtc.compat.set_jitter_buffer`) by a subclass of aiortc's ``JitterBuffer``
    that reports frame loss: aiortc's buffer skips frames only on the paths where it also
    raises its PLI flag (jitterbuffer.py:40-56), so every upstream gap makes every
    subscriber of the track wait for the next key frame (the VP8 PictureID trap: aiortc's
    packetizer numbers frames contiguously per subscriber, so a receiver could not detect
    a missing delta).  The audio jitter buffer (rtcrtpreceiver.py:295, ``prefetch=4``) is
    replaced by one with ``prefetch=0``: a frame leaves as soon as the next one starts,
    cutting ~60 ms of audio latency (aiortc's known latency creep after audio loss, #543,
    is unchanged).

Per frame the forwarder reads only the clear VP8 frame tag (:mod:`e2ee.sfu.policy`) and,
in an E2EE router, samples the SFrame header after the clear prefix (RFC 9605 §4.3: KID
and CTR, for stats only); it fans the bytes out unchanged to its subscribers'
:class:`e2ee.sfu.egress.RelayTrack` queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Protocol

from aiortc import RTCRtpReceiver, RTCRtpTransceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame

from e2ee.errors import CodecError
from e2ee.rtc import compat
from e2ee.sfu.frames import EncodedFrame, Totals
from e2ee.sfu.keyframes import PliScheduler
from e2ee.sfu.policy import VP8_INVALID, VP8_KEY, FrameGate, classify_vp8
from e2ee.wire.codecs import clear_prefix_length
from e2ee.wire.sframe_header import parse_sframe_header
from e2ee.wire.vp8 import parse_vp8_frame_header

__all__ = ["Forwarder", "Subscriber"]

log = logging.getLogger(__name__)


class _IngressQueue:
    """Stands in for the receiver's decoder queue (a ``queue.Queue``).

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


class Subscriber(Protocol):
    """What a :class:`Forwarder` fans out to (an :class:`e2ee.sfu.egress.RelayTrack`)."""

    @property
    def gate(self) -> FrameGate: ...

    def push(self, frame: EncodedFrame, key: bool) -> None: ...

    def end(self) -> None: ...


class Forwarder:
    """One published track: takes its frames from the ingress hook and fans them out.

    Runs entirely on the event loop; holds no queue of its own (each subscriber has a
    bounded one).  ``totals`` are the router's counters; ``on_ended(forwarder)`` runs on
    the event loop once aiortc stopped the receiver (BYE, disconnect, close).
    """

    def __init__(
        self,
        stream_id: str,
        transceiver: RTCRtpTransceiver,
        *,
        track_id: str,
        media_ssrc: int | None,
        e2ee: bool,
        pli_interval: float,
        totals: Totals,
        on_ended: Callable[[Forwarder], None],
    ) -> None:
        self.stream_id = stream_id
        self.transceiver = transceiver
        self.receiver: RTCRtpReceiver = transceiver.receiver
        self.kind: str = transceiver.kind
        self.video = self.kind == "video"
        self.mid: str | None = transceiver.mid
        self.track_id = track_id
        self.media_ssrc = media_ssrc
        self.totals = totals
        self.relays: set[Subscriber] = set()
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
        self._pli = PliScheduler(pli_interval, self._send_pli, self._waiting)
        self._on_ended = on_ended
        self._codec_mime: str | None = None
        self._time_base = Fraction(1, 90000 if self.video else 48000)
        self._e2ee = e2ee
        self._ingress = _IngressQueue(self.on_frame, self._on_ingress_stop)
        self._install_hooks()

    # -- hooks -------------------------------------------------------------------------

    def _install_hooks(self) -> None:
        receiver = self.receiver
        if compat.receiver_started(receiver):
            raise RuntimeError("router: receiver already started; hooks must precede receive()")
        compat.set_decoder_queue(receiver, self._ingress)
        if self.video:
            buffer: JitterBuffer = _GapAwareJitterBuffer(512, self.on_gap, is_video=True)
        else:
            buffer = JitterBuffer(capacity=16, prefetch=0)
        compat.set_jitter_buffer(receiver, buffer)

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
        self.totals.frames_received += 1
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
        # inside its decoder shutdown, so defer the work.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_soon(self._on_ended, self)

    # -- subscribers -------------------------------------------------------------------

    def attach(self, relay: Subscriber) -> None:
        if self.ended:
            relay.end()
            return
        self.relays.add(relay)
        if self.video:
            self.request_keyframe()

    def detach(self, relay: Subscriber) -> None:
        self.relays.discard(relay)

    # -- key frames (scheduling: e2ee.sfu.keyframes) -----------------------------------

    def request_keyframe(self) -> None:
        """Ask the publisher for a key frame: at most one PLI per ``pli_interval``."""
        if not self.video or self.ended:
            return
        self.keyframe_requests += 1
        self.totals.keyframe_requests += 1
        self._pli.request()

    def _waiting(self) -> bool:
        return any(relay.gate.need_keyframe for relay in self.relays)

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
            await compat.send_pli(self.receiver, ssrc)
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
        self._pli.close()

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
