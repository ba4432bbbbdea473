"""The durable state of a cluster in Redis: :class:`RedisStore`, the :class:`Store` of
``e2ee serve --cluster``.

Same semantics as :class:`~e2ee.server.store.SQLiteStore` (its tests are this store's
tests too): credentials created once, atomically, whichever node asks first; sessions
immutable, :class:`DuplicateSession` on a second create, listed newest first; at most two
live API secrets during a rotation; revoked token ids kept until the token would have
expired.  Every multi-key change is one Lua script, so it is atomic across nodes (Redis
runs a script alone, https://redis.io/docs/latest/develop/interact/programmability/).

Keys, under ``prefix`` (default ``e2ee:``):

* ``cred``: hash ``api_key``, ``api_secret`` (the signing secret), ``created_at``;
* ``secret:<kid>``: hash ``secret``, ``created_at``, ``expires_at`` (a rotated-out secret,
  which Redis also expires then, ``PEXPIREAT``), indexed by the set ``secrets``;
* ``session:<id>``: hash ``record`` (JSON), ``order`` (its member in the sorted set
  ``sessions``, scored by ``created_at``; ``sessions:seq`` numbers the inserts);
* ``revoked:<jti>``: ``keep_until`` in ms, expiring then (``PXAT``).

Scripts build the ``secret:<kid>`` names from the prefix: fine on one Redis (or a
replicated one), not on Redis Cluster, which this does not target.

Redis should persist (``appendonly yes``): a Redis that restarts empty loses the
credentials, and new ones are made on the next call.  Times are stored as ``repr`` of the
float, so they read back exactly.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from e2ee.server.cluster.redis_client import connect, guarded, text
from e2ee.server.store import (
    ApiSecret,
    Credentials,
    DuplicateSession,
    SessionRecord,
    key_id,
    new_api_key,
    new_api_secret,
)

__all__ = ["DEFAULT_PREFIX", "RedisStore"]

#: The key prefix of a cluster unless told otherwise.
DEFAULT_PREFIX = "e2ee:"

# KEYS: cred, secrets index, secret:<kid>.  ARGV: api_key, secret, now, kid.
_CREDENTIALS = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'api_key', ARGV[1], 'api_secret', ARGV[2], 'created_at', ARGV[3])
  redis.call('HSET', KEYS[3], 'secret', ARGV[2], 'created_at', ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[4])
end
return redis.call('HMGET', KEYS[1], 'api_key', 'api_secret')
"""

# KEYS: cred, secrets index.  ARGV: prefix, new kid, new secret, now, grace end, grace end ms.
# Any rotated-out secret ends now; the signing one gets the grace period; the new one signs.
_ROTATE = """
for _, kid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[1] .. 'secret:' .. kid
  if redis.call('EXISTS', key) == 0 then
    redis.call('SREM', KEYS[2], kid)
  elseif redis.call('HEXISTS', key, 'expires_at') == 1 then
    redis.call('DEL', key)
    redis.call('SREM', KEYS[2], kid)
  else
    redis.call('HSET', key, 'expires_at', ARGV[5])
    redis.call('PEXPIREAT', key, ARGV[6])
  end
end
redis.call('HSET', ARGV[1] .. 'secret:' .. ARGV[2], 'secret', ARGV[3], 'created_at', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'api_secret', ARGV[3])
return 1
"""

# KEYS: secrets index.  ARGV: prefix, kid or ''.  Returns the kids retired.
_RETIRE = """
local out = {}
for _, kid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. 'secret:' .. kid
  if (ARGV[2] == '' or ARGV[2] == kid) and redis.call('HEXISTS', key, 'expires_at') == 1 then
    redis.call('DEL', key)
    redis.call('SREM', KEYS[1], kid)
    table.insert(out, kid)
  end
end
return out
"""

# KEYS: session:<id>, sessions, sessions:seq.  ARGV: record JSON, created_at, session id.
# The sorted set is scored by created_at; its member starts with an insertion counter in
# fixed-width hex, so equal times list the later insert first (as SQLite's rowid does).
_CREATE_SESSION = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local member = string.format('%016x', redis.call('INCR', KEYS[3])) .. ':' .. ARGV[3]
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'order', member)
redis.call('ZADD', KEYS[2], ARGV[2], member)
return 1
"""

# KEYS: session:<id>, sessions.  Returns 1 if deleted.
_DELETE_SESSION = """
local member = redis.call('HGET', KEYS[1], 'order')
if member then
  redis.call('ZREM', KEYS[2], member)
end
return redis.call('DEL', KEYS[1])
"""

# KEYS: revoked:<jti>.  ARGV: keep_until in ms.  Keeps the later of two keep_until.
_REVOKE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[1])
end
return 1
"""


#: Seconds a revocation is kept at least.
_MIN_KEEP = 60.0


def _num(value: float) -> str:
    return repr(float(value))


class RedisStore:
    """:class:`~e2ee.server.store.Store` in Redis, shared by every node of a cluster.

    ``redis`` is the shared client (:attr:`redis`; the registry, placement and bus use
    it too); :meth:`connect` makes one from a URL.  Redis outages raise
    :class:`~e2ee.server.cluster.errors.ClusterUnavailable`.
    """

    def __init__(self, redis: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix
        self._credentials = redis.register_script(_CREDENTIALS)
        self._rotate = redis.register_script(_ROTATE)
        self._retire = redis.register_script(_RETIRE)
        self._create = redis.register_script(_CREATE_SESSION)
        self._delete = redis.register_script(_DELETE_SESSION)
        self._revoke = redis.register_script(_REVOKE)
        self._closed = False

    @classmethod
    async def connect(cls, url: str, *, prefix: str = DEFAULT_PREFIX) -> RedisStore:
        """The store on the Redis at ``url`` (``redis://HOST:PORT/DB``).  Checks that
        Redis answers (:class:`ClusterUnavailable` if not), so that a wrong URL fails at
        start, not at the first join."""
        store = cls(connect(url), prefix=prefix)
        try:
            await guarded(store.redis, "connect", store.redis.ping())
        except BaseException:
            await store.redis.aclose()
            raise
        return store

    def _key(self, name: str) -> str:
        return self.prefix + name

    # -- credentials and API secrets -----------------------------------------------------

    async def get_or_create_credentials(self) -> Credentials:
        secret = new_api_secret()
        keys = [self._key("cred"), self._key("secrets"), self._key("secret:" + key_id(secret))]
        args = [new_api_key(), secret, _num(time.time()), key_id(secret)]
        found = await guarded(self.redis, "credentials", self._credentials(keys, args))
        api_key, api_secret = text(found[0]), text(found[1])
        if api_key is None or api_secret is None:  # a hand-edited or half-deleted hash
            raise RuntimeError(f"{self._key('cred')} in Redis lacks api_key or api_secret")
        return Credentials(api_key=api_key, api_secret=api_secret)

    async def api_secrets(self) -> list[ApiSecret]:
        """The live secrets, signing first, then the newest rotated-out one."""
        kids = await guarded(self.redis, "api secrets", self.redis.smembers(self._key("secrets")))
        if not kids:
            return []
        names = sorted(str(text(k)) for k in kids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for kid in names:
                pipe.hgetall(self._key("secret:" + kid))
            rows = await guarded(self.redis, "api secrets", pipe.execute())
        now, out = time.time(), []
        for kid, row in zip(names, rows, strict=True):
            fields = {str(text(k)): str(text(v)) for k, v in row.items()}
            if "secret" not in fields:
                continue  # expired by Redis; the next rotation drops it from the index
            expires = float(fields["expires_at"]) if "expires_at" in fields else None
            if expires is not None and expires <= now:
                continue
            out.append(ApiSecret(kid, fields["secret"], float(fields["created_at"]), expires))
        out.sort(key=lambda s: (s.expires_at is not None, -s.created_at))
        return out

    async def rotate_secret(self, grace: float) -> ApiSecret:
        """A new signing secret; the previous one stays valid ``grace`` seconds (or until
        :meth:`retire_secrets`), any older one ends now (as ``SQLiteStore``'s
        ``rotate_secret_sync``)."""
        if not grace >= 0:
            raise ValueError("grace must be a number of seconds >= 0")
        await self.get_or_create_credentials()
        secret, now = new_api_secret(), time.time()
        kid, end = key_id(secret), now + grace
        keys = [self._key("cred"), self._key("secrets")]
        args = [self.prefix, kid, secret, _num(now), _num(end), str(int(end * 1000))]
        await guarded(self.redis, "rotate secret", self._rotate(keys, args))
        return ApiSecret(kid, secret, now, None)

    async def retire_secrets(self, kid: str | None = None) -> list[str]:
        """Ends the grace period of the rotated-out secret(s) now (``kid``: that one only);
        the signing secret cannot be retired.  The key ids retired."""
        args = [self.prefix, kid or ""]
        kids = await guarded(
            self.redis, "retire secrets", self._retire([self._key("secrets")], args)
        )
        return [str(text(k)) for k in kids]

    # -- revoked tokens ------------------------------------------------------------------

    async def revoke_token(self, jti: str, keep_until: float) -> None:
        # Kept at least a minute even if ``keep_until`` has passed: "revoked" must read
        # true right after a revocation, as with SQLiteStore.
        ms = str(int(max(keep_until, time.time() + _MIN_KEEP) * 1000))
        await guarded(self.redis, "revoke token", self._revoke([self._key("revoked:" + jti)], [ms]))

    async def is_revoked(self, jti: str) -> bool:
        found = await guarded(
            self.redis, "revocation check", self.redis.exists(self._key("revoked:" + jti))
        )
        return bool(found)

    # -- sessions ------------------------------------------------------------------------

    async def create_session(self, record: SessionRecord) -> None:
        keys = [
            self._key("session:" + record.id),
            self._key("sessions"),
            self._key("sessions:seq"),
        ]
        args = [_record_json(record), _num(record.created_at), record.id]
        created = await guarded(self.redis, "create session", self._create(keys, args))
        if not created:
            raise DuplicateSession(record.id)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        key = self._key("session:" + session_id)
        found = text(await guarded(self.redis, "read session", self.redis.hget(key, "record")))
        return None if found is None else _record_from_json(found)

    async def list_sessions(self, limit: int) -> list[SessionRecord]:
        """At most ``limit`` sessions, newest first (equal times: the later created
        first).  A negative ``limit`` means all, as SQL's ``LIMIT -1``."""
        if limit == 0:
            return []
        stop = -1 if limit < 0 else limit - 1
        members = await guarded(
            self.redis, "list sessions", self.redis.zrevrange(self._key("sessions"), 0, stop)
        )
        if not members:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                session_id = str(text(member)).split(":", 1)[1]
                pipe.hget(self._key("session:" + session_id), "record")
            raws = await guarded(self.redis, "list sessions", pipe.execute())
        # A session deleted between the two reads is skipped.
        return [_record_from_json(str(text(r))) for r in raws if r is not None]

    async def delete_session(self, session_id: str) -> bool:
        keys = [self._key("session:" + session_id), self._key("sessions")]
        deleted = await guarded(self.redis, "delete session", self._delete(keys, []))
        return bool(deleted)

    async def close(self) -> None:
        """Closes the shared client (after the registry, placement and bus are done)."""
        if not self._closed:
            self._closed = True
            await self.redis.aclose()

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r})"


def _record_json(record: SessionRecord) -> str:
    fields: dict[str, Any] = {
        "id": record.id,
        "media_mode": record.media_mode,
        "e2ee": record.e2ee,
        "suite": record.suite,
        "kdf_iterations": record.kdf_iterations,
        "max_participants": record.max_participants,
        "created_at": record.created_at,
    }
    return json.dumps(fields, separators=(",", ":"))


def _record_from_json(raw: str) -> SessionRecord:
    fields = json.loads(raw)
    return SessionRecord(
        id=fields["id"],
        media_mode=fields["media_mode"],
        e2ee=bool(fields["e2ee"]),
        suite=fields["suite"],
        kdf_iterations=fields["kdf_iterations"],
        max_participants=fields["max_participants"],
        created_at=float(fields["created_at"]),
    )
