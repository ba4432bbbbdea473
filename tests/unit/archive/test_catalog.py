"""The archive catalog, the settings, and the retention sweep, on real files.

The catalog's expectations run against both implementations: SQLite in the data
directory, and Redis (``RedisArchiveCatalog``, cluster mode) on a real ``redis-server``
(skipped without one); "reopen" is a new client on the same key prefix there."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from e2ee.archive.catalog import ArchiveCatalog, SQLiteArchiveCatalog
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


OpenCatalog = Callable[[], ArchiveCatalog]


@pytest.fixture(params=["sqlite", "redis"])
def open_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> OpenCatalog:
    """Opens the catalog under test (again: the same records)."""
    if request.param == "sqlite":
        return lambda: SQLiteArchiveCatalog.in_data_dir(tmp_path)
    server = request.getfixturevalue("redis_server_module")
    from e2ee.server.cluster.archive_catalog import RedisArchiveCatalog

    prefix = f"t{secrets.token_hex(4)}:"
    return lambda: RedisArchiveCatalog.connect(server.url, prefix=prefix)


@pytest.mark.asyncio
async def test_catalog_keeps_records_across_reopen(open_catalog: OpenCatalog) -> None:
    catalog = open_catalog()
    a, b, c = _record("s1", 1.0), _record("s1", 2.0), _record("s2", 3.0)
    for record in (a, b, c):
        await catalog.put(record)
    b.status = "available"
    b.expires_at = 50.0
    await catalog.put(b)
    await catalog.close()

    catalog = open_catalog()
    try:
        assert await catalog.get(b.id) == b
        assert await catalog.get("nope") is None
        assert [r.id for r in await catalog.list_archives(None, 10)] == [c.id, b.id, a.id]
        assert [r.id for r in await catalog.list_archives("s1", 1)] == [b.id]
        assert [r.id for r in await catalog.list_archives("s2", 10)] == [c.id]
        assert await catalog.list_archives("s3", 10) == []
        assert await catalog.expired(60.0) == [b]
        assert await catalog.expired(40.0) == []
        assert await catalog.delete(a.id)
        assert not await catalog.delete(a.id)
        assert await catalog.get(a.id) is None
        assert [r.id for r in await catalog.list_archives("s1", 10)] == [b.id]
        # A replaced record leaves its expiry when it has none any more.
        b.expires_at = None
        await catalog.put(b)
        assert await catalog.expired(60.0) == []
        assert await catalog.delete(b.id)
        assert [r.id for r in await catalog.list_archives(None, 10)] == [c.id]
    finally:
        await catalog.close()


@pytest.mark.asyncio
async def test_sqlite_catalog_file_is_private(tmp_path: Path) -> None:
    catalog = SQLiteArchiveCatalog.in_data_dir(tmp_path)
    await catalog.put(_record("s", 1.0))
    await catalog.close()
    assert (tmp_path / "archives.sqlite3").stat().st_mode & 0o777 == 0o600


@pytest.mark.asyncio
async def test_retention_sweep_deletes_expired_archives(
    tmp_path: Path, open_catalog: OpenCatalog
) -> None:
    catalog = open_catalog()
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
