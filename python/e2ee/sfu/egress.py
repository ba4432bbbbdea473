"""Egress: what one subscriber receives of one published track, relayed packet by packet.

Per subscriber and track: :class:`RelayTrack`
    A ``MediaStreamTrack`` that the router adds to the subscriber's peer connection (one
    ``sendonly`` transceiver: ``a=msid``, codec, SSRC, DTLS and RTCP stay aiortc's).  It
    attaches to its :class:`e2ee.sfu.ingress.Forwarder` when the sender starts, i.e. once
    DTLS is up (so no stale frames go out while the subscriber connects), and from then
    on each whole frame reaches it through the forwarder's
    :class:`e2ee.sfu.egress_fanout.FanoutGroup`.  A track starts only on a VP8 key frame
    and asks the publisher for one (PLI); what is sent or dropped is decided by a
    :class:`e2ee.sfu.policy.FrameGate`, against this subscriber's own send backlog
    (:meth:`RelayTrack.admit`).

Relaying without repacketizing
    The publisher's RTP payloads (VP8 payload descriptor with its PictureID, RFC 7741
    §4.2, or one Opus frame) go out unchanged; per subscriber only the RTP header is
    written (RFC 3550 §5.1): this sender's SSRC and payload type, consecutive sequence
    numbers (frames this subscriber skips leave no gap it would NACK), the publisher's
    timestamp plus a random offset, the marker bit, and the one-byte header extensions
    (RFC 8285 §4.2) ``mid`` and ``abs-send-time``; then SRTP with the keys of the
    subscriber's DTLS transport (:func:`e2ee.rtc.srtp.rust_sender`, the same keys as
    aiortc's session, or aiortc's own libsrtp session where there is none), and the
    packets go to the ICE pair's socket synchronously (:func:`e2ee.rtc.compat.rtp_path`):
    no queue, no task switch, no ``RtpPacket`` object.  With the Rust sender on a
    selector loop, the relay is a leg of the track's Rust fan-out (one call per frame for
    all subscribers: :mod:`e2ee.sfu.egress_fanout`), which holds its header state and
    history from then on.  aiortc's per-frame path (``track.recv()`` then
    ``encoder.pack()``) is never used: :meth:`RelayTrack.recv` only waits for the end.
    NACKs (RFC 4585 §6.2.1) are answered from the last :data:`HISTORY` protected packets,
    resent as they were (never protected again); the sender's RTCP SR counts what was
    relayed (:func:`e2ee.rtc.compat.note_rtp_sent`, at most every
    :data:`SR_NOTE_INTERVAL` per relay: the counts add up, the NTP/RTP timestamp pair is
    the last noted frame's, RFC 3550 §6.4.1).  ``stats()`` says which SRTP backend a
    relay uses and counts packets by each.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc.codecs.base import Encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpSendParameters

from e2ee.rtc import compat, srtp, udp
from e2ee.sfu.egress_fanout import SR_NOTE_INTERVAL, FanoutGroup
from e2ee.sfu.frames import RelayFrame
from e2ee.sfu.ingress import Forwarder
from e2ee.sfu.policy import ACCEPT, DROP, DROP_OLDEST, FLUSH_ACCEPT, FrameGate

__all__ = ["HISTORY", "SR_NOTE_INTERVAL", "RelayTrack", "prepare_sender"]

log = logging.getLogger(__name__)

#: Protected packets kept per relay for NACKs: ~2 s of 1 Mbit/s video.
HISTORY = 256
#: Send backlog (bytes waiting in the socket's user-space buffer) counted as one packet.
_PACKET_BYTES = 1200
_SR_NOTE_NTP = int(SR_NOTE_INTERVAL * (1 << 32))  # in 64-bit NTP format (RFC 3550 §4)

_MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
_ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


class RelayTrack(MediaStreamTrack):
    """What one subscriber receives of one published track (see the module docs).

    ``capacity``: this subscriber's send backlog budget, in packets; past it, video
    waits for the next key frame and audio drops frames.
    """

    def __init__(self, forwarder: Forwarder, subscription_id: str, capacity: int) -> None:
        super().__init__()
        self.kind = forwarder.kind
        self.forwarder = forwarder
        self.subscription_id = subscription_id
        self.capacity = capacity
        self.gate = FrameGate(capacity, forwarder.video)
        self.totals = forwarder.totals
        self._group = _group(forwarder)
        self._sender: RTCRtpSender | None = None
        self._attached = False
        self._ended = False
        self._end_waiter: asyncio.Future[None] | None = None
        # The RTP header of this subscriber's stream (set by _configure, from send()).
        self._configured = False
        self.b0 = 0x80
        self.payload_type = 0
        self.media_ssrc = 0
        self.next_seq = secrets.randbelow(1 << 16)  # while the relay has no fan-out leg
        self.ts_offset = secrets.randbelow(1 << 32)
        self._ext_head = b""  # one-byte extension block up to the abs-send-time value
        self._ext_pad = b""
        self._ast_id = 0
        self._ext_fixed = b""  # the whole block when it has no abs-send-time
        self.history: list[tuple[int, bytes] | None] = [None] * HISTORY  # without a leg
        self.path: compat.RtpPath | None = None
        self.rust: Any = None  # e2ee._srtp.SrtpSender of this transport, if any
        self.leg: int | None = None  # this relay in the forwarder's Rust fan-out
        # RTCP SR counts not yet noted on the sender (see SR_NOTE_INTERVAL).
        self._sr_octets = 0
        self._sr_packets = 0
        self._sr_frame: RelayFrame | None = None  # the last frame relayed
        self._sr_due = 0  # NTP time (64-bit format) of the next note
        # stats (the counts of frames relayed while the group's policy is steady are the
        # group's until it folds them in: read them through the properties)
        self._frames = 0
        self._bytes = 0
        self._packets = 0
        self._keyframes = 0
        self.flushes = 0
        self.max_backlog = 0
        self.plis_received = 0
        self.nacks_received = 0
        self.retransmissions = 0
        self.frames_unsent = 0  # no path to the wire yet (or any more)
        self.packets_libsrtp = 0  # protected by aiortc's libsrtp session
        self.packets_not_direct = 0  # by the Rust sender, written through asyncio
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
    def frames_forwarded(self) -> int:
        self._group.catch_up(self)
        return self._frames

    @property
    def packets_forwarded(self) -> int:
        self._group.catch_up(self)
        return self._packets

    @property
    def bytes_forwarded(self) -> int:
        self._group.catch_up(self)
        return self._bytes

    @property
    def keyframes_forwarded(self) -> int:
        self._group.catch_up(self)
        return self._keyframes

    @property
    def frames_dropped(self) -> int:
        return self.gate.dropped_overflow + self.gate.dropped_waiting

    @property
    def packets_rust(self) -> int:
        """Packets protected by the Rust sender."""
        return self.packets_forwarded - self.packets_libsrtp

    @property
    def packets_mmsg(self) -> int:
        """Packets the Rust fan-out wrote itself (``sendmmsg``, GSO)."""
        return self.packets_rust - self.packets_not_direct

    def backlog(self) -> int:
        """Packets this subscriber's socket has not yet written (its user-space buffer)."""
        path = self.path
        if path is None:
            return 0
        if self.leg is not None:
            return udp.buffered_bytes(path[1]) // _PACKET_BYTES
        transport: Any = path[1]
        return int(transport.get_write_buffer_size()) // _PACKET_BYTES

    # -- set-up (prepare_sender, the sender's send()) ----------------------------------

    def _bind(self, sender: RTCRtpSender) -> None:
        self._sender = sender
        self.media_ssrc = compat.sender_ssrc(sender)

    def _configure(self, parameters: RTCRtpSendParameters) -> None:
        """The negotiated payload type and header extension ids (RFC 8285 §5)."""
        pt = parameters.codecs[0].payloadType
        if pt is None:  # pragma: no cover - aiortc always negotiates one
            raise ValueError("router: the subscriber's codec has no payload type")
        self.payload_type = pt
        ids = {ext.uri: ext.id for ext in parameters.headerExtensions}
        elements = b""
        mid_id = ids.get(_MID_URI)
        mid = (parameters.muxId or "").encode()
        if mid_id is not None and 0 < len(mid) <= 16:
            elements += bytes([mid_id << 4 | (len(mid) - 1)]) + mid
        self._ast_id = ids.get(_ABS_SEND_TIME_URI) or 0
        size = len(elements) + (4 if self._ast_id else 0)
        if size:
            words = (size + 3) // 4
            self.b0 = 0x90  # X=1
            self._ext_head = b"\xbe\xde" + words.to_bytes(2, "big") + elements
            self._ext_pad = b"\x00" * (words * 4 - size)
            self._ext_fixed = self._ext_head + self._ext_pad
        self._configured = True

    def extension(self, abs_send_time: int) -> bytes:
        """The header extension block of a frame with this 24-bit abs-send-time."""
        if not self._ast_id:
            return self._ext_fixed
        # RFC 8285 §4.2: ID and length - 1, then the 3-byte value.
        element = bytes([self._ast_id << 4 | 2]) + abs_send_time.to_bytes(3, "big")
        return self._ext_head + element + self._ext_pad

    def extension_template(self) -> tuple[bytes, int | None]:
        """The block with a zero abs-send-time, and where its 3 bytes are (if any)."""
        return self.extension(0), len(self._ext_head) + 1 if self._ast_id else None

    # -- per frame (the forwarder's FanoutGroup, event loop) ---------------------------

    def send(self, frame: RelayFrame) -> None:
        """Relay one frame to this subscriber now, or drop it (see the module docs)."""
        self._group.send(frame, (self,))

    def admit(self, frame: RelayFrame) -> compat.RtpPath | None:
        """This subscriber's policy for ``frame``: the path to send it on, or ``None``
        (dropped: waiting for a key frame, backlog over budget, no path yet)."""
        if self._ended or not self._configured:
            return None
        backlog = self.backlog()
        if backlog > self.max_backlog:
            self.max_backlog = backlog
        action = self.gate.admit(frame.keyframe, backlog)
        if action != ACCEPT:
            if action in (DROP, DROP_OLDEST):
                return None
            self.flushes += 1
            if action != FLUSH_ACCEPT:
                self.forwarder.request_keyframe()
                return None
        path = self.path or self._resolve()
        if path is None:
            self.frames_unsent += 1
            if frame.keyframe:
                self.gate.lost()  # the next frame this subscriber gets must be a key frame
        return path

    def account(self, frame: RelayFrame, n: int) -> None:
        """``frame``'s ``n`` packets went out (or are queued, in order, to go)."""
        self.relayed(1, n, frame.size, 1 if frame.keyframe else 0, frame)
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
        ntp = frame.ntp_timestamp
        # Due, or the clock stepped back (then the old due time would hold notes back).
        if not 0 < self._sr_due - ntp <= _SR_NOTE_NTP:
            self.note_sr(ntp)

    def relayed(
        self, frames: int, packets: int, size: int, keyframes: int, last: RelayFrame
    ) -> None:
        """Counts of frames relayed (``last`` the latest of them), for the stats and the
        next RTCP SR note."""
        self._frames += frames
        self._packets += packets
        self._bytes += size
        self._keyframes += keyframes
        self._sr_octets += size
        self._sr_packets += packets
        self._sr_frame = last

    def note_sr(self, ntp: int) -> None:
        """Notes the SR counts now (``ntp``: the relay's time), the next one due one
        :data:`SR_NOTE_INTERVAL` later."""
        self._sr_due = ntp + _SR_NOTE_NTP
        self._note_sr()

    def _note_sr(self) -> None:
        """The counts relayed since the last note, and the last frame's NTP/RTP pair, to
        the sender's next RTCP SR (RFC 3550 §6.4.1)."""
        frame = self._sr_frame
        if self._sr_packets and self._sender is not None and frame is not None:
            rtp = (frame.timestamp + self.ts_offset) & 0xFFFFFFFF
            compat.note_rtp_sent(
                self._sender, frame.ntp_timestamp, rtp, self._sr_octets, self._sr_packets
            )
        self._sr_octets = self._sr_packets = 0

    def stopped(self, exc: Exception) -> None:
        """The path failed under us: the next frame resolves it again, and must be a
        key frame."""
        self._release_leg()
        self.path = None
        self.gate.lost()
        log.debug("router: relay to %s stopped: %r", self.subscription_id, exc)

    def _resolve(self) -> compat.RtpPath | None:
        if self._sender is None:
            return None
        self._release_leg()
        path = compat.rtp_path(self._sender)
        self.path = path
        self.rust = srtp.rust_sender(self._sender, path[0]) if path else None
        if path is not None and self.rust is not None:
            fd = udp.datagram_fd(path[1])
            if fd is not None:
                self.leg = self._group.add(self, self.rust, fd, path[2])
        return path

    def _release_leg(self) -> None:
        """Leave the Rust fan-out: its sequence numbers and history come back here."""
        leg = self.leg
        if leg is None:
            return
        self.leg = None
        self.next_seq, packets = self._group.remove(leg)
        for seq, data in packets:
            self.history[seq % HISTORY] = (seq, data)

    def sent_packet(self, seq: int) -> bytes | None:
        """Packet ``seq`` as protected and first sent, while the history holds it."""
        if self.leg is not None:
            data = self._group.packet(self.leg, seq)
            if data is not None:
                return data
        # Sent without the fan-out, or before this relay's leg (re)started.
        entry = self.history[seq % HISTORY]
        return entry[1] if entry is not None and entry[0] == seq else None

    async def retransmit(self, sequence_number: int) -> None:
        """Resend one NACKed packet (RFC 4585 §6.2.1) exactly as it was protected."""
        self.nacks_received += 1
        data = self.sent_packet(sequence_number)
        path = self.path
        if data is None or path is None:
            return
        try:
            path[1].sendto(data, path[2])
        except Exception:  # pragma: no cover - the socket closed meanwhile
            return
        self.retransmissions += 1

    def on_subscriber_pli(self) -> None:
        """A PLI/FIR from the subscriber (the sender's key frame hook, see
        :func:`prepare_sender`)."""
        self.plis_received += 1
        self.forwarder.request_keyframe()

    # -- aiortc's sender ---------------------------------------------------------------

    async def recv(self) -> Any:
        """Called once by the router's sender when it starts (DTLS is up): attaches to
        the forwarder, then waits for the end; frames never pass through here."""
        if self.readyState != "live" or self._ended:
            raise MediaStreamError
        if not self._attached:
            self._attached = True
            self.attached_at = time.monotonic()
            self.forwarder.attach(self)
        if self._end_waiter is None:
            self._end_waiter = asyncio.get_running_loop().create_future()
        await self._end_waiter
        raise MediaStreamError

    def end(self) -> None:
        """No more frames: the sender's ``recv()`` raises ``MediaStreamError``."""
        if self._ended:
            return
        self._ended = True
        self.totals.frames_dropped_closed += self.frames_dropped
        self._group.catch_up(self)
        self._note_sr()
        self._release_leg()
        self.path = None
        if self._end_waiter is not None and not self._end_waiter.done():
            self._end_waiter.set_result(None)

    def stop(self) -> None:
        self.forwarder.detach(self)
        self.end()
        super().stop()

    def stats(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "track_id": self.id,
            "frames_forwarded": self.frames_forwarded,
            "packets_forwarded": self.packets_forwarded,
            "bytes_forwarded": self.bytes_forwarded,
            "keyframes_forwarded": self.keyframes_forwarded,
            "frames_dropped": self.frames_dropped,
            "dropped_overflow": self.gate.dropped_overflow,
            "dropped_waiting_keyframe": self.gate.dropped_waiting,
            "frames_unsent": self.frames_unsent,
            "srtp_backend": None if self.path is None else "rust" if self.rust else "libsrtp",
            "srtp_profile": self.rust.profile if self.rust else None,
            "packets_rust": self.packets_rust,
            "packets_libsrtp": self.packets_libsrtp,
            "packets_mmsg": self.packets_mmsg,
            "fanout": self.leg is not None,
            "gso": self._group.uses_gso(self.leg),
            "flushes": self.flushes,
            "backlog": self.backlog(),
            "max_backlog": self.max_backlog,
            "backlog_packets": self.capacity,
            "waiting_keyframe": self.gate.need_keyframe,
            "plis_received": self.plis_received,
            "nacks_received": self.nacks_received,
            "retransmissions": self.retransmissions,
            "first_frame_delay": (
                None
                if self.first_frame_at is None or self.attached_at is None
                else self.first_frame_at - self.attached_at
            ),
        }


class _NoEncoder(Encoder):
    """Preset as the sender's encoder: frames never take aiortc's per-frame path here,
    and if one ever did it would not be encoded or packed."""

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise RuntimeError("the router never encodes media")

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        raise RuntimeError("the router relays packets; it never packs frames")


def prepare_sender(sender: RTCRtpSender, relay: RelayTrack, stream_id: str) -> None:
    """Make the router's ``sender`` of ``relay`` a packet relay, before it starts:
    announce ``stream_id`` (``a=msid``), learn the negotiated parameters when aiortc
    starts it, answer NACKs from the relay's history and (video) route the subscriber's
    PLI/FIR to ``relay``."""
    compat.set_sender_stream_id(sender, stream_id)
    compat.set_sender_encoder(sender, _NoEncoder())
    relay._bind(sender)
    start = sender.send

    async def send(parameters: RTCRtpSendParameters) -> None:
        relay._configure(parameters)
        await start(parameters)

    sender.send = send  # type: ignore[method-assign]
    compat.hook_retransmit(sender, relay.retransmit)
    if relay.forwarder.video:
        compat.hook_send_keyframe(sender, relay.on_subscriber_pli)


def _group(forwarder: Forwarder) -> FanoutGroup:
    """The forwarder's fan-out (made with its first relay): it sends each frame to all
    of the forwarder's relays (``Forwarder.fan_out``)."""
    group = getattr(forwarder, "fan_out", None)
    if not isinstance(group, FanoutGroup):
        group = FanoutGroup(HISTORY, forwarder.totals)
        forwarder.fan_out = group
    return group
