"""Synthetic media with content a receiver can verify: a video track whose picture has a
dark left half and a bright right half, a 400 Hz tone, a pre-encoded VP8 track, and a
collector of decoded frames that tells the real picture and tone from garbage.

Used by ``e2ee demo``, the benchmarks and the tests.  Everything is real media: libvpx and
libopus through PyAV.  No numpy: frames are built from byte patterns and checked by
sampling bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import itertools
import math
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_RATE = 48_000
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)

#: Luma of the left and right halves of the synthetic picture.  A receiver that decodes
#: the real picture sees a dark left half and a bright right half; garbage does not.
LEFT_LUMA = 40
RIGHT_LUMA = 210
#: Frequency of the synthetic tone: 48000 / 400 = 120 samples, an exact period.
TONE_HZ = 400
#: A frame carries the tone when this share of its energy is at TONE_HZ.  The decoded
#: tone measures above 0.99 (after its first frame); noise that libopus makes from
#: encrypted SILK frames reaches about 0.6, so the bar sits well between the two.
TONE_THRESHOLD = 0.9


class _Pacer:
    """Releases frame ``n`` at ``start + n * period`` on the wall clock (real time)."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._start: float | None = None
        self._n = 0

    async def next(self, track: MediaStreamTrack) -> int:
        if track.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        n = self._n
        self._n += 1
        wait = self._start + n * self.period - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        return n


class SyntheticVideoTrack(MediaStreamTrack):
    """A 30 fps yuv420p video track: dark left half, bright right half, and a grey block
    that moves every frame so that the encoder produces real delta frames."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._pacer = _Pacer(1 / fps)
        half = width // 2
        self._row = bytes([LEFT_LUMA]) * half + bytes([RIGHT_LUMA]) * (width - half)
        self._chroma = bytes([128]) * ((width // 2) * (height // 2))

    def make_frame(self, n: int) -> av.VideoFrame:
        w, h = self.width, self.height
        luma = bytearray(self._row * h)
        # A 32x32 block sliding along the vertical middle band of the picture.
        bx = (n * 4) % (w - 32)
        by = h // 2 - 16
        for y in range(by, by + 32):
            luma[y * w + bx : y * w + bx + 32] = b"\x80" * 32
        frame = av.VideoFrame(w, h, "yuv420p")
        _fill_plane(frame.planes[0], bytes(luma), w, h)
        _fill_plane(frame.planes[1], self._chroma, w // 2, h // 2)
        _fill_plane(frame.planes[2], self._chroma, w // 2, h // 2)
        frame.pts = n * (VIDEO_CLOCK_RATE // self.fps)
        frame.time_base = VIDEO_TIME_BASE
        return frame

    async def _pace(self) -> int:
        return await self._pacer.next(self)

    async def recv(self) -> av.VideoFrame:
        return self.make_frame(await self._pace())


class EncodedVp8Track(SyntheticVideoTrack):
    """A video track that returns pre-encoded VP8 ``av.Packet`` objects (aiortc's pack()
    path).  Key frames come every ``gop`` frames: the pack() path ignores aiortc's
    keyframe requests (PLI / secret change), so the source must produce them itself."""

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30, gop: int = 15):
        super().__init__(width, height, fps)
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.bit_rate = 400_000
        codec.gop_size = gop
        codec.time_base = VIDEO_TIME_BASE
        codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        self._codec = codec
        self.keyframes = 0
        self.packets = 0
        self._pending: list[av.Packet[Any]] = []
        self.keyframe_requests = 0
        self._force = False

    def request_keyframe(self) -> None:
        """Called by the E2EE transform on a PLI or a secret change (pack() path)."""
        self.keyframe_requests += 1
        self._force = True

    def _encode(self, n: int) -> list[av.Packet[Any]]:
        frame = self.make_frame(n)
        if self._force:
            self._force = False
            frame.pict_type = av.video.frame.PictureType.I
        return list(self._codec.encode(frame))

    async def recv(self) -> av.Packet[Any]:  # type: ignore[override]
        while not self._pending:
            n = await self._pace()
            self._pending = await asyncio.get_running_loop().run_in_executor(None, self._encode, n)
        packet = self._pending.pop(0)
        packet.pts = packet.pts if packet.pts is not None else 0
        packet.time_base = VIDEO_TIME_BASE
        self.packets += 1
        if bytes(packet)[0] & 1 == 0:
            self.keyframes += 1
        return packet


class SyntheticAudioTrack(MediaStreamTrack):
    """20 ms s16 mono frames at 48 kHz of a 400 Hz tone, paced in real time."""

    kind = "audio"
    samples = 960

    def __init__(self, amplitude: int = 8000) -> None:
        super().__init__()
        period = AUDIO_RATE // TONE_HZ
        one = array(
            "h", (round(amplitude * math.sin(2 * math.pi * i / period)) for i in range(period))
        )
        self._pcm = (one * (self.samples // period)).tobytes()
        self._pacer = _Pacer(self.samples / AUDIO_RATE)

    async def recv(self) -> av.AudioFrame:
        n = await self._pacer.next(self)
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.samples)
        frame.planes[0].update(self._pcm)
        frame.sample_rate = AUDIO_RATE
        frame.pts = n * self.samples
        frame.time_base = AUDIO_TIME_BASE
        return frame


def _fill_plane(plane: av.video.plane.VideoPlane, data: bytes, width: int, height: int) -> None:
    stride = plane.line_size
    if stride == width:
        plane.update(data)
        return
    buf = bytearray(stride * height)
    for y in range(height):
        buf[y * stride : y * stride + width] = data[y * width : (y + 1) * width]
    plane.update(bytes(buf))


# -- Checking decoded media --------------------------------------------------------------


def video_halves(frame: av.VideoFrame) -> tuple[float, float]:
    """Mean luma of the left and right halves, sampled on a few rows away from the moving
    block."""
    plane = frame.planes[0]
    data = bytes(plane)
    stride, w, h = plane.line_size, frame.width, frame.height
    left = right = 0
    rows = [h // 8, h // 4, 3 * h // 4, 7 * h // 8]
    for y in rows:
        row = data[y * stride : y * stride + w]
        left += sum(row[4 : w // 2 - 4])
        right += sum(row[w // 2 + 4 : w - 4])
    n = len(rows) * (w // 2 - 8)
    return left / n, right / n


def looks_like_source(frame: av.VideoFrame) -> bool:
    """True when a decoded frame shows the synthetic picture (dark left, bright right)."""
    left, right = video_halves(frame)
    return abs(left - LEFT_LUMA) < 20 and abs(right - RIGHT_LUMA) < 20


def tone_ratio(frame: av.AudioFrame) -> float:
    """Fraction of the frame's energy at TONE_HZ (Goertzel on the first channel).

    About 1.0 for the decoded tone, near 0 for silence or noise."""
    pcm = array("h", bytes(frame.planes[0]))
    channels = len(frame.layout.channels)
    x = pcm[::channels][: frame.samples]
    n = len(x)
    if n == 0:
        return 0.0
    total = sum(v * v for v in x)
    if total == 0:
        return 0.0
    k = 2 * math.cos(2 * math.pi * TONE_HZ / frame.sample_rate)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + k * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    return min(1.0, 2 * power / (n * total))


def has_tone(frame: av.AudioFrame) -> bool:
    """True when a decoded audio frame carries the synthetic tone."""
    return tone_ratio(frame) > TONE_THRESHOLD


@dataclass
class Received:
    """What a collector saw: one entry per decoded frame."""

    at: float
    """time.monotonic() when the frame came out of the track."""
    width: int = 0
    height: int = 0
    good: bool = False
    """The frame shows the source content (video picture / audio tone)."""


@dataclass
class FrameCollector:
    """Drains a remote track in the background and records every decoded frame.

    ``check`` decides whether a frame shows the source content; by default
    :func:`looks_like_source` for video and a tone ratio above 0.5 for audio.
    """

    track: MediaStreamTrack
    check: Callable[[av.frame.Frame], bool] | None = None
    frames: list[Received] = field(default_factory=list)
    ended: bool = False
    _task: asyncio.Task[None] | None = None

    def start(self) -> FrameCollector:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        check: Callable[[Any], bool] = self.check or (
            looks_like_source if self.track.kind == "video" else has_tone
        )
        try:
            while True:
                frame = await self.track.recv()
                entry = Received(at=time.monotonic(), good=check(frame))
                if isinstance(frame, av.VideoFrame):
                    entry.width, entry.height = frame.width, frame.height
                self.frames.append(entry)
        except MediaStreamError:
            self.ended = True

    async def wait_for(self, count: int, timeout: float, *, good: bool = True) -> bool:
        """Wait until ``count`` frames (good ones when ``good``) have been seen."""
        deadline = time.monotonic() + timeout
        while self.count(good=good) < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def count(self, *, good: bool = False, since: float = 0.0) -> int:
        return sum(1 for f in self.frames if f.at >= since and (f.good or not good))

    def max_gap(self, start: float, end: float) -> float:
        """The longest time without a good frame between ``start`` and ``end``."""
        times = [start] + [f.at for f in self.frames if f.good and start <= f.at <= end] + [end]
        return max(b - a for a, b in itertools.pairwise(times))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- A protected call ---------------------------------------------------------------------
