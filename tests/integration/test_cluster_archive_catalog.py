"""RedisArchiveCatalog against a real redis-server, beyond the expectations it shares with
the SQLite catalog (tests/unit/archive/test_catalog.py runs those against both): the
nodes of a cluster see one set of records, each node's retention sweep deletes only the
archives it holds, and a Redis outage is one clear error."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

pytest.importorskip("redis")

from e2ee.archive.catalog import ArchiveCatalog
from e2ee.archive.manifest import ArchiveRecord, new_archive_id
from e2ee.archive.retention import RetentionSweeper
from e2ee.server.cluster import ClusterUnavailable
from e2ee.server.cluster.archive_catalog import RedisArchiveCatalog
from support.redis_server import RedisServer


def _record(session: str, at: float, node: str | None, expires: float | None) -> ArchiveRecord:
    return ArchiveRecord(
        id=new_archive_id(),
        session_id=session,
        name="n",
        has_audio=True,
        has_video=True,
        output_mode="individual",
        created_at=at,
        expires_at=expires,
        node_id=node,
    )


@pytest.mark.asyncio
async def test_nodes_share_records_and_each_sweeps_its_own(
    redis_server_module: RedisServer, tmp_path: Path
) -> None:
    prefix = f"t{secrets.token_hex(4)}:"
    a = RedisArchiveCatalog.connect(redis_server_module.url, prefix=prefix, node_id="node-a")
    b = RedisArchiveCatalog.connect(redis_server_module.url, prefix=prefix, node_id="node-b")
    typed: ArchiveCatalog = a  # mypy checks the protocol
    assert typed is a
    on_a, on_b = _record("s", 1.0, "node-a", 10.0), _record("s", 2.0, "node-b", 10.0)
    try:
        await a.put(on_a)
        await b.put(on_b)
        for catalog in (a, b):  # every node lists and reads every record, with its holder
            assert await catalog.list_archives("s", 10) == [on_b, on_a]
            assert (await catalog.get(on_a.id)) == on_a
        assert await a.expired(100.0) == [on_a]
        assert await b.expired(100.0) == [on_b]

        roots = {name: tmp_path / name for name in ("node-a", "node-b")}
        for record in (on_a, on_b):
            (roots[str(record.node_id)] / record.id).mkdir(parents=True)
        sweep_a = RetentionSweeper(a, roots["node-a"], 60.0, busy=lambda _: False)
        assert await sweep_a.sweep(now=100.0) == [on_a.id]
        assert not (roots["node-a"] / on_a.id).exists()
        assert (roots["node-b"] / on_b.id).exists()  # not node-a's to delete
        assert await b.list_archives(None, 10) == [on_b]
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_an_outage_is_cluster_unavailable(redis_server: RedisServer) -> None:
    catalog = RedisArchiveCatalog.connect(redis_server.url, prefix="t:", node_id="n")
    record = _record("s", 1.0, "n", None)
    try:
        await catalog.put(record)
        redis_server.kill()
        with pytest.raises(ClusterUnavailable, match="Redis did not answer"):
            await catalog.get(record.id)
        redis_server.restart()
        assert await catalog.get(record.id) == record  # appendonly: kept; no new client
    finally:
        await catalog.close()
