"""Egress: what one subscriber receives of one published track, relayed packet by packet.

Per subscriber and track: :class:`RelayTrack`
    A ``MediaStreamTrack`` that the router adds to the subscriber's peer connection (one
    ``sendonly`` transceiver: ``a=msid``, codec, SSRC, DTLS and RTCP stay aiortc's).  It
    attaches to its :class:`e2ee.sfu.ingress.Forwarder` when the sender starts, i.e. once
    DTLS is up (so no stale frames go out while the subscriber connects), and from then
    on the forwarder calls :meth:`RelayTrack.send` with each whole frame.  A track
    starts only on a VP8 key frame and asks the publisher for one (PLI); what is sent or
    dropped is decided by a :class:`e2ee.sfu.policy.FrameGate`, against this
    subscriber's own send backlog.

Relaying without repacketizing
    The publisher's RTP payloads (VP8 payload descriptor with its PictureID, RFC 7741
    §4.2, or one Opus frame) go out unchanged; per subscriber only the RTP header is
    written (RFC 3550 §5.1): this sender's SSRC and payload type, consecutive sequence
    numbers (frames this subscriber skips leave no gap it would NACK), the publisher's
    timestamp plus a random offset, the marker bit, and the one-byte header extensions
    (RFC 8285 §4.2) ``mid`` and ``abs-send-time``.  The packets of a frame are built
    and SRTP-protected in one call to the Rust sender of the subscriber's DTLS
    transport (:func:`e2ee.rtc.srtp.rust_sender`, the same keys as aiortc's session),
    or, where there is none, one by one with aiortc's own libsrtp session; then written
    to the ICE pair's socket synchronously (:func:`e2ee.rtc.compat.rtp_path`): no
    queue, no task switch, no ``RtpPacket`` object.  With the Rust sender, while
    asyncio holds nothing in that socket's send buffer (:mod:`e2ee.rtc.udp`), the same
    call also writes the whole frame in one ``sendmmsg(2)``; what the kernel does not
    take then goes through asyncio's ``sendto``, which buffers it in order.  aiortc's per-frame path
    (``track.recv()`` then ``encoder.pack()``) is never used: :meth:`RelayTrack.recv`
    only waits for the end.  NACKs (RFC 4585 §6.2.1) are answered from the last
    :data:`HISTORY` protected packets, resent as they were (never protected again); the
    sender's RTCP SR counts what was relayed (:func:`e2ee.rtc.compat.note_rtp_sent`,
    at most every :data:`SR_NOTE_INTERVAL` per relay: the counts add up, the NTP/RTP
    timestamp pair is the last noted frame's, RFC 3550 §6.4.1).
    ``stats()`` says which SRTP backend a relay uses and counts packets by each.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
import time
from typing import Any

from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc.codecs.base import Encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpSendParameters

from e2ee.rtc import compat, srtp, udp
from e2ee.sfu.frames import RelayFrame
from e2ee.sfu.ingress import Forwarder
from e2ee.sfu.policy import ACCEPT, DROP, DROP_OLDEST, FLUSH_ACCEPT, FrameGate

__all__ = ["HISTORY", "SR_NOTE_INTERVAL", "RelayTrack", "prepare_sender"]

log = logging.getLogger(__name__)

#: Protected packets kept per relay for NACKs: ~2 s of 1 Mbit/s video.
HISTORY = 256
#: Send backlog (bytes waiting in the socket's user-space buffer) counted as one packet.
_PACKET_BYTES = 1200
#: Seconds between two updates of the sender's RTCP SR counters by one relay (aiortc
#: sends an SR every 0.5 to 1.5 s, rtcrtpsender.py ``_run_rtcp``).
SR_NOTE_INTERVAL = 0.25
_SR_NOTE_NTP = int(SR_NOTE_INTERVAL * (1 << 32))  # in 64-bit NTP format (RFC 3550 §4)

_HEADER = struct.Struct("!BBHII")  # V=2 P X CC | M PT | sequence | timestamp | SSRC
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
        self._sender: RTCRtpSender | None = None
        self._attached = False
        self._ended = False
        self._end_waiter: asyncio.Future[None] | None = None
        self._totals = forwarder.totals
        # The RTP header of this subscriber's stream (set by _configure, from send()).
        self._configured = False
        self._b0 = 0x80
        self._pt = 0
        self._media_ssrc = 0
        self._seq = secrets.randbelow(1 << 16)
        self._ts_offset = secrets.randbelow(1 << 32)
        self._ext_head = b""  # one-byte extension block up to the abs-send-time value
        self._ext_pad = b""
        self._ast_id = 0
        self._ast_tag = 0  # the abs-send-time element's first byte, above its 24-bit value
        self._ext_fixed = b""  # the whole block when it has no abs-send-time
        self._history: list[tuple[int, bytes] | None] = [None] * HISTORY
        self._path: compat.RtpPath | None = None
        self._path_transport: Any = None
        self._rust: Any = None  # e2ee._srtp.SrtpSender of this transport, if any
        self._fd: int | None = None  # the transport's socket, to write to it directly
        # RTCP SR counts not yet noted on the sender (see SR_NOTE_INTERVAL).
        self._sr_octets = 0
        self._sr_packets = 0
        self._sr_ntp = 0
        self._sr_rtp = 0
        self._sr_due = 0  # NTP time (64-bit format) of the next note
        # stats
        self.frames_forwarded = 0
        self.bytes_forwarded = 0
        self.packets_forwarded = 0
        self.keyframes_forwarded = 0
        self.flushes = 0
        self.max_backlog = 0
        self.plis_received = 0
        self.nacks_received = 0
        self.retransmissions = 0
        self.frames_unsent = 0  # no path to the wire yet (or any more)
        self.packets_rust = 0  # protected by the Rust sender
        self.packets_libsrtp = 0  # protected by aiortc's libsrtp session
        self.packets_mmsg = 0  # written by the Rust sender's sendmmsg
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
    def frames_dropped(self) -> int:
        return self.gate.dropped_overflow + self.gate.dropped_waiting

    def backlog(self) -> int:
        """Packets this subscriber's socket has not yet written (its user-space buffer)."""
        transport = self._path_transport
        if transport is None:
            return 0
        if self._fd is not None:
            return udp.buffered_bytes(transport) // _PACKET_BYTES
        return int(transport.get_write_buffer_size()) // _PACKET_BYTES

    # -- set-up (prepare_sender, the sender's send()) ----------------------------------

    def _bind(self, sender: RTCRtpSender) -> None:
        self._sender = sender
        self._media_ssrc = compat.sender_ssrc(sender)

    def _configure(self, parameters: RTCRtpSendParameters) -> None:
        """The negotiated payload type and header extension ids (RFC 8285 §5)."""
        pt = parameters.codecs[0].payloadType
        if pt is None:  # pragma: no cover - aiortc always negotiates one
            raise ValueError("router: the subscriber's codec has no payload type")
        self._pt = pt
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
            self._b0 = 0x90  # X=1
            self._ext_head = b"\xbe\xde" + words.to_bytes(2, "big") + elements
            self._ext_pad = b"\x00" * (words * 4 - size)
            self._ext_fixed = self._ext_head + self._ext_pad
        self._ast_tag = (self._ast_id << 4 | 2) << 24  # RFC 8285 §4.2: ID, length - 1
        self._configured = True

    # -- per frame (the forwarder, event loop) -----------------------------------------

    def send(self, frame: RelayFrame) -> None:
        """Relay one frame to this subscriber now, or drop it (see the module docs)."""
        if self._ended or not self._configured:
            return
        backlog = self.backlog()
        if backlog > self.max_backlog:
            self.max_backlog = backlog
        action = self.gate.admit(frame.keyframe, backlog)
        if action != ACCEPT:
            if action in (DROP, DROP_OLDEST):
                return
            self.flushes += 1
            if action != FLUSH_ACCEPT:
                self.forwarder.request_keyframe()
                return
        path = self._path or self._resolve()
        if path is None:
            self.frames_unsent += 1
            if frame.keyframe:
                self.gate.lost()  # the next frame this subscriber gets must be a key frame
            return
        protect, transport, address = path
        if self._ast_id:
            ext = (
                self._ext_head
                + (self._ast_tag | frame.abs_send_time).to_bytes(4, "big")
                + self._ext_pad
            )
        else:
            ext = self._ext_fixed
        timestamp = (frame.timestamp + self._ts_offset) & 0xFFFFFFFF
        payloads = frame.payloads
        last = len(payloads) - 1
        rust = self._rust
        if rust is not None:
            if self._fd is not None and udp.direct_send_ok(transport):
                sent = self._send_mmsg(rust, self._fd, frame, ext, timestamp, transport, address)
            else:
                sent = self._send_rust(rust, frame, ext, timestamp, transport.sendto, address)
            if not sent:
                return
        else:
            b0, pt, ssrc = self._b0, self._pt, self._media_ssrc
            seq = self._seq
            history = self._history
            sendto = transport.sendto
            pack = _HEADER.pack
            try:
                for i, payload in enumerate(payloads):
                    header = pack(b0, pt | 0x80 if i == last else pt, seq, timestamp, ssrc)
                    data = protect(header + ext + payload)
                    history[seq % HISTORY] = (seq, data)
                    sendto(data, address)
                    seq = (seq + 1) & 0xFFFF
            except Exception as exc:  # the socket or SRTP session went away under us
                self._stopped(exc)
                return
            finally:
                self._seq = seq
            self.packets_libsrtp += last + 1
        n = last + 1
        self.packets_forwarded += n
        self.frames_forwarded += 1
        self.bytes_forwarded += frame.size
        if frame.keyframe:
            self.keyframes_forwarded += 1
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
        totals = self._totals
        totals.frames_forwarded += 1
        totals.bytes_forwarded += frame.size
        totals.packets_forwarded += n
        self._sr_octets += frame.size
        self._sr_packets += n
        self._sr_ntp = frame.ntp_timestamp
        self._sr_rtp = timestamp
        # Due, or the clock stepped back (then the old due time would hold notes back).
        if not 0 < self._sr_due - frame.ntp_timestamp <= _SR_NOTE_NTP:
            self._sr_due = frame.ntp_timestamp + _SR_NOTE_NTP
            self._note_sr()

    def _note_sr(self) -> None:
        """The counts relayed since the last note, and the last frame's NTP/RTP pair, to
        the sender's next RTCP SR (RFC 3550 §6.4.1)."""
        if self._sr_packets and self._sender is not None:
            compat.note_rtp_sent(
                self._sender, self._sr_ntp, self._sr_rtp, self._sr_octets, self._sr_packets
            )
        self._sr_octets = self._sr_packets = 0

    def _send_rust(
        self, rust: Any, frame: RelayFrame, ext: bytes, timestamp: int, sendto: Any, address: Any
    ) -> bool:
        """The frame's packets built and protected in one Rust call, then sent; whether
        they all went out."""
        seq = self._seq
        history = self._history
        try:
            packets = rust.protect_frame(
                self._b0, self._pt, seq, timestamp, self._media_ssrc, ext, frame.payloads
            )
        except ValueError as exc:  # cannot happen for a well-formed frame: never send it
            self._stopped(exc)
            return False
        # Their SRTP indices are used now, whether or not each packet leaves.
        self._seq = (seq + len(packets)) & 0xFFFF
        self.packets_rust += len(packets)
        try:
            for data in packets:
                history[seq % HISTORY] = (seq, data)
                sendto(data, address)
                seq = (seq + 1) & 0xFFFF
        except Exception as exc:  # the socket went away under us
            self._stopped(exc)
            return False
        return True

    def _send_mmsg(
        self,
        rust: Any,
        fd: int,
        frame: RelayFrame,
        ext: bytes,
        timestamp: int,
        transport: Any,
        address: Any,
    ) -> bool:
        """The frame's packets built, protected and written in one Rust call (one
        ``sendmmsg``); what the kernel did not take goes through asyncio (which buffers
        it, in order).  Whether the frame went out."""
        seq = self._seq
        payloads = frame.payloads
        try:
            packets, taken = rust.send_frame(
                fd, address, self._b0, self._pt, seq, timestamp, self._media_ssrc, ext, payloads
            )
        except ValueError as exc:  # cannot happen for a well-formed frame: never send it
            self._stopped(exc)
            return False
        except OSError as exc:
            # The kernel refused the first datagram for another reason than a full
            # buffer.  The SRTP indices are used; as asyncio's sendto does with such an
            # error, the protocol hears of it and the datagrams are lost (NACKs for them
            # go unanswered).
            self._seq = (seq + len(payloads)) & 0xFFFF
            self.packets_rust += len(payloads)
            transport.get_protocol().error_received(exc)
            return True
        self._seq = (seq + len(packets)) & 0xFFFF
        self.packets_rust += len(packets)
        self.packets_mmsg += taken
        history = self._history
        for data in packets:
            history[seq % HISTORY] = (seq, data)
            seq = (seq + 1) & 0xFFFF
        if taken < len(packets):
            sendto = transport.sendto
            try:
                for data in packets[taken:]:
                    sendto(data, address)
            except Exception as exc:  # the transport went away under us
                self._stopped(exc)
                return False
        return True

    def _stopped(self, exc: Exception) -> None:
        self._path = None
        self.gate.lost()
        log.debug("router: relay to %s stopped: %r", self.subscription_id, exc)

    def _resolve(self) -> compat.RtpPath | None:
        if self._sender is None:
            return None
        path = compat.rtp_path(self._sender)
        self._path = path
        self._path_transport = path[1] if path else None
        self._rust = srtp.rust_sender(self._sender, path[0]) if path else None
        self._fd = udp.datagram_fd(path[1]) if path and self._rust is not None else None
        return path

    async def retransmit(self, sequence_number: int) -> None:
        """Resend one NACKed packet (RFC 4585 §6.2.1) exactly as it was protected."""
        self.nacks_received += 1
        entry = self._history[sequence_number % HISTORY]
        path = self._path
        if entry is None or entry[0] != sequence_number or path is None:
            return
        try:
            path[1].sendto(entry[1], path[2])
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
        self._totals.frames_dropped_closed += self.frames_dropped
        self._note_sr()
        self._path = None
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
            "srtp_backend": None if self._path is None else "rust" if self._rust else "libsrtp",
            "srtp_profile": self._rust.profile if self._rust else None,
            "packets_rust": self.packets_rust,
            "packets_libsrtp": self.packets_libsrtp,
            "packets_mmsg": self.packets_mmsg,
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
