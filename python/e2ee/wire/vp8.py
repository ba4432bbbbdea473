"""The VP8 bytes that stay readable under E2EE: the RTP payload descriptor (RFC 7741 §4.2),
outside the encrypted frame, and the frame tag and key-frame header (RFC 6386 §9.1,
RFC 7741 §4.3), the clear prefix of every frame.  Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2ee.errors import Vp8ParseError
from e2ee.wire.codecs import (
    CLEAR_BYTES_VP8_DELTA,
    CLEAR_BYTES_VP8_KEY,
    VP8_START_CODE,
    BytesLike,
    leading_bytes,
)

__all__ = [
    "VP8_START_CODE",
    "Vp8FrameHeader",
    "Vp8ParseError",
    "Vp8PayloadDescriptor",
    "parse_vp8_frame_header",
    "parse_vp8_payload_descriptor",
    "vp8_descriptor_size",
]


# -- VP8 payload descriptor (RFC 7741 §4.2) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Vp8PayloadDescriptor:
    """The VP8 RTP payload descriptor (RFC 7741 §4.2).

    Optional fields are None when their flag is not set: ``picture_id`` (I),
    ``tl0picidx`` (L), ``tid`` and ``layer_sync`` (T), ``keyidx`` (K).
    """

    extended: bool
    """X: the extension octet (I|L|T|K|RSV) follows the first octet."""
    non_reference: bool
    """N: the frame is not used as a reference; a router may drop it."""
    start_of_partition: bool
    """S: the payload begins a VP8 partition."""
    partition_index: int
    """PID: 3-bit partition index (0..7)."""
    picture_id: int | None
    """PictureID: 7 bits (0..127) or 15 bits (0..32767) per ``long_picture_id``."""
    long_picture_id: bool
    """M: the PictureID is 15 bits (two octets)."""
    tl0picidx: int | None
    """TL0PICIDX: 8-bit temporal-layer-zero index."""
    tid: int | None
    """TID: 2-bit temporal layer index (present with T)."""
    layer_sync: bool | None
    """Y: layer sync bit (present with T)."""
    keyidx: int | None
    """KEYIDX: 5-bit temporal key frame index (present with K)."""
    size: int
    """Length of the descriptor in bytes (1 to 6); the VP8 payload starts there."""

    @property
    def has_payload_header(self) -> bool:
        """True when the VP8 data starts with the frame tag: S=1 and PID=0.

        RFC 7741 §4.3: only the first packet of a frame carries the payload header.
        """
        return self.start_of_partition and self.partition_index == 0


def parse_vp8_payload_descriptor(payload: BytesLike) -> Vp8PayloadDescriptor:
    """Parse the VP8 payload descriptor at the start of an RTP payload (RFC 7741 §4.2).

    ``payload`` is the RTP payload (after the RTP header).  The result's ``size`` is where
    the VP8 data begins; the payload may end right after the descriptor (no data check).

    Reserved bits (the two R bits of the first octet, RSV in the extension octet) are
    ignored: RFC 7741 says senders MUST set them to 0 and receivers MUST ignore them, so a
    set reserved bit is not an error (raising would break interoperability with any future
    use).  Likewise L=1 with T=0 violates a sender MUST but is parsed: the layout stays
    unambiguous (TL0PICIDX present, no TID octet).  TID/Y are reported only when T=1 and
    KEYIDX only when K=1, since the RFC says the other half of that octet MUST be ignored.

    Raises :class:`Vp8ParseError` when the payload ends inside the descriptor.
    """
    head = leading_bytes(payload, 6)  # the longest descriptor: 1 + 1 + 2 + 1 + 1 bytes
    if not head:
        raise Vp8ParseError("empty RTP payload: no VP8 payload descriptor (RFC 7741 §4.2)")
    b0 = head[0]
    # Octet 0: X|R|N|S|R|PID(3).  The PID is 3 bits: bit 3 is the second R bit.
    picture_id = tl0picidx = tid = keyidx = None
    layer_sync = None
    long_pid = False
    pos = 1
    if b0 & 0x80:  # X: the extension octet I|L|T|K|RSV(4) follows
        if len(head) < 2:
            raise Vp8ParseError("VP8 payload descriptor truncated: X=1 but no extension octet")
        ext = head[1]
        pos = 2
        if ext & 0x80:  # I
            picture_id, long_pid, pos = _picture_id(head, pos)
        if ext & 0x40:  # L
            tl0picidx = _tl0picidx(head, pos)
            pos += 1
        if ext & 0x30:  # T or K
            tid, layer_sync, keyidx = _tid_y_keyidx(head, pos, ext)
            pos += 1
    return Vp8PayloadDescriptor(
        extended=bool(b0 & 0x80),
        non_reference=bool(b0 & 0x20),
        start_of_partition=bool(b0 & 0x10),
        partition_index=b0 & 0x07,
        picture_id=picture_id,
        long_picture_id=long_pid,
        tl0picidx=tl0picidx,
        tid=tid,
        layer_sync=layer_sync,
        keyidx=keyidx,
        size=pos,
    )


def vp8_descriptor_size(payload: BytesLike) -> int:
    """Length of the VP8 payload descriptor at the start of ``payload`` (RFC 7741 §4.2),
    the fast path of :func:`parse_vp8_payload_descriptor` for the router's per-frame use;
    -1 when the payload ends inside the descriptor."""
    n = len(payload)
    if n == 0:
        return -1
    if not payload[0] & 0x80:  # X=0: one octet
        return 1
    if n < 2:
        return -1
    ext = payload[1]
    size = 2
    if ext & 0x80:  # I: PictureID, 15 bits when M is set
        if n < 3:
            return -1
        size += 2 if payload[2] & 0x80 else 1
    if ext & 0x40:  # L: TL0PICIDX
        size += 1
    if ext & 0x30:  # T or K: TID|Y|KEYIDX
        size += 1
    return size if size <= n else -1


def _picture_id(head: bytes, pos: int) -> tuple[int, bool, int]:
    """I=1: the PictureID at ``pos``, one octet if M=0 (7 bits), two if M=1 (15 bits).

    Returns the PictureID, M, and the position after it.
    """
    if len(head) <= pos:
        raise Vp8ParseError("VP8 payload descriptor truncated: I=1 but no PictureID")
    p0 = head[pos]
    if not p0 & 0x80:
        return p0, False, pos + 1
    if len(head) <= pos + 1:
        raise Vp8ParseError("VP8 payload descriptor truncated: M=1 but PictureID has one octet")
    return ((p0 & 0x7F) << 8) | head[pos + 1], True, pos + 2


def _tl0picidx(head: bytes, pos: int) -> int:
    """L=1: the TL0PICIDX octet at ``pos``."""
    if len(head) <= pos:
        raise Vp8ParseError("VP8 payload descriptor truncated: L=1 but no TL0PICIDX")
    return head[pos]


def _tid_y_keyidx(head: bytes, pos: int, ext: int) -> tuple[int | None, bool | None, int | None]:
    """T=1 or K=1: the one TID(2)|Y|KEYIDX(5) octet at ``pos`` both share.

    Returns TID and Y (None unless T=1) and KEYIDX (None unless K=1).
    """
    if len(head) <= pos:
        raise Vp8ParseError(
            "VP8 payload descriptor truncated: T or K set but no TID/Y/KEYIDX octet"
        )
    tk = head[pos]
    if ext & 0x20:
        tid: int | None = tk >> 6
        layer_sync: bool | None = bool(tk & 0x20)
    else:
        tid = layer_sync = None
    return tid, layer_sync, (tk & 0x1F if ext & 0x10 else None)


# -- VP8 frame header (RFC 6386 §9.1, RFC 7741 §4.3) -------------------------------------


@dataclass(frozen=True, slots=True)
class Vp8FrameHeader:
    """The VP8 frame tag and, on key frames, the dimensions (RFC 6386 §9.1).

    ``width``, ``height`` and the scales are None on delta frames.
    """

    keyframe: bool
    """Frame type bit is 0 (RFC 7741 §4.3 calls that bit P, the inverse key-frame flag)."""
    version: int
    """3-bit version (0..3 defined by RFC 6386 §9.1; larger values are reported as is)."""
    show_frame: bool
    """H in RFC 7741 §4.3: the decoded frame is to be displayed."""
    first_part_size: int
    """19-bit size of the first partition, counted from after the 3- or 10-byte header."""
    width: int | None
    """14-bit width in pixels (key frames only)."""
    height: int | None
    """14-bit height in pixels (key frames only)."""
    horizontal_scale: int | None
    """2-bit upscaling code: 0 none, 1 5/4, 2 5/3, 3 2 (key frames only)."""
    vertical_scale: int | None
    """2-bit upscaling code, as ``horizontal_scale`` (key frames only)."""

    @property
    def size(self) -> int:
        """Header length in bytes: 10 on key frames, 3 otherwise (the clear prefix)."""
        return CLEAR_BYTES_VP8_KEY if self.keyframe else CLEAR_BYTES_VP8_DELTA


def parse_vp8_frame_header(frame: BytesLike) -> Vp8FrameHeader:
    """Parse the header of a VP8 frame (the bytes after the RTP payload descriptor).

    The 3-byte frame tag is a little-endian 24-bit value (RFC 6386 §9.1): bit 0 the frame
    type (0 = key frame), bits 1-3 the version, bit 4 show_frame, bits 5-23 the first
    partition size.  RFC 7741 §4.3 describes the same bits as Size0|H|VER|P, Size1, Size2.
    A key frame adds the start code ``9d 01 2a`` and two little-endian 16-bit words, each
    a 2-bit scale above a 14-bit dimension.

    Only the header is read; ``first_part_size`` is not checked against the frame length,
    so a 3- or 10-byte prefix (e.g. the clear bytes of an encrypted frame) parses.

    Raises :class:`Vp8ParseError` on a frame shorter than its header (3 bytes, 10 on a key
    frame) and on a key frame whose start code is wrong.
    """
    head = leading_bytes(frame, CLEAR_BYTES_VP8_KEY)
    n = len(head)
    if n < CLEAR_BYTES_VP8_DELTA:
        raise Vp8ParseError(f"VP8 frame of {n} bytes is shorter than the 3-byte frame tag")
    tag = head[0] | (head[1] << 8) | (head[2] << 16)
    keyframe = not tag & 1
    version = (tag >> 1) & 0x7
    show_frame = bool(tag & 0x10)
    first_part_size = tag >> 5  # 19 bits
    if not keyframe:
        return Vp8FrameHeader(
            keyframe=False,
            version=version,
            show_frame=show_frame,
            first_part_size=first_part_size,
            width=None,
            height=None,
            horizontal_scale=None,
            vertical_scale=None,
        )
    if n < CLEAR_BYTES_VP8_KEY:
        raise Vp8ParseError(
            f"VP8 key frame of {n} bytes is shorter than the 10-byte key frame header"
        )
    if head[3:6] != VP8_START_CODE:
        # RFC 6386 §9.1: a key frame's tag is followed by this fixed start code; anything
        # else means the frame is not VP8 or the frame-type bit was corrupted.
        raise Vp8ParseError(f"VP8 key frame has start code {head[3:6].hex(' ')}, expected 9d 01 2a")
    hsize = head[6] | (head[7] << 8)
    vsize = head[8] | (head[9] << 8)
    return Vp8FrameHeader(
        keyframe=True,
        version=version,
        show_frame=show_frame,
        first_part_size=first_part_size,
        width=hsize & 0x3FFF,
        height=vsize & 0x3FFF,
        horizontal_scale=hsize >> 14,
        vertical_scale=vsize >> 14,
    )
