"""The archive records of a cluster in Redis: :class:`RedisArchiveCatalog`, the
:class:`~e2ee.archive.catalog.ArchiveCatalog` of ``e2ee serve --cluster``.

Same semantics as :class:`~e2ee.archive.catalog.SQLiteArchiveCatalog` (its tests run
against both): ``put`` inserts or replaces, lists are newest first, ``expired`` gives the
records whose ``expires_at`` has passed.  One difference, because the files are not
shared: a catalog made for a node (``node_id``) lists as expired only the archives that
node holds (``record.node_id``), so each node's retention sweep deletes its own files
and their records, and nobody else's.

Keys, under ``prefix`` (default ``e2ee:``):

* ``archive:<id>``: hash ``record`` (the record's JSON, with its ``node_id``) and
  ``session`` (its session id);
* ``archives``: sorted set of archive ids scored by ``created_at``;
* ``archives:session:<session id>``: the same, one session's;
* ``archives:expiry``: sorted set of archive ids scored by ``expires_at`` (only those
  that have one).

Every change is one Lua script, so the record and its indexes change together for every
node (as in :mod:`~e2ee.server.cluster.redis_store`, whose client this shares).
"""

from __future__ import annotations

import json

from redis.asyncio import Redis

from e2ee.archive.manifest import ArchiveRecord
from e2ee.server.cluster.redis_client import connect, guarded, text
from e2ee.server.cluster.redis_store import DEFAULT_PREFIX

__all__ = ["RedisArchiveCatalog"]

# KEYS: archive:<id>, archives, archives:session:<sid>, archives:expiry.
# ARGV: record JSON, created_at, id, session id, expires_at or '', prefix.
_PUT = """
local old = redis.call('HGET', KEYS[1], 'session')
if old and old ~= ARGV[4] then
  redis.call('ZREM', ARGV[6] .. 'archives:session:' .. old, ARGV[3])
end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'session', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
if ARGV[5] == '' then
  redis.call('ZREM', KEYS[4], ARGV[3])
else
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[3])
end
return 1
"""

# KEYS: archive:<id>, archives, archives:expiry.  ARGV: id, prefix.  1 if deleted.
_DELETE = """
local sid = redis.call('HGET', KEYS[1], 'session')
if not sid then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', ARGV[2] .. 'archives:session:' .. sid, ARGV[1])
return redis.call('DEL', KEYS[1])
"""


def _num(value: float) -> str:
    return repr(float(value))


class RedisArchiveCatalog:
    """:class:`~e2ee.archive.catalog.ArchiveCatalog` in Redis, shared by every node.

    ``redis``: the node's shared client (not closed by :meth:`close`; the store closes
    it), or one of its own from :meth:`connect`.  ``node_id``: the node whose sweep uses
    this catalog (see the module docs); ``None``: every expired record.  Redis outages
    raise :class:`~e2ee.server.cluster.errors.ClusterUnavailable`.
    """

    def __init__(
        self, redis: Redis, *, prefix: str = DEFAULT_PREFIX, node_id: str | None = None
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.node_id = node_id
        self._put = redis.register_script(_PUT)
        self._delete = redis.register_script(_DELETE)
        self._owns_client = False

    @classmethod
    def connect(
        cls, url: str, *, prefix: str = DEFAULT_PREFIX, node_id: str | None = None
    ) -> RedisArchiveCatalog:
        """A catalog with its own client of ``url`` (closed by :meth:`close`)."""
        catalog = cls(connect(url), prefix=prefix, node_id=node_id)
        catalog._owns_client = True
        return catalog

    def _key(self, name: str) -> str:
        return self.prefix + name

    async def put(self, record: ArchiveRecord) -> None:
        keys = [
            self._key("archive:" + record.id),
            self._key("archives"),
            self._key("archives:session:" + record.session_id),
            self._key("archives:expiry"),
        ]
        expires = "" if record.expires_at is None else _num(record.expires_at)
        args = [
            json.dumps(record.public(), separators=(",", ":")),
            _num(record.created_at),
            record.id,
            record.session_id,
            expires,
            self.prefix,
        ]
        await guarded(self.redis, "save archive", self._put(keys, args))

    async def get(self, archive_id: str) -> ArchiveRecord | None:
        raw = await guarded(
            self.redis,
            "read archive",
            self.redis.hget(self._key("archive:" + archive_id), "record"),
        )
        found = text(raw)
        return None if found is None else ArchiveRecord.from_json(json.loads(found))

    async def list_archives(self, session_id: str | None, limit: int) -> list[ArchiveRecord]:
        """Newest first; a negative ``limit`` means all (as SQL's ``LIMIT -1``)."""
        if limit == 0:
            return []
        index = "archives" if session_id is None else "archives:session:" + session_id
        stop = -1 if limit < 0 else limit - 1
        ids = await guarded(
            self.redis, "list archives", self.redis.zrevrange(self._key(index), 0, stop)
        )
        return await self._records([str(text(i)) for i in ids])

    async def delete(self, archive_id: str) -> bool:
        keys = [
            self._key("archive:" + archive_id),
            self._key("archives"),
            self._key("archives:expiry"),
        ]
        deleted = await guarded(
            self.redis, "delete archive", self._delete(keys, [archive_id, self.prefix])
        )
        return bool(deleted)

    async def expired(self, now: float) -> list[ArchiveRecord]:
        ids = await guarded(
            self.redis,
            "expired archives",
            self.redis.zrangebyscore(self._key("archives:expiry"), "-inf", _num(now)),
        )
        records = await self._records([str(text(i)) for i in ids])
        if self.node_id is None:
            return records
        return [r for r in records if r.node_id == self.node_id]

    async def _records(self, ids: list[str]) -> list[ArchiveRecord]:
        """The records of ``ids``, in that order; one deleted meanwhile is skipped."""
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for archive_id in ids:
                pipe.hget(self._key("archive:" + archive_id), "record")
            raws = await guarded(self.redis, "read archives", pipe.execute())
        return [ArchiveRecord.from_json(json.loads(str(text(r)))) for r in raws if r is not None]

    async def close(self) -> None:
        if self._owns_client:
            self._owns_client = False
            await self.redis.aclose()

    def __repr__(self) -> str:
        return f"RedisArchiveCatalog(prefix={self.prefix!r}, node_id={self.node_id!r})"
