"""RedisStore against a real redis-server: the same expectations as the SQLite store's
tests (tests/unit/server/test_store.py, test_store_lifecycle.py), plus what only a shared
store has: two nodes agree, a Redis restart keeps everything, an outage is one clear
error (and one log line), and the store recovers without being rebuilt."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import pytest

pytest.importorskip("redis")

from e2ee.server.cluster import ClusterUnavailable, RedisStore
from e2ee.server.store import DuplicateSession, SessionRecord, Store, key_id
from support.redis_server import RedisServer


def _record(sid: str = "s1", created_at: float | None = None, **kw: object) -> SessionRecord:
    fields: dict[str, object] = {
        "id": sid,
        "media_mode": "routed",
        "e2ee": True,
        "suite": 6,
        "kdf_iterations": 1000,
        "max_participants": 5,
        "created_at": time.time() if created_at is None else created_at,
    }
    fields.update(kw)
    return SessionRecord(**fields)  # type: ignore[arg-type]


async def _store(server: RedisServer, prefix: str | None = None) -> RedisStore:
    return await RedisStore.connect(server.url, prefix=prefix or f"t{secrets.token_hex(4)}:")


@pytest.mark.asyncio
async def test_implements_protocol_and_credentials_created_once(
    redis_server_module: RedisServer,
) -> None:
    prefix = f"t{secrets.token_hex(4)}:"
    a = await _store(redis_server_module, prefix)
    b = await _store(redis_server_module, prefix)
    assert isinstance(a, Store)
    # Two nodes starting at once on one Redis get the same credentials.
    got = await asyncio.gather(*(s.get_or_create_credentials() for s in (a, b, a, b)))
    assert len(set(got)) == 1
    first = got[0]
    assert first.api_key.startswith("key_")
    assert first.api_secret not in repr(first)
    [live] = await a.api_secrets()
    assert (live.kid, live.secret, live.expires_at) == (first.kid, first.api_secret, None)
    # Another prefix is another project.
    other = await _store(redis_server_module)
    assert (await other.get_or_create_credentials()).api_key != first.api_key
    for store in (a, b, other):
        await store.close()


@pytest.mark.asyncio
async def test_sessions_round_trip(redis_server_module: RedisServer) -> None:
    prefix = f"t{secrets.token_hex(4)}:"
    store = await _store(redis_server_module, prefix)
    e2ee = _record("e")
    plain = _record("p", e2ee=False, suite=None, kdf_iterations=None, media_mode="relayed")
    await store.create_session(e2ee)
    await store.create_session(plain)
    assert await store.get_session("e") == e2ee
    assert await store.get_session("p") == plain
    assert await store.get_session("missing") is None
    assert await store.get_session("' OR 1=1 --") is None
    with pytest.raises(DuplicateSession):
        await store.create_session(_record("e", max_participants=9))
    assert await store.get_session("e") == e2ee
    await store.close()
    again = await _store(redis_server_module, prefix)  # another node reads the same
    assert await again.get_session("p") == plain
    await again.close()


@pytest.mark.asyncio
async def test_concurrent_creates_one_winner(redis_server_module: RedisServer) -> None:
    store = await _store(redis_server_module)
    await asyncio.gather(*(store.create_session(_record(f"s{i}")) for i in range(50)))
    got = await asyncio.gather(*(store.get_session(f"s{i}") for i in range(50)))
    assert [g.id for g in got if g] == [f"s{i}" for i in range(50)]
    results = await asyncio.gather(
        *(store.create_session(_record("dup", max_participants=i)) for i in range(10)),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1
    assert sum(isinstance(r, DuplicateSession) for r in results) == 9
    await store.close()


@pytest.mark.asyncio
async def test_list_and_delete_sessions(redis_server_module: RedisServer) -> None:
    store = await _store(redis_server_module)
    for i in range(5):
        await store.create_session(_record(f"s{i}", 100.0 + i))
    await store.create_session(_record("a-same-time", 104.0))  # ties: newest insert first
    listed = await store.list_sessions(3)
    assert [r.id for r in listed] == ["a-same-time", "s4", "s3"]
    assert listed[1] == _record("s4", 104.0)
    assert len(await store.list_sessions(100)) == 6
    assert len(await store.list_sessions(-1)) == 6
    assert await store.list_sessions(0) == []
    assert await store.delete_session("s4")
    assert not await store.delete_session("s4")
    assert await store.get_session("s4") is None
    assert [r.id for r in await store.list_sessions(2)] == ["a-same-time", "s3"]
    await store.create_session(_record("s4", 1.5))  # an id may be used again after delete
    assert (await store.list_sessions(-1))[-1].id == "s4"
    await store.close()


@pytest.mark.asyncio
async def test_rotate_keeps_two_live_secrets_then_retire(redis_server_module: RedisServer) -> None:
    prefix = f"t{secrets.token_hex(4)}:"
    store = await _store(redis_server_module, prefix)
    other = await _store(redis_server_module, prefix)
    first = await store.get_or_create_credentials()
    before = time.time()
    second = await store.rotate_secret(grace=3600)
    assert second.kid == key_id(second.secret)
    assert (await other.get_or_create_credentials()).api_secret == second.secret
    assert (await other.get_or_create_credentials()).api_key == first.api_key
    signing, previous = await other.api_secrets()
    assert (signing.kid, signing.expires_at) == (second.kid, None)
    assert previous.kid == first.kid
    assert previous.expires_at is not None
    assert before + 3600 <= previous.expires_at <= time.time() + 3600
    third = await store.rotate_secret(grace=3600)
    assert [s.kid for s in await store.api_secrets()] == [third.kid, second.kid]
    assert await store.retire_secrets(third.kid) == []
    assert await store.retire_secrets("k-unknown") == []
    assert await store.retire_secrets(second.kid) == [second.kid]
    assert [s.kid for s in await other.api_secrets()] == [third.kid]
    assert await store.retire_secrets() == []
    # Grace 0 ends the previous secret at once; bad graces are refused.
    fourth = await store.rotate_secret(grace=0)
    assert [s.kid for s in await store.api_secrets()] == [fourth.kid]
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="grace"):
            await store.rotate_secret(grace=bad)
    await store.close()
    await other.close()


@pytest.mark.asyncio
async def test_deny_list(redis_server_module: RedisServer) -> None:
    store = await _store(redis_server_module)
    assert not await store.is_revoked("a")
    await store.revoke_token("a", time.time() + 3600)
    await store.revoke_token("gone", time.time() - 1)  # already expired
    assert await store.is_revoked("a")
    # Differs from SQLite in when an expired entry goes (here: a minute after the
    # revocation, there: at the next revocation); both are allowed by the Store protocol.
    assert await store.is_revoked("gone")
    await store.revoke_token("a", time.time() - 1)  # never shortens an entry
    assert await store.is_revoked("a")
    ttl = await store.redis.pttl(store.prefix + "revoked:a")
    assert 3_000_000 < ttl <= 3_600_000
    await store.close()


@pytest.mark.asyncio
async def test_restart_keeps_everything_and_outage_is_one_clear_error(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = await _store(redis_server)
    creds = await store.get_or_create_credentials()
    kept = _record("kept")
    await store.create_session(kept)
    await store.revoke_token("jti", time.time() + 3600)
    redis_server.kill()  # kill -9: the append-only file has every acknowledged write
    caplog.set_level(logging.INFO, logger="e2ee.server.cluster")
    for _ in range(5):
        with pytest.raises(ClusterUnavailable) as err:
            await asyncio.wait_for(store.get_session("kept"), 10)
        assert err.value.code == "cluster_unavailable"
        assert err.value.status == 503
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "Redis unavailable" in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    redis_server.start()
    # The same store object works again (its pooled connections were dead).
    assert await store.get_session("kept") == kept
    assert await store.get_or_create_credentials() == creds
    assert await store.is_revoked("jti")
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    await store.close()


@pytest.mark.asyncio
async def test_connect_fails_clearly_without_redis(redis_server: RedisServer) -> None:
    url = redis_server.url
    redis_server.stop()
    with pytest.raises(ClusterUnavailable, match="Redis did not answer"):
        await asyncio.wait_for(RedisStore.connect(url), 10)
