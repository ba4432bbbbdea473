"""Where archive records are kept: the :class:`ArchiveCatalog` protocol and its SQLite
implementation in the data directory (``archives.sqlite3``, its own file beside the
server's store).  A Redis catalog for a cluster can implement the same protocol.

SQLite calls run in a worker thread (``asyncio.to_thread``), one at a time.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

from e2ee.archive.manifest import ArchiveRecord

__all__ = ["CATALOG_FILE", "ArchiveCatalog", "SQLiteArchiveCatalog"]

CATALOG_FILE = "archives.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS archives (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS archives_session ON archives (session_id, created_at);
CREATE INDEX IF NOT EXISTS archives_expiry ON archives (expires_at);
"""


class ArchiveCatalog(Protocol):
    """Durable archive records."""

    async def put(self, record: ArchiveRecord) -> None:
        """Inserts or replaces ``record``."""

    async def get(self, archive_id: str) -> ArchiveRecord | None: ...

    async def list_archives(self, session_id: str | None, limit: int) -> list[ArchiveRecord]:
        """Newest first, of one session or all."""

    async def delete(self, archive_id: str) -> bool: ...

    async def expired(self, now: float) -> list[ArchiveRecord]:
        """Records whose ``expires_at`` has passed."""

    async def close(self) -> None: ...


class SQLiteArchiveCatalog:
    """:class:`ArchiveCatalog` in an SQLite file (created with mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    @classmethod
    def in_data_dir(cls, data_dir: str | Path) -> SQLiteArchiveCatalog:
        return cls(Path(data_dir) / CATALOG_FILE)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch(mode=0o600, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """The rows of a query."""

        def work() -> list[tuple[object, ...]]:
            with self._lock:
                return self._conn().execute(sql, args).fetchall()

        return await asyncio.to_thread(work)

    async def _change(self, sql: str, args: tuple[object, ...]) -> int:
        """The number of rows a statement changed."""

        def work() -> int:
            with self._lock:
                return self._conn().execute(sql, args).rowcount

        return await asyncio.to_thread(work)

    async def put(self, record: ArchiveRecord) -> None:
        await self._change(
            "INSERT OR REPLACE INTO archives (id, session_id, created_at, expires_at, record)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                record.id,
                record.session_id,
                record.created_at,
                record.expires_at,
                json.dumps(record.public()),
            ),
        )

    async def get(self, archive_id: str) -> ArchiveRecord | None:
        found = _records(await self._run("SELECT record FROM archives WHERE id = ?", (archive_id,)))
        return found[0] if found else None

    async def list_archives(self, session_id: str | None, limit: int) -> list[ArchiveRecord]:
        if session_id is None:
            rows = await self._run(
                "SELECT record FROM archives ORDER BY created_at DESC LIMIT ?", (limit,)
            )
        else:
            rows = await self._run(
                "SELECT record FROM archives WHERE session_id = ? ORDER BY created_at DESC LIMIT ?",
                (session_id, limit),
            )
        return _records(rows)

    async def delete(self, archive_id: str) -> bool:
        return await self._change("DELETE FROM archives WHERE id = ?", (archive_id,)) > 0

    async def expired(self, now: float) -> list[ArchiveRecord]:
        rows = await self._run(
            "SELECT record FROM archives WHERE expires_at IS NOT NULL AND expires_at <= ?",
            (now,),
        )
        return _records(rows)

    async def close(self) -> None:
        def work() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(work)


def _records(rows: list[tuple[object, ...]]) -> list[ArchiveRecord]:
    return [ArchiveRecord.from_json(json.loads(str(r[0]))) for r in rows if isinstance(r[0], str)]
