"""The last check before the network: :class:`OutboundGuard` lets an RTP packet of a
protected connection leave only if its media payload is an E2EE frame of its sender.

The encrypting encoders (:mod:`e2ee.transform.sender`) are how frames get encrypted.
This is what makes sure nothing else leaves, should they ever be bypassed (an aiortc
change that stops calling the per-frame hook, a reset encoder, a new send path): the
protected connection's DTLS transports hand every outgoing packet to
:meth:`OutboundGuard.admit` first (:func:`e2ee.rtc.compat.hook_transport_send`), and a
packet it refuses is dropped.  The check only parses headers; it never decrypts, and it
holds no key.

Rules (docs/protocol.md §4 frame format; ``kids`` are the sender's current KID and the
few it used most recently, since frames are in flight across a re-key):

* RTCP (second byte 192 to 223, RFC 5761 §4) passes.
* An RTP packet must parse (RFC 3550 §5.1, RFC 8285) and come from a registered SSRC:
  a sender's media SSRC or its RTX SSRC.  Anything else is dropped.
* A packet carrying a header extension the track forbids (the negotiated IDs of
  :data:`e2ee.wire.extmap.MEDIA_DERIVED_EXTENSIONS`) is dropped.
* Opus: the payload is the TOC byte followed by an SFrame header (minimal encoding,
  RFC 9605 §4.3) whose KID is one of ``kids``.
* VP8 (RFC 7741 §4.2): a packet whose payload descriptor has S=1 and PID=0 starts a
  frame; after the descriptor come the clear prefix (3 bytes on a delta frame, 10 on a key
  frame) and an SFrame header with one of ``kids``, all in this packet.  Any other packet
  continues a frame and passes only if its RTP timestamp is that of the last frame start
  that passed on the same SSRC.
* RTX (RFC 4588 §4): the payload is the 2-byte original sequence number and the original
  payload, which must pass the rules above; a continuation packet's timestamp must be one
  of the last :data:`TIMESTAMPS_KEPT` frame starts that passed on the media SSRC.

Thread safety: :meth:`OutboundGuard.admit` runs on the event loop;
:meth:`GuardedTrack.allow_kid` may run on an encoder thread (it replaces a tuple).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from e2ee.wire.codecs import CLEAR_BYTES_VP8_DELTA, CLEAR_BYTES_VP8_KEY, BytesLike
from e2ee.wire.rtp import is_rtcp, parse_rtp_header
from e2ee.wire.sframe_header import parse_sframe_header

__all__ = ["KIDS_KEPT", "TIMESTAMPS_KEPT", "GuardedTrack", "OutboundGuard"]

#: How many of a sender's KIDs are allowed: the current one and the previous ones.
KIDS_KEPT = 4
#: How many recent frame-start timestamps per sender an RTX continuation may match
#: (aiortc keeps the last 128 packets for retransmission).
TIMESTAMPS_KEPT = 128

#: Called with the reason when a track's packet is blocked (see :class:`GuardedTrack`).
BlockedCallback = Callable[[str], None]


class GuardedTrack:
    """What the guard allows for one sender, and what it blocked.

    ``kind`` is ``"video"`` (VP8 rules) or ``"audio"`` (Opus rules).  ``kids`` holds the
    allowed KIDs, newest first (:meth:`allow_kid`).  ``forbidden_extensions`` holds header
    extension IDs a packet must not carry.

    Counters: ``packets_passed``, ``packets_blocked`` (media and RTX) and
    ``frames_blocked`` (media frames, i.e. RTP timestamps, with at least one blocked
    packet).  ``on_blocked(reason)`` runs once per blocked frame and per blocked RTX
    packet, on the thread that called :meth:`OutboundGuard.admit`.
    """

    __slots__ = (
        "_blocked_ts",
        "_recent",
        "_recent_order",
        "_start_ts",
        "forbidden_extensions",
        "frames_blocked",
        "kids",
        "kind",
        "on_blocked",
        "packets_blocked",
        "packets_passed",
    )

    def __init__(self, kind: str, on_blocked: BlockedCallback | None = None) -> None:
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be 'audio' or 'video', not {kind!r}")
        self.kind = kind
        self.on_blocked = on_blocked
        self.kids: tuple[int, ...] = ()
        self.forbidden_extensions: frozenset[int] = frozenset()
        self.packets_passed = 0
        self.packets_blocked = 0
        self.frames_blocked = 0
        self._start_ts: int | None = None
        self._blocked_ts: int | None = None
        self._recent: set[int] = set()
        self._recent_order: deque[int] = deque()

    def allow_kid(self, kid: int) -> None:
        """Make ``kid`` the current KID; the previous ones stay allowed, up to
        :data:`KIDS_KEPT` in all.  Call it before any frame under ``kid`` is sent."""
        kids = self.kids
        if kids and kids[0] == kid:
            return
        self.kids = (kid, *(k for k in kids if k != kid))[:KIDS_KEPT]

    # -- the checks --------------------------------------------------------------------

    def _check(self, payload: BytesLike, timestamp: int, rtx: bool) -> str | None:
        """``None`` if the payload may leave, else why not.  Updates the frame-start state
        of the media SSRC."""
        if rtx:
            if len(payload) < 2:
                return "RTX packet without an original sequence number"
            payload = payload[2:]
        if self.kind == "audio":
            return self._check_sframe(payload, 1, "Opus")
        descriptor = _vp8_descriptor(payload)
        if descriptor is None:
            return "malformed VP8 payload descriptor"
        size, frame_start = descriptor
        if frame_start:
            reason = self._check_vp8_start(payload, size)
            if not rtx:
                if reason is None:
                    self._start_ts = timestamp
                    self._remember(timestamp)
                else:
                    self._start_ts = None
            return reason
        if (timestamp in self._recent) if rtx else (timestamp == self._start_ts):
            return None
        return "VP8 continuation packet of a frame whose start did not pass"

    def _check_vp8_start(self, payload: BytesLike, start: int) -> str | None:
        if len(payload) <= start:
            return "VP8 frame start without a frame tag"
        prefix = CLEAR_BYTES_VP8_DELTA if payload[start] & 1 else CLEAR_BYTES_VP8_KEY
        return self._check_sframe(payload, start + prefix, "VP8")

    def _check_sframe(self, payload: BytesLike, offset: int, codec: str) -> str | None:
        header = parse_sframe_header(payload, offset)
        if header is None:
            return f"{codec} payload without an SFrame header after its clear prefix"
        if header[0] not in self.kids:
            return f"{codec} payload under a KID that is not this sender's"
        return None

    def _remember(self, timestamp: int) -> None:
        if timestamp in self._recent:
            return
        self._recent.add(timestamp)
        self._recent_order.append(timestamp)
        if len(self._recent_order) > TIMESTAMPS_KEPT:
            self._recent.discard(self._recent_order.popleft())

    def _block(self, timestamp: int, rtx: bool, reason: str) -> None:
        self.packets_blocked += 1
        if not rtx:
            if timestamp == self._blocked_ts:
                return
            self._blocked_ts = timestamp
            self.frames_blocked += 1
        if self.on_blocked is not None:
            self.on_blocked(reason)


def _vp8_descriptor(payload: BytesLike) -> tuple[int, bool] | None:
    """``(size, S=1 and PID=0)`` of the VP8 payload descriptor (RFC 7741 §4.2), ``None``
    if truncated: what :func:`e2ee.wire.vp8.parse_vp8_payload_descriptor` finds, without
    building its dataclass (this runs once per outgoing video packet)."""
    n = len(payload)
    if not n:
        return None
    b0 = payload[0]
    pos = 1
    if b0 & 0x80:  # X: extension octet I|L|T|K|RSV
        if n < 2:
            return None
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: PictureID, 2 octets if M
            if n <= pos:
                return None
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID|Y|KEYIDX
            pos += 1
        if n < pos:
            return None
    return pos, b0 & 0x17 == 0x10


class OutboundGuard:
    """Admits or refuses each outgoing packet of one protected connection (see the module
    docs).  Tracks are registered by media SSRC and RTX SSRC.

    ``unknown_blocked`` counts packets refused before any track could be named (not RTP,
    or an unregistered SSRC); ``on_unknown(reason)`` runs for each.
    """

    __slots__ = ("_media", "_rtx", "on_unknown", "unknown_blocked")

    def __init__(self, on_unknown: BlockedCallback | None = None) -> None:
        self._media: dict[int, GuardedTrack] = {}
        self._rtx: dict[int, GuardedTrack] = {}
        self.on_unknown = on_unknown
        self.unknown_blocked = 0

    def register(self, track: GuardedTrack, ssrc: int, rtx_ssrc: int | None = None) -> None:
        """Packets from ``ssrc`` (and RTX packets from ``rtx_ssrc``) are ``track``'s; a
        track registered before under the same SSRCs is replaced."""
        self._media[ssrc] = track
        if rtx_ssrc is not None:
            self._rtx[rtx_ssrc] = track

    def track(self, ssrc: int) -> GuardedTrack | None:
        """The track registered for a media or RTX SSRC."""
        return self._media.get(ssrc) or self._rtx.get(ssrc)

    def admit(self, packet: bytes) -> bool:
        """Whether ``packet`` may be sent (see the module docs); counts and reports it if
        not.  Never raises on bad input."""
        if is_rtcp(packet):
            return True
        header = parse_rtp_header(packet)
        if header is None:
            return self._unknown("malformed RTP packet")
        rtx = False
        track = self._media.get(header.ssrc)
        if track is None:
            track = self._rtx.get(header.ssrc)
            if track is None:
                return self._unknown(f"RTP packet from unknown SSRC {header.ssrc}")
            rtx = True
        if track.forbidden_extensions and any(
            ident in track.forbidden_extensions for ident, _ in header.extensions
        ):
            reason: str | None = "RTP packet with a media-derived header extension"
        else:
            payload = memoryview(packet)[header.payload_start : header.payload_end]
            reason = track._check(payload, header.timestamp, rtx)
        if reason is None:
            track.packets_passed += 1
            return True
        track._block(header.timestamp, rtx, reason)
        return False

    def _unknown(self, reason: str) -> bool:
        self.unknown_blocked += 1
        if self.on_unknown is not None:
            self.on_unknown(reason)
        return False
