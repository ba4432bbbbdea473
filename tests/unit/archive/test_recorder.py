"""The track recorder's bounded queue: a writer that cannot keep up (here one stuck
opening its file: a FIFO nobody reads yet, as a stalled disk) makes the recorder drop
frames, counted, and wait for a key frame, instead of holding them all in memory; once
the writer moves again, the file is finished normally."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from e2ee.archive.recorder import TrackRecorder
from e2ee.sfu.frames import RelayFrame


class _Source:
    kind = "audio"
    track_id = "t"

    def __init__(self, kind: str = "audio") -> None:
        self.kind = kind
        self.attached: set[TrackRecorder] = set()
        self.keyframe_requests = 0

    def attach(self, relay: TrackRecorder) -> None:
        self.attached.add(relay)

    def detach(self, relay: TrackRecorder) -> None:
        self.attached.discard(relay)

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1


@pytest.mark.asyncio
async def test_overflow_drops_frames_and_the_file_is_finished(tmp_path: Path) -> None:
    path = tmp_path / "00-audio.webm"
    os.mkfifo(path)
    done = asyncio.Event()
    source = _Source()
    recorder = TrackRecorder(source, path, queue_frames=3, on_done=lambda r: done.set())
    opus = bytes([0x78]) + bytes(40)  # a TOC byte and a frame's worth of bytes
    for n in range(10):
        recorder.send(RelayFrame([opus], 960 * n))
    # The worker holds the first frame (stuck opening the FIFO) and 3 wait in the queue
    # at most: the rest were dropped, nothing grew.
    assert recorder.dropped_overflow >= 6
    assert recorder.frames_in + recorder.dropped_overflow == 10
    sink = bytearray()

    def drain() -> None:
        with open(path, "rb") as fifo:
            while chunk := fifo.read(65536):
                sink.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    recorder.stop()
    await asyncio.wait_for(done.wait(), 30)
    reader.join(10)
    assert recorder.error is None
    assert recorder.summary.frames == recorder.frames_in
    assert sink[:4] == b"\x1a\x45\xdf\xa3"  # an EBML (WebM) header


@pytest.mark.asyncio
async def test_video_waits_for_a_key_frame_and_a_write_error_is_reported(
    tmp_path: Path,
) -> None:
    done = asyncio.Event()
    source = _Source("video")
    missing = tmp_path / "gone" / "00-video.webm"  # its directory does not exist
    recorder = TrackRecorder(source, missing, queue_frames=8, on_done=lambda r: done.set())
    recorder.send(RelayFrame([b"\x10\x01\x00\x00"], 0))  # delta frame first: dropped
    assert recorder.dropped_waiting == 1
    key = b"\x10" + b"\x50\x02\x00\x9d\x01\x2a\x40\x01\xf0\x00" + bytes(20)
    recorder.send(RelayFrame([key], 3000, keyframe=True))
    await asyncio.wait_for(done.wait(), 30)
    assert recorder.error is not None
    assert "No such file or directory" in recorder.error
    recorder.send(RelayFrame([key], 6000, keyframe=True))  # refused after the failure
    assert recorder.frames_in == 1
