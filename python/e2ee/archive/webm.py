"""One archived track written to WebM with PyAV's muxer: encoded frames in, a WebM file
out; nothing is decoded or re-encoded.

The stream is created from codec parameters only (``add_mux_stream``: no codec context,
no encoder or decoder opened).  Timestamps come from RTP (RFC 3550 §5.1): 90 kHz for VP8
(RFC 7741 §4.1), 48 kHz for Opus (RFC 7587 §4.1), unwrapped past 2^32 and counted from
the track's first frame; Matroska stores them in milliseconds.  A frame older than the
last one written (reordered or repeated) is dropped: the muxer needs increasing times.

Not thread-safe: one writer belongs to one worker thread
(:class:`e2ee.archive.recorder.TrackRecorder`).
"""

from __future__ import annotations

import contextlib
import fractions
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av

__all__ = ["CLOCK_RATES", "TrackSummary", "WebmTrackWriter"]

#: RTP clock rates of the archived codecs.
CLOCK_RATES = {"video": 90_000, "audio": 48_000}
_CODECS = {"video": "vp8", "audio": "opus"}
#: An Opus frame in WebRTC lasts 20 ms (RFC 7587 §4.2, the usual ptime), for the length
#: of the last frame.
_AUDIO_FRAME = 960


@dataclass
class TrackSummary:
    """What a writer wrote: ``frames``, ``bytes``, ``duration`` (seconds, from the first
    frame's start to the last frame's end), ``width``/``height`` (video), and
    ``out_of_order`` frames dropped."""

    frames: int = 0
    bytes: int = 0
    duration: float = 0.0
    width: int | None = None
    height: int | None = None
    out_of_order: int = 0


class WebmTrackWriter:
    """Writes one track's frames to ``path``.  The file is created on the first frame
    (for video, the first key frame: its size goes into the header)."""

    def __init__(self, path: Path, kind: str) -> None:
        if kind not in _CODECS:
            raise ValueError(f"kind must be 'video' or 'audio', not {kind!r}")
        self.path = path
        self.kind = kind
        self.clock = CLOCK_RATES[kind]
        self._time_base = fractions.Fraction(1, self.clock)
        self._container: Any = None
        self._file: BinaryIO | None = None
        self._stream: Any = None
        self._last_rtp: int | None = None
        self._pts = 0
        self._last_delta = 0
        self.summary = TrackSummary()

    def write(
        self, frame: bytes, rtp_timestamp: int, key: bool, size: tuple[int, int] | None
    ) -> None:
        """Muxes one encoded frame.  ``size``: (width, height) of a video key frame."""
        if self._container is None:
            if self.kind == "video" and (not key or size is None):
                return  # a video file starts on a key frame
            self._open(size)
            self._last_rtp = rtp_timestamp
        else:
            assert self._last_rtp is not None
            delta = (rtp_timestamp - self._last_rtp) & 0xFFFFFFFF
            if delta == 0 or delta >= 0x80000000:  # repeated or older: out of order
                self.summary.out_of_order += 1
                return
            self._last_rtp = rtp_timestamp
            self._pts += delta
            self._last_delta = delta
        packet = av.Packet(frame)
        packet.stream = self._stream
        packet.time_base = self._time_base
        packet.pts = packet.dts = self._pts
        packet.is_keyframe = key or self.kind == "audio"
        self._container.mux(packet)
        self.summary.frames += 1
        self.summary.bytes += len(frame)

    def _open(self, size: tuple[int, int] | None) -> None:
        # The file is opened and written through a Python file object: its system calls
        # release the GIL, so a stalled disk stalls this thread only (libavformat's own
        # avio_open would block holding it, and with it the event loop).
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()/abandon()
        try:
            container = av.open(self._file, "w", format="webm")
        except BaseException:
            self._file.close()
            raise
        try:
            if self.kind == "video":
                assert size is not None
                stream = container.add_mux_stream("vp8", width=size[0], height=size[1])
                self.summary.width, self.summary.height = size
            else:
                stream = container.add_mux_stream("opus", rate=self.clock)
        except BaseException:
            container.close()
            self._file.close()
            raise
        self._container, self._stream = container, stream

    @property
    def opened(self) -> bool:
        return self._container is not None

    def close(self) -> TrackSummary:
        """Writes the index and closes the file; the summary of what was written."""
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            finally:
                self._close_file()
            last = self._last_delta if self.kind == "video" else _AUDIO_FRAME
            self.summary.duration = (self._pts + last) / self.clock
        return self.summary

    def abandon(self) -> None:
        """Closes the file after a failure, ignoring further errors."""
        container, self._container = self._container, None
        # Already failed: the first error is the one reported.
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        with contextlib.suppress(Exception):
            self._close_file()

    def _close_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()
