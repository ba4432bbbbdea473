"""Archives of live sessions: the :class:`ArchiveService` that starts and stops them,
follows the session's streams, keeps the records, and tells the clients.

Only routed sessions without E2EE can be archived: an E2EE session's router never has
the media in the clear (``409 e2ee_unsupported_feature``), a relayed session has no
router at all (``409 relayed_unsupported_feature``).  An archive follows the session's
:class:`e2ee.server.rooms.Room` as a :class:`~e2ee.server.rooms.RoomObserver`: each
stream published before or during the archive gets a recorder per archived track
(:mod:`e2ee.archive`); the archive stops when asked, at the maximum duration, or when
the room closes (everyone left, the session was deleted).  Clients in the session get
``archive_started`` and ``archive_stopped``.  Records live in the
:class:`~e2ee.archive.catalog.ArchiveCatalog`, files in ``<data dir>/archives/<id>/``.
In cluster mode the catalog is shared (Redis) and each record names the node holding
the files (``node_id``); :mod:`e2ee.server.archives` sends what needs them there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from e2ee.archive.catalog import ArchiveCatalog, SQLiteArchiveCatalog
from e2ee.archive.config import ArchiveConfig
from e2ee.archive.live import LiveArchive, StreamInfo
from e2ee.archive.manifest import ZIP_NAME, ArchiveRecord, new_archive_id
from e2ee.archive.retention import RetentionSweeper, delete_archive_files
from e2ee.server.errors import ApiError
from e2ee.server.hub import Hub
from e2ee.server.rooms import Room, Stream
from e2ee.server.store import SessionRecord

__all__ = ["ARCHIVES_DIR", "RECOVER_LIMIT", "ArchiveService"]

log = logging.getLogger(__name__)

#: The archives' directory inside the data directory.
ARCHIVES_DIR = "archives"
#: Records :meth:`ArchiveService.recover` looks through at a start (the newest).
RECOVER_LIMIT = 10_000


class _Follower:
    """One live archive following its room (a :class:`~e2ee.server.rooms.RoomObserver`)."""

    def __init__(self, service: ArchiveService, live: LiveArchive) -> None:
        self.service = service
        self.live = live

    def stream_added(self, room: Room, stream: Stream) -> None:
        self.service.record_stream(self.live, room, stream)

    def room_closing(self, room: Room) -> None:
        self.live.stop_soon("session_ended")


class ArchiveService:
    """Every archive of this server process (see the module docs)."""

    def __init__(
        self,
        hub: Hub,
        data_dir: str | Path,
        config: ArchiveConfig | None = None,
        catalog: ArchiveCatalog | None = None,
        node_id: str | None = None,
    ) -> None:
        self.hub = hub
        #: Cluster mode: this node, named in the records of the archives it holds.
        self.node_id = node_id
        self.config = config or ArchiveConfig()
        self.root = Path(data_dir) / ARCHIVES_DIR
        self.catalog: ArchiveCatalog = catalog or SQLiteArchiveCatalog.in_data_dir(data_dir)
        self.live: dict[str, LiveArchive] = {}  # archive id -> archive not finished yet
        self._saving: dict[str, ArchiveRecord] = {}  # finished, its record being saved
        self._recording: dict[str, str] = {}  # session id -> archive id while recording
        self._save_lock = asyncio.Lock()  # records are written in the order of changes
        self._tasks: set[asyncio.Task[None]] = set()
        self.sweeper = RetentionSweeper(
            self.catalog, self.root, self.config.sweep_interval, self.live.__contains__
        )

    # -- start ----------------------------------------------------------------------------

    async def start(
        self, record: SessionRecord, *, name: str, has_audio: bool, has_video: bool
    ) -> ArchiveRecord:
        """Starts archiving a session (refusals as :class:`ApiError`)."""
        if record.e2ee:
            raise ApiError(
                "e2ee_unsupported_feature",
                "archiving is not available in an end-to-end encrypted session: the media "
                "router cannot decode end-to-end encrypted media",
                409,
            )
        if record.media_mode != "routed":
            raise ApiError(
                "relayed_unsupported_feature",
                "archiving needs media_mode 'routed': a relayed session has no media router, "
                "its media goes peer to peer",
                409,
            )
        room = self.hub.rooms.get(record.id)
        if room is None or not room.connections:
            raise ApiError("no_clients", "no one is connected to this session", 409)
        if record.id in self._recording:
            raise ApiError(
                "archive_in_progress",
                f"the session is being archived already (archive {self._recording[record.id]})",
                409,
            )
        archive = ArchiveRecord(
            id=new_archive_id(),
            session_id=record.id,
            name=name,
            has_audio=has_audio,
            has_video=has_video,
            output_mode="individual",
            created_at=time.time(),
            node_id=self.node_id,
        )
        live = LiveArchive(
            archive,
            self.root / archive.id,
            max_duration=self.config.max_duration,
            queue_frames=self.config.queue_frames,
            on_stopped=self._stopped,
            on_finished=self._finished,
        )
        # Registered before the first await: a concurrent start is refused above.
        self._recording[record.id] = archive.id
        self.live[archive.id] = live
        try:
            await live.open()
        except OSError as exc:
            log.warning("archive %s cannot be written: %s", archive.id, exc)
            archive.reason = f"the archive directory cannot be created: {exc.strerror or exc}"
            live.stop_soon("failed")
            await self._save(archive)
            return archive
        if self.hub.rooms.get(record.id) is not room or not room.connections:
            live.stop_soon("session_ended")  # the room closed while the directory was made
        elif live.recording:
            room.observers.append(_Follower(self, live))
            room.broadcast({"type": "archive_started", "archive": archive.event()})
            for stream in list(room.streams.values()):
                self.record_stream(live, room, stream)
        await self._save(archive)
        return archive

    def record_stream(self, live: LiveArchive, room: Room, stream: Stream) -> None:
        """Starts recording a stream's tracks (a stream already published, or a new one)."""
        router = room.router_if_any
        tracks = getattr(router, "forwarders", None)  # a router without media has none
        if not live.recording or tracks is None:
            return
        if getattr(router, "e2ee", True) or room.record.e2ee:  # refused at start; never here
            log.error("archive %s: not recording an E2EE router", live.record.id)
            return
        try:
            sources = tracks(stream.id)
        except LookupError:  # the stream ended meanwhile (UnknownStream)
            return
        conn = room.connections.get(stream.connection_id)
        info = StreamInfo(stream.id, stream.connection_id, conn.data if conn else "", stream.name)
        live.add_stream(info, sources)

    # -- stop -----------------------------------------------------------------------------

    async def stop(self, archive_id: str) -> ArchiveRecord:
        live = self.live.get(archive_id)
        if live is None:
            if await self.catalog.get(archive_id) is None:
                raise ApiError("archive_not_found", "no such archive", 404)
            raise ApiError("archive_not_recording", "the archive has stopped already", 409)
        if not live.stop_soon("stopped"):
            raise ApiError("archive_not_recording", "the archive has stopped already", 409)
        return live.record

    def _stopped(self, live: LiveArchive) -> None:
        record = live.record
        if self._recording.get(record.session_id) == record.id:
            del self._recording[record.session_id]
        room = self.hub.rooms.get(record.session_id)
        if room is not None:
            mine = [o for o in room.observers if isinstance(o, _Follower) and o.live is live]
            if mine:  # the clients were told it started
                room.observers[:] = [o for o in room.observers if o not in mine]
                room.broadcast({"type": "archive_stopped", "archive": record.event()})
        self._spawn(self._save(record))

    def _finished(self, live: LiveArchive) -> None:
        record = live.record
        record.expires_at = (record.stopped_at or time.time()) + self.config.retention
        log.info("archive %s %s (%s)", record.id, record.status, record.reason)
        self.live.pop(record.id, None)
        self._saving[record.id] = record  # shown from memory until the catalog has it
        self._spawn(self._save(record, done=True))

    async def _save(self, record: ArchiveRecord, *, done: bool = False) -> None:
        async with self._save_lock:  # in the order of the changes
            try:
                await self.catalog.put(record)
            except Exception:
                log.exception("archive %s: its record could not be saved", record.id)
            if done and self._saving.get(record.id) is record:
                del self._saving[record.id]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- queries --------------------------------------------------------------------------

    def held_elsewhere(self, record: ArchiveRecord) -> bool:
        """Cluster mode: whether ``record``'s files (and its recording) are on another
        node."""
        return record.node_id is not None and record.node_id != self.node_id

    async def get(self, archive_id: str) -> ArchiveRecord:
        live = self.live.get(archive_id)
        if live is not None:
            return live.record
        if archive_id in self._saving:
            return self._saving[archive_id]
        record = await self.catalog.get(archive_id) if _plausible(archive_id) else None
        if record is None:
            raise ApiError("archive_not_found", "no such archive", 404)
        return record

    async def list_archives(self, session_id: str | None, limit: int) -> list[ArchiveRecord]:
        records = await self.catalog.list_archives(session_id, limit)
        fresh = {**self._saving, **{i: live.record for i, live in self.live.items()}}
        return [fresh.get(r.id, r) for r in records]

    async def delete(self, archive_id: str) -> None:
        record = await self.get(archive_id)
        if record.id in self.live:
            raise ApiError(
                "archive_in_progress", "the archive is still running: stop it first", 409
            )
        await delete_archive_files(self.root, record.id)
        async with self._save_lock:  # after a save in flight, which would revive it
            self._saving.pop(record.id, None)
            await self.catalog.delete(record.id)

    async def zip_path(self, archive_id: str) -> Path:
        record = await self.get(archive_id)
        path = self.root / record.id / ZIP_NAME
        if record.id in self.live or not await asyncio.to_thread(path.is_file):
            raise ApiError(
                "archive_not_available",
                f"the archive has no download (status {record.status})",
                409,
            )
        return path

    # -- lifecycle ------------------------------------------------------------------------

    async def recover(self) -> int:
        """Archives this node was recording when its process ended without stopping them
        (``kill -9``, a crash, a power cut) are ``failed``, never left ``started`` for good:
        their files may be cut short.  They then expire like any other.  Returns how many;
        a catalog that cannot be read is logged and left for the next start."""
        try:
            records = await self.catalog.list_archives(None, RECOVER_LIMIT)
        except Exception:
            log.exception("archives: the catalog could not be read at start")
            return 0
        now = time.time()
        found = 0
        for record in records:
            if record.status != "started" or record.node_id != self.node_id:
                continue
            record.status = "failed"
            record.reason = "the server stopped while recording: its files may be incomplete"
            record.stopped_at = record.stopped_at or now
            record.expires_at = now + self.config.retention
            await self._save(record)
            log.warning("archive %s: %s", record.id, record.reason)
            found += 1
        return found

    def start_sweeper(self) -> None:
        self.sweeper.start()

    async def close(self, timeout: float = 10.0) -> None:
        """Stops every archive, waits (up to ``timeout``) for their files, and closes the
        catalog."""
        await self.sweeper.close()
        lives = list(self.live.values())
        for live in lives:
            live.stop_soon("session_ended")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(live.wait() for live in lives), return_exceptions=True),
                timeout,
            )
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.catalog.close()


def _plausible(archive_id: str) -> bool:
    return 0 < len(archive_id) <= 64 and archive_id.replace("-", "").replace("_", "").isalnum()
