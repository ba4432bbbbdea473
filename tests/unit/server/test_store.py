"""Unit tests of e2ee.server.store: the SQLite store of credentials and sessions."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import time
from pathlib import Path

import pytest

from e2ee.server.store import (
    DuplicateSession,
    SessionRecord,
    SQLiteStore,
    Store,
    db_path,
)


def _record(sid: str = "s1", **kw: object) -> SessionRecord:
    fields: dict[str, object] = {
        "id": sid,
        "media_mode": "routed",
        "e2ee": True,
        "suite": 6,
        "kdf_iterations": 1000,
        "max_participants": 5,
        "created_at": time.time(),
    }
    fields.update(kw)
    return SessionRecord(**fields)  # type: ignore[arg-type]


def test_implements_protocol(tmp_path: Path) -> None:
    store = SQLiteStore.in_data_dir(tmp_path)
    assert isinstance(store, Store)
    store.close_sync()


@pytest.mark.asyncio
async def test_credentials_created_once_and_kept(tmp_path: Path) -> None:
    store = SQLiteStore.in_data_dir(tmp_path / "data")
    first = await store.get_or_create_credentials()
    assert await store.get_or_create_credentials() == first
    await store.close()
    store = SQLiteStore.in_data_dir(tmp_path / "data")
    assert await store.get_or_create_credentials() == first
    await store.close()
    secret = base64.urlsafe_b64decode(first.api_secret + "=" * (-len(first.api_secret) % 4))
    assert len(secret) * 8 >= 256
    assert first.api_key.startswith("key_")
    assert first.api_key != first.api_secret
    assert first.api_secret not in repr(first)


def test_two_stores_on_one_file_agree(tmp_path: Path) -> None:
    a = SQLiteStore.in_data_dir(tmp_path)
    b = SQLiteStore.in_data_dir(tmp_path)
    assert a.get_or_create_credentials_sync() == b.get_or_create_credentials_sync()
    a.create_session_sync(_record("shared"))
    assert b.get_session_sync("shared") == a.get_session_sync("shared")
    a.close_sync()
    b.close_sync()


def test_new_stores_get_new_credentials(tmp_path: Path) -> None:
    a = SQLiteStore.in_data_dir(tmp_path / "a")
    b = SQLiteStore.in_data_dir(tmp_path / "b")
    ca, cb = a.get_or_create_credentials_sync(), b.get_or_create_credentials_sync()
    assert ca.api_key != cb.api_key
    assert ca.api_secret != cb.api_secret
    a.close_sync()
    b.close_sync()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_private_permissions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = SQLiteStore.in_data_dir(data)
    store.get_or_create_credentials_sync()
    store.close_sync()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE(db_path(data).stat().st_mode) == 0o600
    db_path(data).chmod(0o644)
    SQLiteStore(db_path(data)).close_sync()
    assert stat.S_IMODE(db_path(data).stat().st_mode) == 0o600


@pytest.mark.asyncio
async def test_sessions_round_trip(tmp_path: Path) -> None:
    store = SQLiteStore.in_data_dir(tmp_path)
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
    assert (await store.get_session("e")) == e2ee
    await store.close()
    # Survives reopening.
    again = SQLiteStore.in_data_dir(tmp_path)
    assert await again.get_session("p") == plain
    await again.close()


@pytest.mark.asyncio
async def test_concurrent_calls(tmp_path: Path) -> None:
    store = SQLiteStore.in_data_dir(tmp_path)
    await asyncio.gather(*(store.create_session(_record(f"s{i}")) for i in range(50)))
    got = await asyncio.gather(*(store.get_session(f"s{i}") for i in range(50)))
    assert [g.id for g in got if g] == [f"s{i}" for i in range(50)]
    await store.close()


def test_refuses_newer_schema(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "e2ee.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(RuntimeError, match="schema version 99"):
        SQLiteStore(path)


def test_session_ids_never_look_like_an_option() -> None:
    # 1 in 64 token_urlsafe draws starts with "-", which a command line takes for an
    # option (`e2ee token -Xyz...`); 2,000 draws miss that with odds below 1e-13.
    from e2ee.server.store import new_session_id

    ids = {new_session_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 32 for i in ids)
