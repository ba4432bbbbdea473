"""Retention: archives are deleted ``retention`` seconds after they stopped
(:class:`e2ee.archive.config.ArchiveConfig`, default 72 hours) by a periodic sweep;
deletion through REST is immediate (:func:`delete_archive_files`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from e2ee.archive.catalog import ArchiveCatalog

__all__ = ["RetentionSweeper", "delete_archive_files"]

log = logging.getLogger(__name__)


async def delete_archive_files(root: Path, archive_id: str) -> None:
    """Removes an archive's directory under ``root`` (nothing if there is none)."""
    directory = root / archive_id
    if directory.parent != root or archive_id in ("", ".", ".."):
        raise ValueError("not an archive id")
    await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)


class RetentionSweeper:
    """Every ``interval`` seconds, deletes the archives whose ``expires_at`` has passed
    (records and files), except those ``busy(archive_id)`` says are still running."""

    def __init__(
        self,
        catalog: ArchiveCatalog,
        root: Path,
        interval: float,
        busy: Callable[[str], bool],
    ) -> None:
        self.catalog = catalog
        self.root = root
        self.interval = interval
        self._busy = busy
        self._task: asyncio.Task[None] | None = None
        self.deleted = 0  # archives deleted by the sweep (counter)

    async def sweep(self, now: float | None = None) -> list[str]:
        """One sweep; the ids it deleted."""
        now = time.time() if now is None else now
        gone: list[str] = []
        for record in await self.catalog.expired(now):
            if self._busy(record.id):
                continue
            await delete_archive_files(self.root, record.id)
            if await self.catalog.delete(record.id):
                gone.append(record.id)
        if gone:
            self.deleted += len(gone)
            log.info("retention: deleted %d expired archive(s)", len(gone))
        return gone

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("retention sweep failed")
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
