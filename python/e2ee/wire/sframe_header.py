"""The SFrame header (RFC 9605 §4.3) as the router reads it: KID and CTR, never a key.
Standard library only; the same rules as the Rust core's decoder.
"""

from __future__ import annotations

from e2ee.wire.codecs import BytesLike

__all__ = ["parse_sframe_header"]


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
