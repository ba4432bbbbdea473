"""From a frame's RTP payloads back to the encoded frame: framing removed, nothing decoded.

VP8 (RFC 7741 §4.2): each RTP payload starts with a VP8 payload descriptor; the frame is
the concatenation of the payloads after their descriptors (the partitions, in order).
Opus (RFC 7587 §4.2): one RTP payload carries exactly one Opus packet, which is the frame.
"""

from __future__ import annotations

from collections.abc import Sequence

from e2ee.wire.codecs import VP8_START_CODE
from e2ee.wire.vp8 import vp8_descriptor_size

__all__ = ["opus_frame", "vp8_frame", "vp8_keyframe_size"]


def vp8_frame(payloads: Sequence[bytes]) -> bytes | None:
    """The VP8 frame carried by ``payloads``; ``None`` if a descriptor is truncated."""
    parts: list[bytes] = []
    for payload in payloads:
        n = vp8_descriptor_size(payload)
        if n < 0:
            return None
        parts.append(payload[n:])
    frame = b"".join(parts)
    return frame or None


def vp8_keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height of a VP8 key frame (RFC 6386 §9.1: a 3-byte frame tag, the start
    code, then 14-bit width and height); ``None`` for a delta or malformed frame."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != VP8_START_CODE:
        return None
    width = (frame[6] | frame[7] << 8) & 0x3FFF
    height = (frame[8] | frame[9] << 8) & 0x3FFF
    return (width, height) if width and height else None


def opus_frame(payloads: Sequence[bytes]) -> bytes | None:
    """The Opus packet of a frame (one RTP payload); ``None`` if empty."""
    return payloads[0] if payloads and payloads[0] else None
