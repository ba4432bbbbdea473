"""The media loop of ``e2ee bench router`` and the stamp each publisher puts in its frames.

:func:`prepare_media` (run once, by the parent) encodes a loop of real VP8 frames (libvpx
through PyAV: 640x480, 30 fps, ~1 Mbit/s, a key frame every 2 s; a gradient with a moving
noise patch so that the rate controller fills the budget) and of real Opus frames
(libopus, 20 ms, 48 kbit/s tone) and writes them to one file; :func:`load_media` reads it
back in each publisher.

:data:`STAMP` (``MAGIC | seq (u32) | CLOCK_MONOTONIC ns (u64)``) goes right after a
frame's clear codec header, :func:`clear_bytes` long, so it travels encrypted.
"""

from __future__ import annotations

import fractions
import math
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AUDIO_CLOCK",
    "AUDIO_FRAME_SAMPLES",
    "MAGIC",
    "STAMP",
    "VIDEO_CLOCK",
    "VP8_PAYLOAD_BYTES",
    "Media",
    "clear_bytes",
    "load_media",
    "prepare_media",
]

#: The stamp each publisher writes into the encrypted part of every frame.
STAMP = struct.Struct(">4sIQ")
MAGIC = b"E2BR"
#: VP8 payload bytes per RTP packet in aiortc's packetizer (1300 minus a 4-byte descriptor).
VP8_PAYLOAD_BYTES = 1296
VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
AUDIO_FRAME_SAMPLES = 960  # 20 ms

_MEDIA_MAGIC = b"E2BRMEDIA1\n"
_RECORD = struct.Struct(">cBI")  # kind (b"v" / b"a"), key flag, length


@dataclass
class Media:
    video: list[bytes] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)

    @property
    def keyframes(self) -> list[int]:
        return [i for i, f in enumerate(self.video) if f and f[0] & 1 == 0]


def _source_picture(
    n: int, width: int, height: int, base: bytes, patch: int, rnd: random.Random
) -> bytes:
    """Picture ``n`` of the loop's luma: the gradient with the noise patch moved along."""
    luma = bytearray(base)
    bx = (n * 5) % (width - patch)
    by = (n * 3) % (height - patch)
    for y in range(by, by + patch):
        luma[y * width + bx : y * width + bx + patch] = rnd.randbytes(patch)
    return bytes(luma)


def _video_frame(luma: bytes, chroma: bytes, width: int, height: int) -> Any:
    import av

    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, data, w in (
        (frame.planes[0], luma, width),
        (frame.planes[1], chroma, width // 2),
        (frame.planes[2], chroma, width // 2),
    ):
        if plane.line_size == w:
            plane.update(data)
        else:  # pragma: no cover - padded planes
            rows = len(data) // w
            buf = bytearray(plane.line_size * rows)
            for y in range(rows):
                buf[y * plane.line_size : y * plane.line_size + w] = data[y * w : (y + 1) * w]
            plane.update(bytes(buf))
    return frame


def _encode_video(
    seconds: float, width: int, height: int, fps: int, bitrate: int, gop: int
) -> list[bytes]:
    import av

    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.bit_rate = bitrate
    codec.gop_size = gop
    codec.time_base = fractions.Fraction(1, VIDEO_CLOCK)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rnd = random.Random(20260522)
    row = bytes((x * 255) // width for x in range(width))
    base = bytes(row * height)
    chroma = bytes([128]) * ((width // 2) * (height // 2))
    patch = min(96, width // 2, height // 2)
    frames: list[bytes] = []
    for n in range(max(1, round(seconds * fps))):
        luma = _source_picture(n, width, height, base, patch, rnd)
        frame = _video_frame(luma, chroma, width, height)
        frame.pts = n * (VIDEO_CLOCK // fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        frames.extend(bytes(p) for p in codec.encode(frame))
    frames.extend(bytes(p) for p in codec.encode(None))
    return [f for f in frames if f]


def _encode_audio(seconds: float, bitrate: int) -> list[bytes]:
    import av

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_CLOCK
    codec.format = "s16"
    codec.layout = "mono"
    codec.bit_rate = bitrate
    codec.time_base = fractions.Fraction(1, AUDIO_CLOCK)
    codec.options = {"application": "voip"}
    period = AUDIO_CLOCK // 400
    one = [round(6000 * math.sin(2 * math.pi * i / period)) for i in range(period)]
    pcm = struct.pack(f"<{AUDIO_FRAME_SAMPLES}h", *(one * (AUDIO_FRAME_SAMPLES // period)))
    packets: list[bytes] = []
    for n in range(max(1, round(seconds * AUDIO_CLOCK / AUDIO_FRAME_SAMPLES))):
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = n * AUDIO_FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, AUDIO_CLOCK)
        packets.extend(bytes(p) for p in codec.encode(frame))
    return [p for p in packets if p]


def prepare_media(
    path: Path,
    *,
    seconds: float = 10.0,
    width: int = 640,
    height: int = 480,
    fps: int = 30,
    bitrate: int = 1_000_000,
    gop: int = 60,
    audio_bitrate: int = 48_000,
) -> dict[str, Any]:
    """Encode the media loop once and write it to ``path``; returns a summary."""
    video = _encode_video(seconds, width, height, fps, bitrate, gop)
    audio = _encode_audio(min(seconds, 2.0), audio_bitrate)
    with open(path, "wb") as f:
        f.write(_MEDIA_MAGIC)
        for kind, frames in ((b"v", video), (b"a", audio)):
            for data in frames:
                key = 1 if kind == b"v" and data[0] & 1 == 0 else 0
                f.write(_RECORD.pack(kind, key, len(data)))
                f.write(data)
    sizes = [len(v) for v in video]
    packets = [math.ceil((n + STAMP.size + 16) / VP8_PAYLOAD_BYTES) for n in sizes]
    return {
        "video_codec": "VP8 (libvpx, realtime, cpu-used 8)",
        "width": width,
        "height": height,
        "fps": fps,
        "video_frames": len(video),
        "video_keyframes": sum(1 for v in video if v[0] & 1 == 0),
        "video_bitrate_bps": round(sum(sizes) * 8 * fps / len(sizes)),
        "video_frame_bytes_mean": round(sum(sizes) / len(sizes), 1),
        "video_frame_bytes_max": max(sizes),
        "video_packets_per_frame_mean": round(sum(packets) / len(packets), 3),
        "audio_codec": "Opus (libopus, 20 ms)",
        "audio_frames_per_s": AUDIO_CLOCK // AUDIO_FRAME_SAMPLES,
        "audio_frame_bytes_mean": round(sum(len(a) for a in audio) / max(1, len(audio)), 1),
        "stamp_bytes": STAMP.size,
    }


def load_media(path: Path) -> Media:
    data = path.read_bytes()
    if not data.startswith(_MEDIA_MAGIC):
        raise ValueError(f"{path}: not a bench media file")
    media = Media()
    pos = len(_MEDIA_MAGIC)
    while pos < len(data):
        kind, _key, n = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        (media.video if kind == b"v" else media.audio).append(data[pos : pos + n])
        pos += n
    return media


def clear_bytes(video: bool, frame: bytes) -> int:
    """The clear prefix of the E2EE frame format (RFC 6386 §9.1 key bit; Opus TOC)."""
    if not video:
        return 1
    return 3 if frame[0] & 1 else 10
