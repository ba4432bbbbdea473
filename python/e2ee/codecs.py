"""Parsers for the few VP8 and Opus bytes that stay readable under E2EE.

The media layer and the router never decode media.  They read only:

* the VP8 RTP payload descriptor (RFC 7741 §4.2), which sits in every RTP packet outside
  the encrypted frame;
* the VP8 frame tag and key-frame header (RFC 6386 §9.1, RFC 7741 §4.3), the first 3 or 10
  bytes of a frame, which the E2EE frame format keeps in clear;
* the Opus TOC byte (RFC 6716 §3.1), the 1 byte kept in clear on audio frames.

:func:`clear_prefix_length` and :func:`is_vp8_keyframe` run once per frame and are kept
cheap; the ``parse_*`` functions build dataclasses and are meant for inspection, logging,
tests and the router's occasional checks.

Pure Python, standard library only: this module must not import the Rust extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from e2ee.errors import (
    CodecError,
    FrameTooShort,
    OpusParseError,
    UnsupportedCodec,
    Vp8ParseError,
)

__all__ = [
    "CLEAR_BYTES_OPUS",
    "CLEAR_BYTES_VP8_DELTA",
    "CLEAR_BYTES_VP8_KEY",
    "VP8_START_CODE",
    "BytesLike",
    "CodecError",
    "FrameTooShort",
    "OpusBandwidth",
    "OpusMode",
    "OpusParseError",
    "OpusToc",
    "UnsupportedCodec",
    "Vp8FrameHeader",
    "Vp8ParseError",
    "Vp8PayloadDescriptor",
    "clear_prefix_length",
    "is_vp8_keyframe",
    "parse_opus_toc",
    "parse_sframe_header",
    "parse_vp8_frame_header",
    "parse_vp8_payload_descriptor",
]

BytesLike: TypeAlias = bytes | bytearray | memoryview

#: Clear bytes of a VP8 key frame: 3-byte frame tag, 3-byte start code, 4 bytes of
#: dimensions (RFC 6386 §9.1).  Chrome's depacketizer reads the dimensions.
CLEAR_BYTES_VP8_KEY = 10
#: Clear bytes of a VP8 delta (inter) frame: the 3-byte frame tag (RFC 6386 §9.1).
CLEAR_BYTES_VP8_DELTA = 3
#: Clear bytes of an Opus frame: the TOC byte (RFC 6716 §3.1).
CLEAR_BYTES_OPUS = 1
#: The key-frame start code, bytes 3 to 5 of a VP8 key frame (RFC 6386 §9.1).
VP8_START_CODE = b"\x9d\x01\x2a"


# -- Errors ------------------------------------------------------------------------------


# The errors live in e2ee.errors (one hierarchy for the whole package); re-exported here.


# -- Fast per-frame helpers --------------------------------------------------------------

_VP8 = 0
_OPUS = 1
# Exact spellings seen in practice are looked up first; anything else is lower-cased once.
_CODEC_KINDS: dict[str, int] = {
    "vp8": _VP8,
    "VP8": _VP8,
    "video/vp8": _VP8,
    "video/VP8": _VP8,
    "opus": _OPUS,
    "Opus": _OPUS,
    "audio/opus": _OPUS,
}


def _codec_kind(codec: object) -> int:
    kind = _CODEC_KINDS.get(codec.lower()) if isinstance(codec, str) else None
    if kind is None:
        raise UnsupportedCodec(
            f"unsupported codec {codec!r}: E2EE supports only VP8 and Opus "
            '("vp8", "video/VP8", "opus", "audio/opus")'
        )
    return kind


def clear_prefix_length(codec: str, frame: BytesLike) -> int:
    """Return how many leading bytes of ``frame`` the E2EE frame format keeps in clear.

    VP8: 10 on a key frame (``frame[0] & 1 == 0``), 3 on a delta frame.  Opus: 1.  The
    same rule applies to a plaintext frame and to an encrypted wire frame, since the clear
    prefix is identical in both.

    ``codec`` is ``"vp8"`` or ``"opus"`` in any case, or the MIME type ``"video/VP8"`` or
    ``"audio/opus"``.

    Raises :class:`UnsupportedCodec` for any other codec and :class:`FrameTooShort` when
    the frame is shorter than its clear prefix (an empty frame always is).
    """
    try:
        kind = _CODEC_KINDS[codec]
    except (KeyError, TypeError):
        kind = _codec_kind(codec)
    n = len(frame)
    if kind == _VP8:
        if not n:
            raise _too_short(kind, 0, CLEAR_BYTES_VP8_DELTA)
        # RFC 6386 §9.1: bit 0 of the frame tag is the frame type, 0 = key frame.
        needed = CLEAR_BYTES_VP8_DELTA if frame[0] & 1 else CLEAR_BYTES_VP8_KEY
    else:
        needed = CLEAR_BYTES_OPUS
    if n < needed:
        raise _too_short(kind, n, needed)
    return needed


def is_vp8_keyframe(frame: BytesLike) -> bool:
    """Return True when the VP8 frame (starting at its frame tag) is a key frame.

    Reads only bit 0 of the frame tag (RFC 6386 §9.1: 0 = key frame; RFC 7741 §4.3 calls
    it the inverse key-frame flag P).  Raises :class:`FrameTooShort` on an empty frame.
    Does not check the start code: use :func:`parse_vp8_frame_header` for that.
    """
    if not frame:
        raise _too_short(_VP8, 0, CLEAR_BYTES_VP8_DELTA)
    return not frame[0] & 1


def _too_short(kind: int, n: int, needed: int) -> FrameTooShort:
    if kind == _OPUS:
        return FrameTooShort(
            "empty Opus frame: an Opus packet has at least the TOC byte (RFC 6716 §3.4, R1)",
            codec="opus",
            length=n,
            needed=needed,
        )
    if n == 0:
        message = "empty VP8 frame: no frame tag (RFC 6386 §9.1)"
    else:
        what = "key frame" if needed == CLEAR_BYTES_VP8_KEY else "delta frame"
        message = (
            f"VP8 {what} of {n} bytes is shorter than its {needed}-byte clear header"
            " (RFC 6386 §9.1)"
        )
    return FrameTooShort(message, codec="vp8", length=n, needed=needed)


def _head(data: BytesLike, n: int) -> bytes:
    # At most n bytes as `bytes` (a memoryview of a wider item format is flattened too).
    if isinstance(data, bytes):
        return data[:n]
    return bytes(data[:n])[:n]


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
    head = _head(payload, 6)  # the longest descriptor: 1 + 1 + 2 + 1 + 1 bytes
    n = len(head)
    if n == 0:
        raise Vp8ParseError("empty RTP payload: no VP8 payload descriptor (RFC 7741 §4.2)")
    b0 = head[0]
    # Octet 0: X|R|N|S|R|PID(3).  The PID is 3 bits: bit 3 is the second R bit.
    extended = bool(b0 & 0x80)
    non_reference = bool(b0 & 0x20)
    start = bool(b0 & 0x10)
    pid = b0 & 0x07
    picture_id = tl0picidx = tid = keyidx = None
    layer_sync = None
    long_pid = False
    pos = 1
    if extended:
        if n < 2:
            raise Vp8ParseError("VP8 payload descriptor truncated: X=1 but no extension octet")
        ext = head[1]
        pos = 2
        if ext & 0x80:  # I: PictureID, 1 octet if M=0, 2 if M=1
            if n <= pos:
                raise Vp8ParseError("VP8 payload descriptor truncated: I=1 but no PictureID")
            p0 = head[pos]
            if p0 & 0x80:
                long_pid = True
                if n <= pos + 1:
                    raise Vp8ParseError(
                        "VP8 payload descriptor truncated: M=1 but PictureID has one octet"
                    )
                picture_id = ((p0 & 0x7F) << 8) | head[pos + 1]
                pos += 2
            else:
                picture_id = p0
                pos += 1
        if ext & 0x40:  # L: TL0PICIDX
            if n <= pos:
                raise Vp8ParseError("VP8 payload descriptor truncated: L=1 but no TL0PICIDX")
            tl0picidx = head[pos]
            pos += 1
        if ext & 0x30:  # T or K: one shared TID|Y|KEYIDX octet
            if n <= pos:
                raise Vp8ParseError(
                    "VP8 payload descriptor truncated: T or K set but no TID/Y/KEYIDX octet"
                )
            tk = head[pos]
            pos += 1
            if ext & 0x20:
                tid = tk >> 6
                layer_sync = bool(tk & 0x20)
            if ext & 0x10:
                keyidx = tk & 0x1F
    return Vp8PayloadDescriptor(
        extended=extended,
        non_reference=non_reference,
        start_of_partition=start,
        partition_index=pid,
        picture_id=picture_id,
        long_picture_id=long_pid,
        tl0picidx=tl0picidx,
        tid=tid,
        layer_sync=layer_sync,
        keyidx=keyidx,
        size=pos,
    )


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
    head = _head(frame, CLEAR_BYTES_VP8_KEY)
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


# -- Opus TOC byte (RFC 6716 §3.1) -------------------------------------------------------


class OpusMode(StrEnum):
    """Opus coding mode (RFC 6716 §3.1, Table 2)."""

    SILK = "SILK"
    HYBRID = "Hybrid"
    CELT = "CELT"


class OpusBandwidth(StrEnum):
    """Opus audio bandwidth (RFC 6716 §2, Table 1)."""

    NB = "NB"  # narrowband, 4 kHz
    MB = "MB"  # medium-band, 6 kHz
    WB = "WB"  # wideband, 8 kHz
    SWB = "SWB"  # super-wideband, 12 kHz
    FB = "FB"  # fullband, 20 kHz


@dataclass(frozen=True, slots=True)
class OpusToc:
    """The Opus table-of-contents byte: ``config(5)|s(1)|c(2)`` (RFC 6716 §3.1)."""

    config: int
    """Configuration number 0..31 (mode, bandwidth and frame size together)."""
    mode: OpusMode
    bandwidth: OpusBandwidth
    frame_duration_ms: float
    """Duration of each frame in the packet: 2.5, 5, 10, 20, 40 or 60 ms."""
    stereo: bool
    """s: the packet is coded as stereo."""
    frame_count_code: int
    """c: 0 one frame, 1 two equal-size frames, 2 two frames of different size, 3 an
    arbitrary number of frames (the count is in the next byte, RFC 6716 §3.2.5)."""

    @property
    def toc(self) -> int:
        """The TOC byte this was parsed from."""
        return (self.config << 3) | (int(self.stereo) << 2) | self.frame_count_code


def _opus_config(config: int) -> tuple[OpusMode, OpusBandwidth, float]:
    # RFC 6716 §3.1, Table 2: configs come in runs of 4 (SILK, CELT) or 2 (Hybrid) sizes.
    bw = OpusBandwidth
    if config < 12:
        return OpusMode.SILK, (bw.NB, bw.MB, bw.WB)[config // 4], (10, 20, 40, 60)[config % 4]
    if config < 16:
        return OpusMode.HYBRID, (bw.SWB, bw.FB)[(config - 12) // 2], (10, 20)[config % 2]
    # CELT has no MB: its four bandwidths are NB, WB, SWB, FB.
    band = (bw.NB, bw.WB, bw.SWB, bw.FB)[(config - 16) // 4]
    return OpusMode.CELT, band, (2.5, 5, 10, 20)[config % 4]


def _make_toc(byte: int) -> OpusToc:
    config = byte >> 3
    mode, bandwidth, duration = _opus_config(config)
    return OpusToc(
        config=config,
        mode=mode,
        bandwidth=bandwidth,
        frame_duration_ms=float(duration),
        stereo=bool(byte & 0x04),
        frame_count_code=byte & 0x03,
    )


# Every TOC byte value has one immutable parse: build them once.
_OPUS_TOCS: tuple[OpusToc, ...] = tuple(_make_toc(b) for b in range(256))


def parse_opus_toc(byte_or_frame: int | BytesLike) -> OpusToc:
    """Parse an Opus TOC byte (RFC 6716 §3.1), given as an int or as the packet itself.

    Every byte value is a valid TOC; only the rest of the packet (not read here) can be
    malformed (RFC 6716 §3.4).  Raises :class:`OpusParseError` on an empty packet, which
    RFC 6716 §3.4 rule R1 forbids, or on an int outside 0..255.
    """
    if isinstance(byte_or_frame, int):
        if not 0 <= byte_or_frame <= 0xFF:
            raise OpusParseError(f"Opus TOC byte out of range: {byte_or_frame}")
        return _OPUS_TOCS[byte_or_frame]
    head = _head(byte_or_frame, 1)
    if not head:
        raise OpusParseError("empty Opus packet: no TOC byte (RFC 6716 §3.4, R1)")
    return _OPUS_TOCS[head[0]]


# -- SFrame header (RFC 9605 §4.3) ------------------------------------------------------


def parse_sframe_header(data: BytesLike, offset: int = 0) -> tuple[int, int, int] | None:
    """``(kid, ctr, length)`` of the SFrame header at ``offset``, or ``None`` when the bytes
    are not one.

    For the router, which reads headers but never loads the crypto core.  The same rules
    as the core's decoder (docs/protocol.md §5): ``|X|K(3)|Y|C(3)|``, a value below 8 in
    the config byte, a larger one in the fewest big-endian bytes that hold it; a
    truncated or non-minimal header is not a header.
    """
    if not 0 <= offset < len(data):
        return None
    config = data[offset]
    pos = offset + 1
    values = []
    for nibble in (config >> 4, config & 0x0F):
        if not nibble & 0x08:
            values.append(nibble)
            continue
        n = (nibble & 0x07) + 1
        if pos + n > len(data):
            return None
        value = int.from_bytes(data[pos : pos + n], "big")
        if value < 8 or (value.bit_length() + 7) // 8 != n:
            return None  # non-minimal: the core refuses it too
        values.append(value)
        pos += n
    return values[0], values[1], pos - offset
