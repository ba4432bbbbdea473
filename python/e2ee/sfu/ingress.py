"""Ingress: a publisher's frames taken from aiortc without decoding, one
:class:`Forwarder` per published track.

Frames without a decoder
    Each receiver's decoder queue is replaced (:func:`e2ee.rtc.compat.set_decoder_queue`)
    by :class:`_IngressQueue`, which only waits for aiortc's stop sentinel: the decoder
    thread that ``receive()`` starts (rtcrtpreceiver.py:406-416, after DTLS is up, well
    after ``publish()`` installed the hooks) blocks in its ``get()`` until the ``None``
    sentinel (rtcrtpreceiver.py:643-648) and then ends the (unused) remote track as
    usual.  No frame ever reaches that queue, so ``decoder_worker``
    (rtcrtpreceiver.py:54) never calls ``get_decoder``/``decode``:
    ``stats()["frames_decoded"]`` counts frames put there, 0 by construction.  This is
    per receiver: no process-wide patch of ``get_decoder``/``CODECS``, so a client in
    the same process is unaffected.

Frames on their last packet
    The receiver's jitter buffer is replaced (:func:`e2ee.rtc.compat.set_jitter_buffer`)
    by an :mod:`e2ee.sfu.assembler`, which hands each frame to :meth:`Forwarder.on_frame`
    the moment its last packet is in (aiortc's buffer waits for the next frame: 33 ms of
    video latency at 30 fps, 20 ms of audio) and reports upstream loss that NACKs did
    not repair within ``nack_wait`` to :meth:`Forwarder.on_gap`.  Then every subscriber
    of the track waits for the next key frame: a receiver cannot decode past a lost
    delta frame.  aiortc's receiver NACKs a hole once, when the packet after it comes;
    the forwarder runs the assembler's timers (``poll``) and sends its NACKs: again
    when a repair is two round trips late, and for a frame's last packet as soon as it
    is late (:mod:`e2ee.sfu.assembler`).

Per frame the forwarder reads only the clear VP8 frame tag (:mod:`e2ee.sfu.policy`) and,
in an E2EE router, samples the SFrame header after the clear prefix (RFC 9605 §4.3: KID
and CTR, for stats only); it relays the packets' payloads unchanged to its subscribers'
:class:`e2ee.sfu.egress.RelayTrack` objects, synchronously: no queue, no task switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiortc import RTCRtpReceiver, RTCRtpTransceiver

from e2ee.errors import CodecError
from e2ee.rtc import compat
from e2ee.sfu.assembler import VideoAssembler
from e2ee.sfu.audio_assembler import AudioAssembler
from e2ee.sfu.frames import RelayFrame, Totals
from e2ee.sfu.keyframes import PliScheduler
from e2ee.sfu.policy import VP8_INVALID, VP8_KEY, FrameGate, classify_vp8
from e2ee.wire.codecs import clear_prefix_length
from e2ee.wire.sframe_header import parse_sframe_header
from e2ee.wire.vp8 import parse_vp8_frame_header, vp8_descriptor_size

__all__ = ["Forwarder", "Subscriber"]

log = logging.getLogger(__name__)


#: Seconds between 1900 (NTP era 0) and 1970 (RFC 5905 §6).
_NTP_OFFSET = 2208988800
#: Clear bytes of a frame the forwarder reads: the VP8 key-frame header (10) or Opus TOC,
#: then an SFrame header (at most 17) and enough of what follows to check it.
_HEAD = 64


class _IngressQueue:
    """Stands in for the receiver's decoder queue (a ``queue.Queue``).

    ``put(None)`` is the stop sentinel (rtcrtpreceiver.py:648), run on the event loop;
    no frame is ever put (the assembler returns none to aiortc).  ``get()`` runs on
    aiortc's decoder thread (rtcrtpreceiver.py:64) and returns only the sentinel, so the
    thread idles without a decoder and then exits cleanly.
    """

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self._on_stop = on_stop
        self._stopped = threading.Event()
        self.frames_to_decoder = 0  # frames handed to aiortc's decoder thread: always 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            self.frames_to_decoder += 1  # would show in stats(); the assembler returns none
            log.error("router: aiortc queued a frame for decoding; dropped")
            return
        if not self._stopped.is_set():
            self._stopped.set()
            try:
                self._on_stop()
            except Exception:  # pragma: no cover - defensive
                log.exception("router: stop handler failed")

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> None:
        self._stopped.wait()
        return None

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True


class Subscriber(Protocol):
    """What a :class:`Forwarder` fans out to (an :class:`e2ee.sfu.egress.RelayTrack`)."""

    @property
    def gate(self) -> FrameGate: ...

    def send(self, frame: RelayFrame) -> None: ...

    def end(self) -> None: ...


class Forwarder:
    """One published track: takes its frames from the ingress hook and fans them out.

    Runs entirely on the event loop and holds no queue: each frame is relayed to every
    subscriber before the packet that completed it returns.  ``totals`` are the router's
    counters; ``on_ended(forwarder)`` runs on the event loop once aiortc stopped the
    receiver (BYE, disconnect, close).  ``nack_wait``: how long a missing video packet
    may hold back frames before they are given up (:mod:`e2ee.sfu.assembler`).
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
        nack_wait: float = 0.1,
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
        # Sends each frame to all relays in one go (e2ee.sfu.egress_fanout.FanoutGroup).
        self.fan_out: Any = None
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
        self._e2ee = e2ee
        self._ingress = _IngressQueue(self._on_ingress_stop)
        self.assembler: VideoAssembler | AudioAssembler
        self._timer: asyncio.TimerHandle | None = None  # the assembler's next poll()
        self._timer_at = 0.0
        self._nacks: set[asyncio.Task[None]] = set()
        if self.video:
            self.assembler = VideoAssembler(
                self.on_frame,
                self.on_gap,
                nack_wait=nack_wait,
                nack=self._send_nack,
                schedule=self._schedule_poll,
            )
        else:
            self.assembler = AudioAssembler(self.on_frame)
        self._install_hooks()

    # -- hooks -------------------------------------------------------------------------

    def _install_hooks(self) -> None:
        receiver = self.receiver
        if compat.receiver_started(receiver):
            raise RuntimeError("router: receiver already started; hooks must precede receive()")
        compat.set_decoder_queue(receiver, self._ingress)
        compat.set_jitter_buffer(receiver, self.assembler)

    @property
    def frames_to_decoder(self) -> int:
        return self._ingress.frames_to_decoder

    # -- per frame (event loop) --------------------------------------------------------

    def on_frame(self, payloads: list[bytes], timestamp: int) -> None:
        """One whole frame from the publisher, its RTP payloads in order (called by the
        assembler on the frame's last packet)."""
        self.frames_received += 1
        self.totals.frames_received += 1
        first = payloads[0]
        key = False
        if self.video:
            offset = vp8_descriptor_size(first)
            head = first[offset : offset + _HEAD] if offset > 0 else b""
            cls = classify_vp8(head)
            if cls == VP8_INVALID:
                self.invalid_frames += 1
                self.on_gap()
                return
            if cls == VP8_KEY:
                key = True
                self._on_keyframe(head)
        else:
            head = first[:_HEAD]
        frame = RelayFrame(payloads, timestamp, key, _ntp_now())
        self.bytes_received += frame.size
        if not frame.size:
            return
        if self._e2ee and (self.frames_received & 0xF == 1 or key):
            self._inspect_sframe(head)
        if self.fan_out is not None:
            self.fan_out.send(frame, self.relays)
        else:
            for relay in self.relays:
                relay.send(frame)

    def _on_keyframe(self, data: bytes) -> None:
        self.keyframes_received += 1
        if self.width is None or (data[6] | data[7] << 8) & 0x3FFF != self.width:
            header = parse_vp8_frame_header(data)
            self.width, self.height = header.width, header.height

    def _inspect_sframe(self, data: bytes) -> None:
        # Diagnostics only, sampled (every 16th frame and every key frame): reads the
        # clear prefix length and the SFrame header after it, in the frame's first bytes.
        # Any byte parses as an SFrame header, so "consistent" (same KID as the previous
        # sample, higher CTR) is the signal that the publisher really encrypts;
        # plaintext gives random KIDs.
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
        if self.fan_out is not None:
            self.fan_out.gap()  # no relay skips its policy until its next key frame
        if waiting:
            self.request_keyframe(urgent=True)

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

    def request_keyframe(self, *, urgent: bool = False) -> None:
        """Ask the publisher for a key frame: at most one PLI per ``pli_interval``, or
        per a third of it when ``urgent`` (an upstream loss froze the subscribers)."""
        if not self.video or self.ended:
            return
        self.keyframe_requests += 1
        self.totals.keyframe_requests += 1
        self._pli.request(urgent=urgent)

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

    # -- NACKs and the assembler's timers (rules: e2ee.sfu.assembler) ------------------

    def _schedule_poll(self, when: float) -> None:
        """Run the assembler's ``poll()`` at ``when`` (time.monotonic): one pending
        timer, moved only to an earlier time."""
        timer = self._timer
        if timer is not None:
            if self._timer_at <= when:
                return
            timer.cancel()
        self._timer_at = when
        delay = max(0.0, when - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._poll)

    def _poll(self) -> None:
        self._timer = None
        if not self.ended and isinstance(self.assembler, VideoAssembler):
            self.assembler.poll()

    def _send_nack(self, lost: list[int]) -> None:
        """NACK ``lost`` again (aiortc's receiver sends only the first NACK of a hole)."""
        ssrc = self.assembler.ssrc if isinstance(self.assembler, VideoAssembler) else None
        if ssrc is None or self.ended:
            return
        task = asyncio.ensure_future(compat.send_nack(self.receiver, ssrc, lost))
        self._nacks.add(task)
        task.add_done_callback(self._nack_sent)

    def _nack_sent(self, task: asyncio.Task[None]) -> None:
        self._nacks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover
            log.error("router: NACK to publisher failed: %s", task.exception())

    # -- end ---------------------------------------------------------------------------

    def close(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
            "packets_received": self.assembler.packets,
            "late_packets": self.assembler.late_packets,
            "frames_decoded": self.frames_to_decoder,
            "ended": self.ended,
        }
        if isinstance(self.assembler, VideoAssembler):
            rtt = self.assembler.nack_rtt
            stats.update(
                nacks_sent=self.assembler.nacks_sent,
                nack_repairs=self.assembler.nack_repairs,
                tail_nacks=self.assembler.tail_nacks,
                nack_rtt_ms=None if rtt is None else round(rtt * 1000, 2),
                tail_wait_ms=round(self.assembler.tail_wait * 1000, 2),
            )
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


def _ntp_now() -> int:
    """Now in the 64-bit NTP format (RFC 3550 §4: 32.32 fixed point seconds since 1900)."""
    return int((time.time() + _NTP_OFFSET) * 4294967296.0)
