"""The ``e2ee`` command against a real server process (``fake_server``, tests/conftest.py)."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from e2ee.server.store import SessionRecord, SQLiteStore, db_path
from e2ee.server.tokens import mint_token, verify_token
from e2ee.tools.cli import NoServerData, load_credentials
from support.cli import e2ee
from support.server import ServerProcess


def test_help_and_selftest() -> None:
    out = e2ee("--help").stdout
    for command in ("serve", "session", "token", "demo", "selftest"):
        assert command in out
    assert "self-test ok (8 cipher suites)" in e2ee("selftest").stdout


@pytest.mark.asyncio
async def test_session_create_and_token(
    fake_server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    data = str(fake_server.data_dir)
    sid = e2ee("session", "create", "--e2ee", "--url", fake_server.url, "--data-dir", data).stdout
    sid = sid.strip()
    assert len(sid) >= 22
    token = e2ee("token", sid, "--role", "moderator", "--data", "alice", "--data-dir", data)
    creds = fake_server.credentials()
    claims = verify_token(creds.api_key, creds.api_secret, token.stdout.strip(), session_id=sid)
    assert claims.role == "moderator"
    assert claims.data == "alice"

    async with http.ws_connect(
        f"{fake_server.url}/v1/sessions/{sid}/ws", params={"token": token.stdout.strip()}
    ) as ws:
        first = await ws.receive_json()
    assert str(first["session"]["e2ee"]) == "True"


def test_refusals_are_clear(fake_server: ServerProcess, tmp_path: Path) -> None:
    data = str(fake_server.data_dir)
    bad = e2ee(
        "session",
        "create",
        "--e2ee",
        "--relayed",
        "--url",
        fake_server.url,
        "--data-dir",
        data,
        check=False,
    )
    assert bad.returncode == 1
    assert "bad_request" in bad.stderr
    assert "Traceback" not in bad.stderr
    unknown = e2ee("token", "no-such-session", "--data-dir", data, check=False)
    assert unknown.returncode == 1
    assert "no session" in unknown.stderr
    sid = e2ee("session", "create", "--url", fake_server.url, "--data-dir", data).stdout.strip()
    too_long = e2ee("token", sid, "--ttl", str(40 * 86400), "--data-dir", data, check=False)
    assert too_long.returncode == 1
    assert "Traceback" not in too_long.stderr
    nowhere = e2ee("token", sid, "--data-dir", str(tmp_path), check=False)
    assert nowhere.returncode == 1
    assert "no e2ee server data" in nowhere.stderr


def test_load_credentials_from_data_dir(tmp_path: Path) -> None:
    sid = "session-1"
    with pytest.raises(NoServerData, match="no e2ee server data"):
        load_credentials(tmp_path, sid)
    store = SQLiteStore.in_data_dir(tmp_path)
    creds = store.get_or_create_credentials_sync()
    store.create_session_sync(SessionRecord(sid, "routed", False, None, None, 50, time.time()))
    store.close_sync()
    assert load_credentials(tmp_path) == creds
    loaded = load_credentials(tmp_path, sid)
    token = mint_token(loaded.api_key, loaded.api_secret, sid, role="subscriber", ttl=60, data="d")
    claims = verify_token(creds.api_key, creds.api_secret, token, session_id=sid)
    assert (claims.role, claims.data) == ("subscriber", "d")
    with pytest.raises(LookupError, match="no session"):
        load_credentials(tmp_path, "other")
    assert db_path(tmp_path).exists()
