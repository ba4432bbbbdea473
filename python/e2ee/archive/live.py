"""One archive in progress: a :class:`~e2ee.archive.recorder.TrackRecorder` per archived
track, the maximum duration, the stop, and the finished files.

``output_mode`` ``individual``: one WebM file per track (``NN-video.webm`` /
``NN-audio.webm``, numbered in the order the tracks joined; the manifest maps files to
streams).  Streams are added while the archive runs (:meth:`LiveArchive.add_stream`); a
stream that ends finishes its files at once.  The archive stops when asked
(:meth:`LiveArchive.stop`), at ``max_duration``, or when a track cannot be written
(status ``failed`` with the reason; the session goes on).  ``on_stopped(archive)`` runs
when recording stops, ``on_finished(archive)`` once the files, manifest and zip are
written (or failed); both on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2ee.archive.manifest import ArchiveRecord, write_manifest_and_zip

if TYPE_CHECKING:
    from e2ee.archive.recorder import TrackRecorder, TrackSource

__all__ = ["LiveArchive", "StreamInfo"]

#: Why an archive may stop without having failed.
_CLEAN_ENDS = ("stopped", "session_ended", "max_duration")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamInfo:
    """What the manifest says of an archived stream."""

    stream_id: str
    connection_id: str
    connection_data: str
    name: str


class LiveArchive:
    """See the module docs.  ``directory`` is this archive's own directory (created by
    :meth:`open`)."""

    def __init__(
        self,
        record: ArchiveRecord,
        directory: Path,
        *,
        max_duration: float,
        queue_frames: int,
        on_stopped: Callable[[LiveArchive], None],
        on_finished: Callable[[LiveArchive], None],
    ) -> None:
        self.record = record
        self.directory = directory
        self.queue_frames = queue_frames
        self._on_stopped = on_stopped
        self._on_finished = on_finished
        self._started = time.time()
        self._tracks: list[tuple[TrackRecorder, StreamInfo, float]] = []  # + attach time
        self._streams: set[str] = set()
        self._pending: set[TrackRecorder] = set()  # recorders not done yet
        self._all_done = asyncio.Event()
        self._all_done.set()
        self._finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(
            max_duration, self.stop_soon, "max_duration"
        )

    @property
    def recording(self) -> bool:
        return self.record.status == "started"

    async def open(self) -> None:
        """Creates the archive's directory; ``OSError`` if it cannot be."""
        await asyncio.to_thread(self.directory.mkdir, parents=True)

    # -- tracks ---------------------------------------------------------------------------

    def add_stream(self, info: StreamInfo, sources: Sequence[TrackSource]) -> int:
        """Starts recording the tracks of a stream that the archive wants (audio/video as
        the archive says); how many.  ``sources``: the stream's forwarders."""
        if not self.recording or info.stream_id in self._streams:
            return 0
        from e2ee.archive.recorder import TrackRecorder  # needs e2ee.sfu (aiortc) and PyAV

        self._streams.add(info.stream_id)
        added = 0
        for source in sources:
            wanted = self.record.has_video if source.kind == "video" else self.record.has_audio
            if not wanted:
                continue
            path = self.directory / f"{len(self._tracks):02d}-{source.kind}.webm"
            recorder = TrackRecorder(
                source, path, queue_frames=self.queue_frames, on_done=self._track_done
            )
            self._tracks.append((recorder, info, time.time()))
            self._pending.add(recorder)
            self._all_done.clear()
            source.attach(recorder)
            added += 1
        return added

    def _track_done(self, recorder: TrackRecorder) -> None:
        self._pending.discard(recorder)
        if not self._pending:
            self._all_done.set()
        if recorder.error is not None and self.record.reason in (None, *_CLEAN_ENDS):
            self.record.reason = f"{recorder.path.name}: {recorder.error}"
            self.stop_soon("failed")  # the reason set above is kept

    # -- stop -----------------------------------------------------------------------------

    def stop_soon(self, reason: str) -> bool:
        """Stops recording now (``reason``: ``stopped``, ``session_ended``,
        ``max_duration``, ``failed``); the files are finished in a task (:meth:`wait`).
        ``False`` if it was not recording any more."""
        if self.record.status != "started":
            return False
        self._timer.cancel()
        record = self.record
        record.status = "stopped"
        record.stopped_at = time.time()
        if record.reason is None:
            record.reason = reason
        for recorder, _, _ in self._tracks:
            recorder.stop()
        try:
            self._on_stopped(self)
        except Exception:  # pragma: no cover - defensive
            log.exception("archive %s: stop callback failed", record.id)
        self._task = asyncio.get_running_loop().create_task(self._finish_when_done())
        return True

    async def _finish_when_done(self) -> None:
        await self._all_done.wait()
        await self._finish(failed=self.record.reason not in _CLEAN_ENDS)

    async def _finish(self, *, failed: bool) -> None:
        record = self.record
        record.duration = round(max(0.0, (record.stopped_at or time.time()) - self._started), 3)
        record.streams = [self._entry(r, info, t0) for r, info, t0 in self._tracks]
        errors = [f"{r.path.name}: {r.error}" for r, _, _ in self._tracks if r.error is not None]
        if errors and record.reason in (None, *_CLEAN_ENDS):
            record.reason = errors[0]
        # The manifest says what the archive becomes; the record shows it only once the
        # zip is there (and with it, through on_finished, its expiry).
        status = "failed" if failed or errors else "available"
        try:
            record.size = await asyncio.to_thread(
                write_manifest_and_zip, self.directory, replace(record, status=status)
            )
        except Exception as exc:  # OSError: disk full, permission; never left "stopped"
            if not isinstance(exc, OSError):
                log.exception("archive %s: the manifest or zip failed", record.id)
            if status != "failed":
                text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                record.reason = f"the archive could not be written: {text}"
            status = "failed"
        record.status = status
        self._finished.set()
        self._on_finished(self)

    def _entry(self, recorder: TrackRecorder, info: StreamInfo, attached: float) -> dict[str, Any]:
        summary = recorder.summary
        start = recorder.first_frame_at or attached
        entry: dict[str, Any] = {
            "stream_id": info.stream_id,
            "connection_id": info.connection_id,
            "connection_data": info.connection_data,
            "name": info.name,
            "kind": recorder.kind,
            "file": recorder.path.name,
            "start_offset": round(max(0.0, start - self._started), 3),
            "duration": round(summary.duration, 3),
            "frames": summary.frames,
            "size": summary.bytes,
            "error": recorder.error,
            **recorder.stats(),
        }
        if recorder.kind == "video":
            entry.update(width=summary.width, height=summary.height)
        return entry

    async def wait(self) -> None:
        """Returns once the archive has stopped and its files are finished."""
        await self._finished.wait()

    def stats(self) -> list[dict[str, Any]]:
        return [
            {"file": r.path.name, "stream_id": info.stream_id, **r.stats()}
            for r, info, _ in self._tracks
        ]
