"""Depacketizing and remuxing without decoding: real VP8 and Opus frames from libvpx and
libopus (PyAV), packed as the router receives them, written to WebM by the archive's
writer and decoded here."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import pytest

from e2ee.archive.depacketize import opus_frame, vp8_frame, vp8_keyframe_size
from e2ee.archive.webm import WebmTrackWriter
from e2ee.tools.synthetic import (
    SyntheticAudioTrack,
    SyntheticVideoTrack,
    has_tone,
    looks_like_source,
)


def _vp8_frames(count: int) -> list[bytes]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 320, 240, "yuv420p"
    codec.time_base = fractions.Fraction(1, 90_000)
    codec.gop_size = 10
    track = SyntheticVideoTrack()
    frames: list[bytes] = []
    for n in range(count):
        frame = track.make_frame(n)
        frame.pts = n * 3000
        frame.time_base = codec.time_base
        frames += [bytes(p) for p in codec.encode(frame)]
    frames += [bytes(p) for p in codec.encode(None)]
    return frames


def _opus_frames(count: int) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = 48_000, "mono", "s16"
    codec.time_base = fractions.Fraction(1, 48_000)
    pcm = SyntheticAudioTrack()._pcm
    frames: list[bytes] = []
    for n in range(count):
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(pcm)
        frame.sample_rate, frame.pts = 48_000, n * 960
        frames += [bytes(p) for p in codec.encode(frame)]
    return frames


def _packetize_vp8(frame: bytes, picture_id: int, mtu: int = 300) -> list[bytes]:
    """RFC 7741 §4.2: X=1, I=1 with a 15-bit PictureID (M=1), S=1 on the first packet."""
    payloads = []
    for i in range(0, len(frame), mtu):
        first = 0x90 | (0x10 if i == 0 else 0)  # X, S
        head = bytes([first, 0x80, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF])
        payloads.append(head + frame[i : i + mtu])
    return payloads


def test_vp8_depacketize_joins_partitions() -> None:
    frames = _vp8_frames(3)
    for n, frame in enumerate(frames):
        payloads = _packetize_vp8(frame, 1000 + n)
        assert len(payloads) >= 1
        assert vp8_frame(payloads) == frame
        # A one-octet descriptor (X=0) too.
        assert vp8_frame([b"\x10" + frame]) == frame
    assert vp8_keyframe_size(frames[0]) == (320, 240)
    assert vp8_keyframe_size(frames[1]) is None  # a delta frame
    assert vp8_frame([b"\x90"]) is None  # truncated descriptor
    assert opus_frame([b"\x78abc"]) == b"\x78abc"
    assert opus_frame([b""]) is None


def _decode(path: Path) -> list[av.frame.Frame]:
    with av.open(str(path)) as container:
        return list(container.decode(container.streams[0]))


def test_video_remux_decodes_to_the_source(tmp_path: Path) -> None:
    frames = _vp8_frames(45)
    path = tmp_path / "v.webm"
    writer = WebmTrackWriter(path, "video")
    # Starts just below 2^32: the RTP timestamp wraps mid-file (RFC 3550 §5.1).
    ts = 0xFFFFFFFF - 3000 * 20
    writer.write(frames[1], ts - 3000, False, None)  # before the first key frame: skipped
    for n, frame in enumerate(frames):
        key = vp8_keyframe_size(frame) is not None
        writer.write(frame, (ts + n * 3000) & 0xFFFFFFFF, key, vp8_keyframe_size(frame))
    writer.write(frames[5], (ts + 3 * 3000) & 0xFFFFFFFF, False, None)  # older: dropped
    summary = writer.close()
    assert summary.frames == 45
    assert summary.out_of_order == 1
    assert summary.duration == pytest.approx(1.5)
    assert (summary.width, summary.height) == (320, 240)
    decoded = _decode(path)
    assert len(decoded) == 45
    assert all(looks_like_source(f) for f in decoded)  # type: ignore[arg-type]
    with av.open(str(path)) as container:
        assert container.duration / av.time_base == pytest.approx(1.5, abs=0.05)


def test_audio_remux_keeps_the_tone(tmp_path: Path) -> None:
    frames = _opus_frames(50)
    path = tmp_path / "a.webm"
    writer = WebmTrackWriter(path, "audio")
    for n, frame in enumerate(frames):
        writer.write(frame, 1234 + n * 960, True, None)
    summary = writer.close()
    assert summary.frames == len(frames)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48_000)
    decoded = [m for f in _decode(path) for m in resampler.resample(f)]  # type: ignore[arg-type]
    assert sum(m.samples for m in decoded) >= 0.95 * 48_000 * len(frames) / 50
    assert sum(has_tone(m) for m in decoded[2:]) >= 0.9 * len(decoded[2:])


def test_nothing_written_means_no_file(tmp_path: Path) -> None:
    writer = WebmTrackWriter(tmp_path / "none.webm", "video")
    assert writer.close().frames == 0
    assert not (tmp_path / "none.webm").exists()
    with pytest.raises(ValueError, match="kind"):
        WebmTrackWriter(tmp_path / "x.webm", "data")
