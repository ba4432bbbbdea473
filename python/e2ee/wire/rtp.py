"""RTP and RTCP as they leave a client: the fixed RTP header (RFC 3550 §5.1), its header
extensions (RFC 8285), and the RTCP/RTP split on a multiplexed port (RFC 5761 §4).
Standard library only.

Used by the E2EE send-path guard (:mod:`e2ee.transform.guard`), which parses every
outgoing packet and never decrypts anything, and by tests.  Everything here is cheap and
never raises on bad input: a packet that does not parse is ``None``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from e2ee.wire.codecs import BytesLike

__all__ = [
    "ONE_BYTE_PROFILE",
    "RTP_HEADER_LENGTH",
    "RtpHeader",
    "is_rtcp",
    "parse_rtp_header",
    "parse_rtx_payload",
]

#: Length of the fixed RTP header (RFC 3550 §5.1).
RTP_HEADER_LENGTH = 12
#: The "defined by profile" value of the one-byte header extension form (RFC 8285 §4.2).
ONE_BYTE_PROFILE = 0xBEDE
#: Two-byte form (RFC 8285 §4.3): ``0x100`` in the top 12 bits, 4 application bits.
_TWO_BYTE_MASK = 0xFFF0
_TWO_BYTE_PROFILE = 0x1000

_FIXED = struct.Struct("!BBHII")


def is_rtcp(packet: BytesLike) -> bool:
    """Whether a packet on an RTP/RTCP-multiplexed port is RTCP: its second byte (the RTCP
    packet type) is 192 to 223 (RFC 5761 §4; RTP payload types 64-95 are never used
    there)."""
    return len(packet) >= 2 and 192 <= packet[1] <= 223


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """The header of one RTP packet.  The payload is ``packet[payload_start:payload_end]``
    (``payload_end`` excludes padding)."""

    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    extension_profile: int | None
    """The 16-bit profile of the header extension block, ``None`` without one."""
    extensions: tuple[tuple[int, bytes], ...]
    """``(id, value)`` of each RFC 8285 element (one-byte or two-byte form), in order;
    empty for another profile or no extension."""
    payload_start: int
    payload_end: int

    @property
    def extension_ids(self) -> frozenset[int]:
        return frozenset(i for i, _ in self.extensions)


def _elements(block: bytes, profile: int) -> tuple[tuple[int, bytes], ...] | None:
    """The elements of an RFC 8285 extension block, ``None`` if malformed."""
    out: list[tuple[int, bytes]] = []
    pos, n = 0, len(block)
    if profile == ONE_BYTE_PROFILE:
        while pos < n:
            byte = block[pos]
            if byte == 0:  # padding
                pos += 1
                continue
            ident, length = byte >> 4, (byte & 0x0F) + 1
            if ident == 15:  # reserved: stop parsing (RFC 8285 §4.2)
                break
            pos += 1
            if pos + length > n:
                return None
            out.append((ident, bytes(block[pos : pos + length])))
            pos += length
    elif profile & _TWO_BYTE_MASK == _TWO_BYTE_PROFILE:
        while pos < n:
            ident = block[pos]
            if ident == 0:  # padding
                pos += 1
                continue
            if pos + 2 > n:
                return None
            length = block[pos + 1]
            pos += 2
            if pos + length > n:
                return None
            out.append((ident, bytes(block[pos : pos + length])))
            pos += length
    return tuple(out)


def parse_rtp_header(packet: BytesLike) -> RtpHeader | None:
    """Parse an RTP packet's header, CSRCs, header extension and padding (RFC 3550 §5.1,
    RFC 8285).  ``None`` when it is not a well-formed RTP version 2 packet: shorter than
    its header, CSRC list or extension, a malformed RFC 8285 block, or a bad padding
    count."""
    n = len(packet)
    if n < RTP_HEADER_LENGTH:
        return None
    b0, b1, seq, timestamp, ssrc = _FIXED.unpack_from(packet, 0)
    if b0 >> 6 != 2:
        return None
    cc = b0 & 0x0F
    pos = RTP_HEADER_LENGTH + 4 * cc
    if n < pos:
        return None
    csrcs = struct.unpack_from(f"!{cc}I", packet, RTP_HEADER_LENGTH) if cc else ()
    profile: int | None = None
    extensions: tuple[tuple[int, bytes], ...] = ()
    if b0 & 0x10:
        if n < pos + 4:
            return None
        profile, words = struct.unpack_from("!HH", packet, pos)
        pos += 4
        end = pos + 4 * words
        if n < end:
            return None
        parsed = _elements(bytes(packet[pos:end]), profile)
        if parsed is None:
            return None
        extensions = parsed
        pos = end
    end = n
    if b0 & 0x20:
        padding = packet[n - 1]
        if not padding or padding > n - pos:
            return None
        end = n - padding
    return RtpHeader(
        marker=bool(b1 & 0x80),
        payload_type=b1 & 0x7F,
        sequence_number=seq,
        timestamp=timestamp,
        ssrc=ssrc,
        csrcs=tuple(csrcs),
        extension_profile=profile,
        extensions=extensions,
        payload_start=pos,
        payload_end=end,
    )


def parse_rtx_payload(payload: BytesLike) -> tuple[int, BytesLike] | None:
    """``(original sequence number, original payload)`` of an RTX payload (RFC 4588 §4),
    ``None`` if it is shorter than the 2-byte original sequence number."""
    if len(payload) < 2:
        return None
    return (payload[0] << 8) | payload[1], payload[2:]
