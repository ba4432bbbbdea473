"""One archived track: a subscriber of the router's :class:`e2ee.sfu.ingress.Forwarder`
whose frames go to a WebM writer on a thread of its own.

On the event loop, :meth:`TrackRecorder.send` only checks the gate and appends the frame
to a bounded queue: no I/O, no wait.  The worker thread depacketizes
(:mod:`e2ee.archive.depacketize`) and muxes (:mod:`e2ee.archive.webm`).  A writer that
falls behind makes the recorder drop frames (``dropped_overflow``, logged once per
track) and, for video, wait for the next key frame (one is requested), rather than hold
more than ``queue_frames`` frames in memory.  A write error (disk full, permission) ends
the track at once with ``error`` set; the rest of the session does not notice.  ``on_done(self)``
runs on the event loop once the worker has finished (closed the file or failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from e2ee.archive.depacketize import opus_frame, vp8_frame, vp8_keyframe_size
from e2ee.archive.webm import TrackSummary, WebmTrackWriter
from e2ee.sfu.frames import RelayFrame
from e2ee.sfu.policy import FrameGate

__all__ = ["TrackRecorder", "TrackSource"]

log = logging.getLogger(__name__)

_STOP = None


class TrackSource(Protocol):
    """What a recorder needs of a published track (an :class:`e2ee.sfu.ingress.Forwarder`)."""

    kind: str
    track_id: str

    def attach(self, relay: TrackRecorder) -> None: ...

    def detach(self, relay: TrackRecorder) -> None: ...

    def request_keyframe(self) -> None: ...


class TrackRecorder:
    """Records the frames of ``source`` into ``path`` (see the module docs)."""

    def __init__(
        self,
        source: TrackSource,
        path: Path,
        *,
        queue_frames: int,
        on_done: Callable[[TrackRecorder], None],
    ) -> None:
        self.source = source
        self.kind = source.kind
        self.path = path
        self.video = self.kind == "video"
        # Only need_keyframe and lost() are used: video starts (and restarts after a loss
        # or an overflow) on a key frame; the forwarder asks the publisher for one while
        # need_keyframe is set.
        self._gate = FrameGate(queue_frames, self.video)
        self._capacity = queue_frames
        self._queue: queue.SimpleQueue[tuple[list[bytes], int, bool] | None] = queue.SimpleQueue()
        self._queued = 0  # frames in the queue (counted on the loop, decremented by the worker)
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._on_done = on_done
        self.ended = False
        self.done = False
        self.error: str | None = None
        self.summary = TrackSummary()
        self.frames_in = 0
        self.first_frame_at: float | None = None  # wall time of the first frame kept
        self.dropped_waiting = 0
        self.dropped_overflow = 0
        self._thread = threading.Thread(target=self._work, name=f"archive-{path.name}", daemon=True)
        self._thread.start()

    # -- Subscriber (event loop) ----------------------------------------------------------

    @property
    def gate(self) -> FrameGate:
        return self._gate

    def send(self, frame: RelayFrame) -> None:
        if self.ended or self.error is not None:
            return
        gate = self._gate
        if self.video and gate.need_keyframe:
            if not frame.keyframe:
                self.dropped_waiting += 1
                return
            gate.need_keyframe = False
        with self._lock:
            full = self._queued >= self._capacity
            if not full:
                self._queued += 1
        if full:
            if not self.dropped_overflow:
                log.warning(
                    "archive %s: the writer is behind, dropping frames (queue of %d full)",
                    self.path.name,
                    self._capacity,
                )
            self.dropped_overflow += 1
            if self.video:
                gate.lost()
                self.source.request_keyframe()
            return
        self.frames_in += 1
        if self.first_frame_at is None:
            self.first_frame_at = time.time()
        self._queue.put((frame.payloads, frame.timestamp, frame.keyframe))

    def end(self) -> None:
        """No more frames: the worker closes the file (idempotent)."""
        if not self.ended:
            self.ended = True
            self._queue.put(_STOP)

    def stop(self) -> None:
        """Detaches from the track and ends."""
        self.source.detach(self)
        self.end()

    # -- worker thread --------------------------------------------------------------------

    def _work(self) -> None:
        writer = WebmTrackWriter(self.path, self.kind)
        error: str | None = None
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            with self._lock:
                self._queued -= 1
            payloads, timestamp, key = item
            try:
                if self.video:
                    data = vp8_frame(payloads)
                    if data is None:
                        continue
                    writer.write(data, timestamp, key, vp8_keyframe_size(data) if key else None)
                else:
                    data = opus_frame(payloads)
                    if data is not None:
                        writer.write(data, timestamp, True, None)
            except Exception as exc:  # OSError, av.FFmpegError: the file cannot be written
                error = _describe(exc)
                self.error = error
                log.warning("archive %s: writing failed: %s", self.path.name, error)
                writer.abandon()
                break  # send() now refuses frames; the archive hears of it at once
        if error is None:
            try:
                self.summary = writer.close()
            except Exception as exc:
                error = self.error = _describe(exc)
                log.warning("archive %s: closing failed: %s", self.path.name, error)
        else:
            self.summary = writer.summary
        with contextlib.suppress(RuntimeError):  # the loop is gone (process exit)
            self._loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        self.done = True
        self._on_done(self)

    def stats(self) -> dict[str, object]:
        return {
            "frames_in": self.frames_in,
            "frames_written": self.summary.frames,
            "dropped_waiting_keyframe": self.dropped_waiting,
            "dropped_overflow": self.dropped_overflow,
            "dropped_out_of_order": self.summary.out_of_order,
        }


def _describe(exc: Exception) -> str:
    """A one-line reason for a write failure (no path beyond the file name)."""
    errno = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"{text} (errno {errno})" if errno else str(text)
