"""The clear prefix: how many bytes of a VP8 or Opus frame stay readable under E2EE.

The media layer and the router never decode media.  They read only:

* the VP8 RTP payload descriptor (RFC 7741 §4.2), which sits in every RTP packet outside
  the encrypted frame;
* the VP8 frame tag and key-frame header (RFC 6386 §9.1, RFC 7741 §4.3), the first 3 or 10
  bytes of a frame, which the E2EE frame format keeps in clear;
* the Opus TOC byte (RFC 6716 §3.1), the 1 byte kept in clear on audio frames.

:func:`clear_prefix_length` and :func:`is_vp8_keyframe` run once per frame and are kept
cheap.  The parsers of those bytes, which build dataclasses for inspection, logging, tests
and the router's occasional checks, are in :mod:`e2ee.wire.vp8` and :mod:`e2ee.wire.opus`.

Pure Python, standard library only: this module must not import the Rust extension.
"""

from __future__ import annotations

from typing import TypeAlias

from e2ee.errors import CodecError, FrameTooShort, UnsupportedCodec

__all__ = [
    "CLEAR_BYTES_OPUS",
    "CLEAR_BYTES_VP8_DELTA",
    "CLEAR_BYTES_VP8_KEY",
    "VP8_START_CODE",
    "BytesLike",
    "CodecError",
    "FrameTooShort",
    "UnsupportedCodec",
    "clear_prefix_length",
    "is_vp8_keyframe",
    "leading_bytes",
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


def leading_bytes(data: BytesLike, n: int) -> bytes:
    """At most ``n`` leading bytes as ``bytes`` (a memoryview of a wider item format is
    flattened too)."""
    if isinstance(data, bytes):
        return data[:n]
    return bytes(data[:n])[:n]
