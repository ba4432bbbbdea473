"""Unit tests of the token-lifecycle state in e2ee.server.store: key ids, rotation with a
grace period, retirement, the ``jti`` deny-list, the migration of version-1 data dirs,
and listing and deleting sessions."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from e2ee.server.store import (
    SCHEMA_VERSION,
    SessionRecord,
    SQLiteStore,
    db_path,
    key_id,
    new_api_secret,
)

_V1_SCHEMA = """
CREATE TABLE credentials (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    api_key     TEXT NOT NULL,
    api_secret  TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    media_mode       TEXT NOT NULL CHECK (media_mode IN ('routed', 'relayed')),
    e2ee             INTEGER NOT NULL CHECK (e2ee IN (0, 1)),
    suite            INTEGER,
    kdf_iterations   INTEGER,
    max_participants INTEGER NOT NULL,
    created_at       REAL NOT NULL
);
"""


def _record(ident: str, created_at: float) -> SessionRecord:
    return SessionRecord(ident, "routed", True, 6, 1000, 5, created_at)


def test_migrates_a_version_1_data_dir(tmp_path: Path) -> None:
    secret = new_api_secret()
    db = sqlite3.connect(db_path(tmp_path))
    db.executescript(_V1_SCHEMA)
    db.execute("INSERT INTO credentials VALUES (1, 'key_old', ?, 1.0)", (secret,))
    db.execute("INSERT INTO sessions VALUES ('s', 'routed', 1, 6, 1000, 5, 2.0)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    for _ in range(2):  # idempotent
        store = SQLiteStore(db_path(tmp_path))
        creds = store.get_or_create_credentials_sync()
        assert (creds.api_key, creds.api_secret, creds.kid) == ("key_old", secret, key_id(secret))
        [live] = store.api_secrets_sync()
        assert (live.kid, live.secret, live.expires_at) == (key_id(secret), secret, None)
        assert store.get_session_sync("s") == _record("s", 2.0)
        store.close_sync()
    db = sqlite3.connect(db_path(tmp_path))
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.close()


def test_new_store_has_one_signing_secret(tmp_path: Path) -> None:
    store = SQLiteStore.in_data_dir(tmp_path)
    creds = store.get_or_create_credentials_sync()
    [live] = store.api_secrets_sync()
    assert (live.kid, live.secret, live.expires_at) == (creds.kid, creds.api_secret, None)
    assert creds.api_secret not in repr(creds)
    assert creds.api_secret not in repr(live)
    store.close_sync()


def test_rotate_keeps_two_live_secrets_then_retire(tmp_path: Path) -> None:
    store = SQLiteStore.in_data_dir(tmp_path)
    first = store.get_or_create_credentials_sync()
    before = time.time()
    second = store.rotate_secret_sync(grace=3600)
    # The new secret signs; another process (a second store) sees it.
    other = SQLiteStore.in_data_dir(tmp_path)
    assert other.get_or_create_credentials_sync().api_secret == second.secret
    assert other.get_or_create_credentials_sync().api_key == first.api_key
    signing, previous = other.api_secrets_sync()
    assert (signing.kid, signing.expires_at) == (second.kid, None)
    assert previous.kid == first.kid
    assert previous.expires_at is not None
    assert before + 3600 <= previous.expires_at <= time.time() + 3600
    # Rotating again ends the grace of the oldest: never more than two live.
    third = store.rotate_secret_sync(grace=3600)
    assert [s.kid for s in store.api_secrets_sync()] == [third.kid, second.kid]
    # The signing secret cannot be retired; the previous one can, by kid or all at once.
    assert store.retire_secrets_sync(third.kid) == []
    assert store.retire_secrets_sync("k-unknown") == []
    assert store.retire_secrets_sync(second.kid) == [second.kid]
    assert [s.kid for s in other.api_secrets_sync()] == [third.kid]
    assert store.retire_secrets_sync() == []
    store.close_sync()
    other.close_sync()


def test_grace_period_ends(tmp_path: Path) -> None:
    store = SQLiteStore.in_data_dir(tmp_path)
    store.get_or_create_credentials_sync()
    new = store.rotate_secret_sync(grace=0)
    assert [s.kid for s in store.api_secrets_sync()] == [new.kid]
    with pytest.raises(ValueError, match="grace"):
        store.rotate_secret_sync(grace=-1)
    with pytest.raises(ValueError, match="grace"):
        store.rotate_secret_sync(grace=float("nan"))
    store.close_sync()


@pytest.mark.asyncio
async def test_deny_list_kept_until_expiry(tmp_path: Path) -> None:
    store = SQLiteStore.in_data_dir(tmp_path)
    assert not await store.is_revoked("a")
    await store.revoke_token("a", time.time() + 3600)
    await store.revoke_token("gone", time.time() - 1)  # already expired
    assert await store.is_revoked("a")
    assert await store.is_revoked("gone")  # pruned on the next revocation only
    await store.revoke_token("b", time.time() + 3600)
    assert not await store.is_revoked("gone")
    assert await store.is_revoked("a")
    await store.revoke_token("a", time.time() - 1)  # never shortens an entry
    await store.revoke_token("c", time.time() + 3600)
    assert await store.is_revoked("a")
    await store.close()
    again = SQLiteStore.in_data_dir(tmp_path)
    assert await again.is_revoked("b")
    await again.close()


@pytest.mark.asyncio
async def test_list_and_delete_sessions(tmp_path: Path) -> None:
    store = SQLiteStore.in_data_dir(tmp_path)
    for i in range(5):
        await store.create_session(_record(f"s{i}", 100.0 + i))
    await store.create_session(_record("same-time", 104.0))  # ties: newest insert first
    listed = await store.list_sessions(3)
    assert [r.id for r in listed] == ["same-time", "s4", "s3"]
    assert listed[1] == _record("s4", 104.0)
    assert len(await store.list_sessions(100)) == 6
    assert await store.delete_session("s4")
    assert not await store.delete_session("s4")
    assert await store.get_session("s4") is None
    assert [r.id for r in await store.list_sessions(2)] == ["same-time", "s3"]
    await store.close()
