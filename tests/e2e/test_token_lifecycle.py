"""Token lifecycle against a real server process (issue 11, case 4): a force-disconnected
participant cannot rejoin with its token, tokens can be revoked, over-long tokens are
refused, sessions can be listed and deleted, and the API secret can be rotated by
``e2ee credentials`` while the server runs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from e2ee.server.store import key_id
from e2ee.server.tokens import mint_token, project_auth_token, verify_token
from support.cli import e2ee
from support.server import Api, Peer, ServerProcess, refused


def _jti(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


async def _force_disconnect(moderator: Peer, peer: Peer) -> None:
    """``moderator`` removes the participant ``peer`` is a connection of."""
    reply = await moderator.request({"type": "force_disconnect", "connection_id": peer.id})
    assert reply["type"] == "ok", reply


async def _kicked(peer: Peer) -> tuple[str, int | None]:
    """The ``disconnected`` reason ``peer`` got and its close code."""
    event = await peer.event("disconnected", timeout=10)
    return event["reason"], await peer.wait_closed(10)


# -- revocation -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_force_disconnected_participant_cannot_rejoin(fake_api: Api) -> None:
    sid = (await fake_api.create_session())["id"]
    moderator = await fake_api.join(sid, "moderator")
    token = fake_api.mint(sid, "publisher")
    victim = await Peer.connect(fake_api, sid, token)
    await _force_disconnect(moderator, victim)
    assert await _kicked(victim) == ("force_disconnected", 4001)
    err, close = await refused(fake_api, sid, token)
    assert (err["code"], close) == ("token_revoked", 4401), err
    # Over REST too; another token of the same session is not affected.
    token2 = fake_api.mint(sid, "publisher")
    victim2 = await Peer.connect(fake_api, sid, token2)
    status, _ = await fake_api.call("DELETE", f"/v1/sessions/{sid}/connections/{victim2.id}")
    assert status == 204
    assert await _kicked(victim2) == ("force_disconnected", 4001)
    err, close = await refused(fake_api, sid, token2)
    assert (err["code"], close) == ("token_revoked", 4401), err
    fresh = await fake_api.join(sid, "publisher")
    assert fresh.hello["type"] == "session"


@pytest.mark.asyncio
async def test_force_disconnect_removes_every_connection_of_the_token(fake_api: Api) -> None:
    # Participants are counted by token: removing one removes all its connections.
    sid = (await fake_api.create_session())["id"]
    moderator = await fake_api.join(sid, "moderator")
    token = fake_api.mint(sid, "publisher")
    first = await Peer.connect(fake_api, sid, token)
    second = await Peer.connect(fake_api, sid, token)
    await _force_disconnect(moderator, first)
    assert await _kicked(first) == ("force_disconnected", 4001)
    assert await _kicked(second) == ("force_disconnected", 4001)


@pytest.mark.asyncio
async def test_revocation_over_rest(fake_api: Api) -> None:
    sid = (await fake_api.create_session())["id"]
    token = fake_api.mint(sid, "subscriber")
    holder = await Peer.connect(fake_api, sid, token)
    unused = fake_api.mint(sid, "publisher")
    path = f"/v1/sessions/{sid}/revocations"
    for body in [{"jti": _jti(token)}, {"jti": _jti(unused)}]:
        status, reply = await fake_api.call("POST", path, body)
        assert (status, reply) == (204, None)
    # The live connection of the revoked token is put out; neither token works again.
    assert await _kicked(holder) == ("force_disconnected", 4001)
    for revoked in (token, unused):
        err, close = await refused(fake_api, sid, revoked)
        assert (err["code"], close) == ("token_revoked", 4401), err
    # Revoking twice is fine; bad input and unknown sessions are refused.
    status, _ = await fake_api.call("POST", path, {"jti": _jti(token)})
    assert status == 204
    for bad in [
        {},
        {"jti": ""},
        {"jti": 5},
        {"jti": "x" * 129},
        {"jti": "a b"},
        {"jti": "j", "x": 1},
    ]:
        status, reply = await fake_api.call("POST", path, bad)
        assert (status, reply["code"]) == (400, "bad_request"), (bad, reply)
    status, reply = await fake_api.call("POST", path, raw=b"[1]")
    assert (status, reply["code"]) == (400, "bad_request")
    status, reply = await fake_api.call("POST", "/v1/sessions/nope/revocations", {"jti": "j"})
    assert (status, reply["code"]) == (404, "session_not_found")
    status, reply = await fake_api.call("POST", path, {"jti": "j"}, headers={})
    assert status == 401


@pytest.mark.asyncio
async def test_over_long_tokens_refused_even_if_signed(fake_api: Api) -> None:
    sid = (await fake_api.create_session())["id"]
    now = int(time.time())
    creds = fake_api.creds

    def forged(exp: int) -> str:
        claims = {
            "iss": creds.api_key,
            "scope": "session.connect",
            "session_id": sid,
            "role": "publisher",
            "data": "",
            "iat": now,
            "exp": exp,
            "jti": f"long-{exp}",
        }
        return jwt.encode(claims, creds.api_secret, "HS256", headers={"kid": creds.kid})

    for exp in (253402300799, now + 24 * 3600 + 1):  # year 9999; a second over 24 h
        err, close = await refused(fake_api, sid, forged(exp))
        assert (err["code"], close) == ("token_expired", 4401), err
    peer = await Peer.connect(fake_api, sid, forged(now + 24 * 3600))
    assert peer.hello["type"] == "session"
    # Nor will the REST API mint one.
    status, reply = await fake_api.call(
        "POST", f"/v1/sessions/{sid}/tokens", {"role": "publisher", "ttl": 24 * 3600 + 1}
    )
    assert (status, reply["code"]) == (400, "bad_request")


@pytest.mark.asyncio
async def test_token_without_kid_refused(fake_api: Api) -> None:
    sid = (await fake_api.create_session())["id"]
    good = fake_api.mint(sid)
    claims = jwt.decode(good, options={"verify_signature": False})
    bare = jwt.encode(claims, fake_api.creds.api_secret, "HS256")
    err, close = await refused(fake_api, sid, bare)
    assert (err["code"], close) == ("token_unknown_key", 4401), err
    auth = project_auth_token(fake_api.creds.api_key, fake_api.creds.api_secret)
    claims = jwt.decode(auth, options={"verify_signature": False})
    headers = {"Authorization": "Bearer " + jwt.encode(claims, fake_api.creds.api_secret)}
    status, reply = await fake_api.call("GET", f"/v1/sessions/{sid}", headers=headers)
    assert (status, reply["code"]) == (401, "token_unknown_key")


# -- sessions ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_list_and_delete_sessions(fake_api: Api) -> None:
    made = [(await fake_api.create_session(max_participants=3 + i))["id"] for i in range(3)]
    status, listed = await fake_api.call("GET", "/v1/sessions?limit=3")
    assert status == 200
    assert [s["id"] for s in listed["sessions"]] == made[::-1]  # newest first
    assert listed["sessions"][0]["max_participants"] == 5
    assert set(listed["sessions"][0]) >= {"id", "e2ee", "connections", "streams", "router"}
    status, listed = await fake_api.call("GET", "/v1/sessions")
    assert status == 200
    assert len(listed["sessions"]) >= 3
    for query in ("limit=0", "limit=1001", "limit=x", "limit=-1", "limit=99999999", "foo=1"):
        status, reply = await fake_api.call("GET", f"/v1/sessions?{query}")
        assert (status, reply["code"]) == (400, "bad_request"), query
    status, _ = await fake_api.call("GET", "/v1/sessions", headers={})
    assert status == 401

    sid = made[0]
    token = fake_api.mint(sid, "moderator")
    member = await Peer.connect(fake_api, sid, token)
    other = await fake_api.join(sid, "subscriber")
    status, body = await fake_api.call("DELETE", f"/v1/sessions/{sid}")
    assert (status, body) == (204, None)
    assert await _kicked(member) == ("session_deleted", 4404)
    assert await _kicked(other) == ("session_deleted", 4404)
    err, close = await refused(fake_api, sid, token)
    assert (err["code"], close) == ("session_not_found", 4404)
    for method in ("GET", "DELETE"):
        status, reply = await fake_api.call(method, f"/v1/sessions/{sid}")
        assert (status, reply["code"]) == (404, "session_not_found"), method
    status, listed = await fake_api.call("GET", "/v1/sessions?limit=1000")
    assert sid not in {s["id"] for s in listed["sessions"]}
    status, reply = await fake_api.call("DELETE", "/v1/sessions/no-such-session")
    assert (status, reply["code"]) == (404, "session_not_found")


# -- rotation ---------------------------------------------------------------------------


async def _first(api: Api, sid: str, token: str) -> dict[str, Any]:
    """The first message a client connecting with ``token`` gets."""
    ws = await api.http.ws_connect(
        f"{api.server.ws_base}/v1/sessions/{sid}/ws", params={"token": token}
    )
    try:
        first: dict[str, Any] = await ws.receive_json(timeout=5)
        return first
    finally:
        await ws.close()


async def _accepted(api: Api, sid: str, token: str) -> bool:
    return (await _first(api, sid, token))["type"] == "session"


async def _until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the server never saw the change"
        await asyncio.sleep(0.1)


@pytest.mark.asyncio
async def test_rotation_seen_by_running_server(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    server = ServerProcess(tmp_path / "data", router="fake")
    await asyncio.to_thread(server.start)
    data = str(server.data_dir)
    try:
        api = Api(server, http)
        old = api.creds
        sid = (await api.create_session())["id"]
        old_token = api.mint(sid)
        assert jwt.get_unverified_header(old_token)["kid"] == old.kid

        shown = e2ee("credentials", "show", "--data-dir", data).stdout
        assert old.api_key in shown
        assert old.kid in shown
        assert old.api_secret not in shown
        out = e2ee("credentials", "rotate", "--data-dir", data, "--grace", "3600").stdout
        new = server.credentials()
        assert new.api_key == old.api_key
        assert new.kid != old.kid
        assert new.kid in out
        assert old.kid in out
        assert new.api_secret not in out
        shown = e2ee("credentials", "show", "--data-dir", data, "--show-secret").stdout
        assert new.api_secret in shown
        assert old.api_secret in shown

        # Both secrets are live: tokens of either verify, REST takes either.
        new_token = mint_token(new.api_key, new.api_secret, sid)
        assert await _accepted(api, sid, new_token)
        assert await _accepted(api, sid, old_token)
        api.creds = new
        minted = await api.token(sid)  # the server now signs with the new secret
        assert jwt.get_unverified_header(minted)["kid"] == new.kid
        verify_token(new.api_key, new.api_secret, minted, session_id=sid)

        out = e2ee("credentials", "retire", "--data-dir", data).stdout
        assert old.kid in out

        async def old_refused() -> bool:
            return (await _first(api, sid, old_token)).get("code") == "token_unknown_key"

        await _until(old_refused)
        err, close = await refused(api, sid, old_token)
        assert (err["code"], close) == ("token_unknown_key", 4401)
        assert await _accepted(api, sid, new_token)
        stale = {"Authorization": f"Bearer {project_auth_token(old.api_key, old.api_secret)}"}
        status, reply = await api.call("GET", f"/v1/sessions/{sid}", headers=stale)
        assert (status, reply["code"]) == (401, "token_unknown_key")
        again = e2ee("credentials", "retire", "--data-dir", data, check=False)
        assert again.returncode == 1
        assert "no previous key" in again.stderr
        assert key_id(new.api_secret) == new.kid
        # `e2ee credentials token` gives curl users a project auth token of the new key.
        printed = e2ee("credentials", "token", "--data-dir", data, "--ttl", "60").stdout.strip()
        assert jwt.get_unverified_header(printed)["kid"] == new.kid
        bearer = {"Authorization": f"Bearer {printed}"}
        status, reply = await api.call("GET", f"/v1/sessions/{sid}", headers=bearer)
        assert (status, reply["id"]) == (200, sid), reply
        await api.close()
    finally:
        await asyncio.to_thread(server.stop)
    assert old.api_secret not in server.stderr_path.read_text()


def test_credentials_needs_server_data(tmp_path: Path) -> None:
    res = e2ee("credentials", "show", "--data-dir", str(tmp_path), check=False)
    assert res.returncode != 0
    assert "no server data" in res.stderr
    res = e2ee("credentials", "rotate", "--data-dir", str(tmp_path), check=False)
    assert res.returncode != 0
    res = e2ee("credentials", "token", "--data-dir", str(tmp_path), check=False)
    assert (res.returncode, res.stderr.count("\n")) == (1, 1), res.stderr
    assert not (tmp_path / "e2ee.sqlite3").exists()


@pytest.mark.asyncio
async def test_revocation_racing_a_join_is_still_4401(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The token is revoked after its check and before the join: the room's in-memory
    # copy of the deny-list refuses it, with the token close code, not 4429.
    from e2ee.server.app import HUB
    from e2ee.server.hub import Hub
    from support.app_server import app_server

    async with app_server(tmp_path) as served:
        hub = served.app[HUB]
        api = Api(served, http)  # type: ignore[arg-type]
        sid = (await api.create_session())["id"]
        token = api.mint(sid)
        checked = hub.verify_session_token

        async def revoked_meanwhile(self: Hub, tok: str, session_id: str) -> Any:
            claims = await checked(tok, session_id)
            await hub.revoke(claims.jti, claims.expires_at)
            return claims

        monkeypatch.setattr(Hub, "verify_session_token", revoked_meanwhile)
        err, close = await refused(api, sid, token)
        assert (err["code"], close) == ("token_revoked", 4401), err
