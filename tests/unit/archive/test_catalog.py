"""The archive catalog (SQLite), the settings, and the retention sweep, on real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2ee.archive.catalog import SQLiteArchiveCatalog
from e2ee.archive.config import ArchiveConfig
from e2ee.archive.manifest import ArchiveRecord, new_archive_id
from e2ee.archive.retention import RetentionSweeper


def _record(session: str, at: float, expires: float | None = None) -> ArchiveRecord:
    return ArchiveRecord(
        id=new_archive_id(),
        session_id=session,
        name="n",
        has_audio=True,
        has_video=False,
        output_mode="individual",
        created_at=at,
        expires_at=expires,
        streams=[{"file": "00-audio.webm", "frames": 3}],
    )


@pytest.mark.asyncio
async def test_catalog_keeps_records_across_reopen(tmp_path: Path) -> None:
    catalog = SQLiteArchiveCatalog.in_data_dir(tmp_path)
    a, b, c = _record("s1", 1.0), _record("s1", 2.0), _record("s2", 3.0)
    for record in (a, b, c):
        await catalog.put(record)
    b.status = "available"
    await catalog.put(b)
    await catalog.close()
    assert (tmp_path / "archives.sqlite3").stat().st_mode & 0o777 == 0o600

    catalog = SQLiteArchiveCatalog.in_data_dir(tmp_path)
    try:
        assert await catalog.get(b.id) == b
        assert await catalog.get("nope") is None
        assert [r.id for r in await catalog.list_archives(None, 10)] == [c.id, b.id, a.id]
        assert [r.id for r in await catalog.list_archives("s1", 1)] == [b.id]
        assert await catalog.delete(a.id)
        assert not await catalog.delete(a.id)
        assert await catalog.get(a.id) is None
    finally:
        await catalog.close()


@pytest.mark.asyncio
async def test_retention_sweep_deletes_expired_archives(tmp_path: Path) -> None:
    catalog = SQLiteArchiveCatalog.in_data_dir(tmp_path)
    root = tmp_path / "archives"
    old, busy, fresh, open_ended = (
        _record("s", 1.0, expires=100.0),
        _record("s", 2.0, expires=100.0),
        _record("s", 3.0, expires=1000.0),
        _record("s", 4.0),
    )
    for record in (old, busy, fresh, open_ended):
        await catalog.put(record)
        (root / record.id).mkdir(parents=True)
        (root / record.id / "archive.zip").write_bytes(b"zip")
    sweeper = RetentionSweeper(catalog, root, 60.0, busy=lambda i: i == busy.id)
    try:
        assert await sweeper.sweep(now=500.0) == [old.id]
        assert not (root / old.id).exists()
        assert (root / busy.id).exists()
        assert await catalog.get(old.id) is None
        assert await sweeper.sweep(now=500.0) == []
        assert sorted(await sweeper.sweep(now=2000.0)) == [fresh.id]
        assert sweeper.deleted == 2
    finally:
        await catalog.close()


def test_config_from_environment() -> None:
    assert ArchiveConfig.from_env({}) == ArchiveConfig()
    assert ArchiveConfig().retention == 72 * 3600
    got = ArchiveConfig.from_env(
        {"E2EE_ARCHIVE_MAX_DURATION": "2.5", "E2EE_ARCHIVE_RETENTION": "60"}
    )
    assert (got.max_duration, got.retention) == (2.5, 60.0)
    with pytest.raises(ValueError, match="E2EE_ARCHIVE_RETENTION must be a number"):
        ArchiveConfig.from_env({"E2EE_ARCHIVE_RETENTION": "3 days"})
    with pytest.raises(ValueError, match="positive"):
        ArchiveConfig(max_duration=0)
