"""Egress: what one subscriber receives of one published track, and how aiortc sends it
without encoding.

Per subscriber and track: :class:`RelayTrack`
    A ``MediaStreamTrack`` with a bounded ``asyncio.Queue`` (``queue_frames``).  It
    attaches to its :class:`e2ee.sfu.ingress.Forwarder` when the subscriber's sender first
    pulls a frame (so no stale frames pile up while the subscriber connects), starts only
    on a VP8 key frame and asks the publisher for one (PLI).  What is queued, dropped or
    flushed is decided by a :class:`e2ee.sfu.policy.FrameGate`.

Packetizing without an encoder
    The relay track yields :class:`e2ee.sfu.frames.EncodedFrame` objects (duck-typed
    ``av.Packet``: ``bytes()``, ``pts``, ``time_base``).  aiortc's sender sees a
    non-``Frame`` and calls ``encoder.pack()`` (rtcrtpsender.py:321-323), which only
    packetizes.  :func:`prepare_sender` presets the sender's encoder
    (:func:`e2ee.rtc.compat.set_sender_encoder`) to :class:`_Vp8Packer` /
    :class:`_OpusPacker`, which refuse to encode, and routes the subscriber's PLI/FIR
    (:func:`e2ee.rtc.compat.hook_send_keyframe`) to :meth:`RelayTrack.on_subscriber_pli`.
    Only the RTP layer (SSRC, sequence numbers, timestamp origin, VP8 PictureID) is
    rewritten per subscriber, by aiortc's packetizer; NACKs are served from the sender's
    packet history, SR/BYE by aiortc.
"""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction
from typing import Any

from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc.codecs.base import Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError, convert_timebase

from e2ee.rtc import compat
from e2ee.sfu.frames import EncodedFrame
from e2ee.sfu.ingress import Forwarder
from e2ee.sfu.policy import ACCEPT, DROP, DROP_OLDEST, FLUSH_ACCEPT, FrameGate

__all__ = ["RelayTrack", "prepare_sender"]


class RelayTrack(MediaStreamTrack):
    """What one subscriber receives of one published track: a bounded queue of
    :class:`EncodedFrame` objects, gated by a :class:`FrameGate`.

    ``recv()`` is called by the router's ``RTCRtpSender`` for this subscriber; the first
    call attaches the track to its :class:`Forwarder` (which asks for a key frame).
    """

    def __init__(self, forwarder: Forwarder, subscription_id: str, capacity: int) -> None:
        super().__init__()
        self.kind = forwarder.kind
        self.forwarder = forwarder
        self.subscription_id = subscription_id
        self.capacity = capacity
        self.gate = FrameGate(capacity, forwarder.video)
        self._queue: asyncio.Queue[EncodedFrame | None] = asyncio.Queue(maxsize=capacity + 1)
        self._attached = False
        self._ended = False
        self._totals = forwarder.totals
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
    def id(self) -> str:
        """The published track's id (``a=msid:<stream id> <track id>``)."""
        return self.forwarder.track_id

    @property
    def ended(self) -> bool:
        """No more frames will be forwarded (:meth:`end` or :meth:`stop` ran)."""
        return self._ended

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
        """A PLI/FIR from the subscriber (the sender's key frame hook, see
        :func:`prepare_sender`)."""
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
        totals = self._totals
        totals.frames_forwarded += 1
        totals.bytes_forwarded += n
        return frame

    def end(self) -> None:
        """No more frames: the sender's ``recv()`` raises ``MediaStreamError``."""
        if self._ended:
            return
        self._ended = True
        self._totals.frames_dropped_closed += self.frames_dropped
        self._flush()
        self._queue.put_nowait(None)

    def stop(self) -> None:
        self.forwarder.detach(self)
        if not self._ended:
            self._ended = True
            self._totals.frames_dropped_closed += self.frames_dropped
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


def prepare_sender(sender: RTCRtpSender, relay: RelayTrack, stream_id: str) -> None:
    """Make the router's ``sender`` of ``relay`` pack without encoding, before its first
    frame: announce ``stream_id`` (``a=msid``), preset the packer, and (video) route the
    subscriber's PLI/FIR to ``relay``."""
    video = relay.forwarder.video
    compat.set_sender_stream_id(sender, stream_id)
    compat.set_sender_encoder(sender, _Vp8Packer() if video else _OpusPacker())
    if video:
        compat.hook_send_keyframe(sender, relay.on_subscriber_pli)
