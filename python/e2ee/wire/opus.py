"""The Opus TOC byte (RFC 6716 §3.1), the one byte of an Opus packet that stays readable
under E2EE.  Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from e2ee.errors import OpusParseError
from e2ee.wire.codecs import BytesLike, leading_bytes

__all__ = ["OpusBandwidth", "OpusMode", "OpusParseError", "OpusToc", "parse_opus_toc"]


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
    head = leading_bytes(byte_or_frame, 1)
    if not head:
        raise OpusParseError("empty Opus packet: no TOC byte (RFC 6716 §3.4, R1)")
    return _OPUS_TOCS[head[0]]
