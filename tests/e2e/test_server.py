"""End-to-end tests of the session server: the real server runs as a child process on a
free loopback port with a temporary data directory, and is driven over HTTP and WebSocket
with aiohttp's client.

The fixtures come from tests/conftest.py: ``server`` / ``api`` run the production
configuration (the real media router, when ``e2ee.sfu.router`` exists); ``fake_server`` /
``fake_api`` inject a fake media router (no RTP) for the stream-level signaling tests.
``test_real_media_through_router`` uses the real one and runs once ``e2ee.sfu.router``
lands.  The tests run on pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiortc import RTCSessionDescription

from e2ee.server.tokens import TokenWrongSession, mint_token, project_auth_token, verify_token
from support.media import SyntheticVideoTrack, new_pc
from support.server import Api, Peer, Refused, ServerProcess, fake_offer, refused

pytestmark = pytest.mark.timeout(60)


def _bits(session_id: str) -> int:
    return len(base64.urlsafe_b64decode(session_id + "=" * (-len(session_id) % 4))) * 8


# -- REST -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_healthz_and_rest_needs_project_auth(server: ServerProcess, api: Api) -> None:
    async with api.http.get(server.url + "/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
        assert "Server" not in resp.headers
    status, err = await api.call("POST", "/v1/sessions", {}, headers={})
    assert status == 401
    assert err["code"] == "unauthorized"
    # Another project's secret, a tampered token, an expired one, a long-lived one.
    other = project_auth_token(api.creds.api_key, "x" * 43)
    good = project_auth_token(api.creds.api_key, api.creds.api_secret)
    tampered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    expired = project_auth_token(api.creds.api_key, api.creds.api_secret, 60, now=1e9)
    long_lived = jwt.encode(
        {
            "iss": api.creds.api_key,
            "scope": "project",
            "iat": 2_000_000_000,
            "exp": 2_000_000_000 + 86_400,
            "jti": "x",
        },
        api.creds.api_secret,
        algorithm="HS256",
        headers={"kid": api.creds.kid},
    )
    for token, code in [
        (other, "token_unknown_key"),  # its kid names a secret that is not ours
        (tampered, "token_bad_signature"),
        (expired, "token_expired"),
        ("not-a-jwt", "token_malformed"),
    ]:
        status, err = await api.call(
            "POST", "/v1/sessions", {}, headers={"Authorization": f"Bearer {token}"}
        )
        assert (status, err["code"]) == (401, code), (token, err)
    status, _ = await api.call(
        "GET", "/v1/sessions/x", headers={"Authorization": f"Bearer {long_lived}"}
    )
    assert status == 401
    # A session token (what clients hold) is not a REST credential.
    session = await api.create_session()
    client_token = await api.token(session["id"], "moderator")
    status, err = await api.call(
        "POST", "/v1/sessions", {}, headers={"Authorization": f"Bearer {client_token}"}
    )
    assert (status, err["code"]) == (401, "token_malformed")


@pytest.mark.asyncio
async def test_create_sessions(api: Api) -> None:
    routed = await api.create_session()
    assert routed["media_mode"] == "routed"
    assert routed["e2ee"] is False
    assert routed["suite"] is None
    assert routed["kdf_iterations"] is None
    assert routed["max_participants"] == 50
    assert routed["connections"] == []
    assert routed["streams"] == []
    relayed = await api.create_session(media_mode="relayed")
    assert relayed["media_mode"] == "relayed"
    e2ee = await api.create_session(e2ee=True)
    assert (e2ee["suite"], e2ee["kdf_iterations"]) == (6, 600_000)
    fast = await api.create_session(e2ee=True, suite=8, kdf_iterations=1000, max_participants=3)
    assert (fast["suite"], fast["kdf_iterations"], fast["max_participants"]) == (8, 1000, 3)

    ids = {routed["id"], relayed["id"], e2ee["id"], fast["id"]}
    for _ in range(16):
        ids.add((await api.create_session())["id"])
    assert len(ids) == 20
    assert all(_bits(i) >= 128 for i in ids)

    bad: list[tuple[Any, str]] = [
        ({"media_mode": "relayed", "e2ee": True}, "routed"),
        ({"e2ee": True, "kdf_iterations": 999}, "kdf_iterations"),
        ({"e2ee": True, "kdf_iterations": 10_000_001}, "kdf_iterations"),
        ({"e2ee": True, "suite": 9}, "suite"),
        ({"e2ee": True, "suite": True}, "suite"),
        ({"suite": 6}, "E2EE sessions only"),
        ({"e2ee": "yes"}, "e2ee"),
        ({"e2e": True}, "unknown field"),
        ({"media_mode": "p2p"}, "media_mode"),
        ({"max_participants": 0}, "max_participants"),
        ({"max_participants": 1001}, "max_participants"),
        ({"max_participants": "5"}, "max_participants"),
    ]
    for options, words in bad:
        status, err = await api.call("POST", "/v1/sessions", options)
        assert status == 400, options
        assert err["type"] == "error"
        assert err["code"] == "bad_request"
        assert words in err["message"], err


@pytest.mark.asyncio
async def test_get_session_and_tokens(api: Api) -> None:
    session = await api.create_session(e2ee=True, kdf_iterations=1000)
    sid = session["id"]
    status, got = await api.call("GET", f"/v1/sessions/{sid}")
    assert status == 200
    assert got["id"] == sid
    assert got["e2ee"] is True
    assert got["router"] is None
    status, err = await api.call("GET", "/v1/sessions/nope")
    assert (status, err["code"]) == (404, "session_not_found")

    status, minted = await api.call(
        "POST", f"/v1/sessions/{sid}/tokens", {"role": "moderator", "ttl": 600, "data": "n=1"}
    )
    assert status == 201
    claims = verify_token(api.creds.api_key, api.creds.api_secret, minted["token"], session_id=sid)
    assert (claims.role, claims.data, claims.session_id) == ("moderator", "n=1", sid)
    assert claims.expires_at - claims.issued_at == 600
    with pytest.raises(TokenWrongSession):
        verify_token(api.creds.api_key, api.creds.api_secret, minted["token"], session_id="x")

    # REST-minted and function-minted tokens both let a client in.
    a = await Peer.connect(api, sid, minted["token"])
    b = await api.join(sid, "subscriber", data="visible to all")
    assert a.hello["connection"]["role"] == "moderator"
    assert b.hello["connection"]["data"] == "visible to all"
    status, got = await api.call("GET", f"/v1/sessions/{sid}")
    assert {c["id"] for c in got["connections"]} == {a.id, b.id}
    await a.close()
    await b.close()

    for req, code in [
        ({"role": "admin"}, 400),
        ({}, 400),
        ({"role": "publisher", "ttl": 30 * 86400 + 1}, 400),
        ({"role": "publisher", "ttl": 0}, 400),
        ({"role": "publisher", "data": "x" * 1001}, 400),
        ({"role": "publisher", "data": 5}, 400),
        ({"role": "publisher", "extra": 1}, 400),
    ]:
        status, err = await api.call("POST", f"/v1/sessions/{sid}/tokens", req)
        assert (status, err["code"]) == (code, "bad_request"), req
    status, err = await api.call("POST", "/v1/sessions/nope/tokens", {"role": "publisher"})
    assert (status, err["code"]) == (404, "session_not_found")


@pytest.mark.asyncio
async def test_archive_broadcast_sip_refused(api: Api) -> None:
    e2ee = (await api.create_session(e2ee=True, kdf_iterations=1000))["id"]
    plain = (await api.create_session())["id"]
    relayed = (await api.create_session(media_mode="relayed"))["id"]
    for feature in ("archive", "broadcast", "sip"):
        status, err = await api.call("POST", f"/v1/sessions/{e2ee}/{feature}", {})
        assert (status, err["code"]) == (409, "e2ee_unsupported_feature")
        assert "cannot decode end-to-end encrypted media" in err["message"]
    for feature in ("broadcast", "sip"):
        status, err = await api.call("POST", f"/v1/sessions/{plain}/{feature}", {})
        assert (status, err["code"]) == (501, "not_implemented")
        assert "not built yet" in err["message"]
    # Archiving is built (tests/e2e/test_archive.py): a session without E2EE is archived
    # once someone is in it; a relayed one has no router to archive from.
    status, err = await api.call("POST", f"/v1/sessions/{plain}/archive", {})
    assert (status, err["code"]) == (409, "no_clients")
    status, err = await api.call("POST", f"/v1/sessions/{relayed}/archive", {})
    assert (status, err["code"]) == (409, "relayed_unsupported_feature")
    status, err = await api.call("POST", "/v1/sessions/nope/archive", {})
    assert status == 404
    status, _ = await api.call("POST", f"/v1/sessions/{e2ee}/archive", headers={})
    assert status == 401


@pytest.mark.asyncio
async def test_bad_rest_input(api: Api) -> None:
    for raw, code in [
        (b"{not json", "bad_json"),
        (b"[1, 2]", "bad_request"),
        (b'"routed"', "bad_request"),
        (b"\xff\xfe", "bad_json"),
    ]:
        status, err = await api.call("POST", "/v1/sessions", raw=raw)
        assert (status, err["code"]) == (400, code), raw
    status, err = await api.call("POST", "/v1/sessions", raw=b"{" + b" " * 200_000 + b"}")
    assert (status, err["code"]) == (413, "payload_too_large")
    status, err = await api.call("GET", "/v1/nothing-here")
    assert (status, err["code"]) == (404, "not_found")
    status, err = await api.call("PUT", "/v1/sessions")
    assert (status, err["code"]) == (405, "method_not_allowed")
    # A plain GET on the WebSocket endpoint: a JSON 400, not a traceback.
    status, err = await api.call("GET", "/v1/sessions/x/ws")
    assert (status, err["code"]) == (400, "bad_request")
    # Still serving.
    assert (await api.create_session())["id"]


# -- WebSocket: joining -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ws_refuses_bad_tokens(api: Api) -> None:
    sid = (await api.create_session())["id"]
    other = (await api.create_session())["id"]
    good = api.mint(sid)
    header, payload, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "moderator"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    cases = [
        (api.mint(sid, ttl=60, now=1e9), "token_expired", 4401),
        (f"{header}.{forged_payload}.{sig}", "token_bad_signature", 4401),
        (good[:-3] + ("AAA" if good[-3:] != "AAA" else "BBB"), "token_bad_signature", 4401),
        (mint_token(api.creds.api_key, "y" * 43, sid), "token_unknown_key", 4401),
        (api.mint(other), "token_wrong_session", 4403),
        ("garbage", "token_malformed", 4401),
        (project_auth_token(api.creds.api_key, api.creds.api_secret), "token_malformed", 4401),
        (None, "token_missing", 4400),
    ]
    for token, code, close in cases:
        err, close_code = await refused(api, sid, token)
        assert (err["type"], err["code"]) == ("error", code), err
        assert close_code == close, (code, close_code)
    err, close_code = await refused(api, "no-such-session", api.mint("no-such-session"))
    assert (err["code"], close_code) == ("session_not_found", 4404)
    # The good token still works.
    peer = await Peer.connect(api, sid, good)
    await peer.close()


@pytest.mark.asyncio
async def test_hello_events_and_participant_limit(api: Api) -> None:
    session = await api.create_session(e2ee=True, kdf_iterations=1000, max_participants=2)
    sid = session["id"]
    a = await api.join(sid, "publisher", data="alice")
    assert a.hello["session"] == {
        "id": sid,
        "e2ee": True,
        "media_mode": "routed",
        "suite": 6,
        "kdf_iterations": 1000,
        "max_participants": 2,
    }
    assert a.hello["connection"]["data"] == "alice"
    assert [c["id"] for c in a.hello["connections"]] == [a.id]
    assert a.hello["streams"] == []
    assert api.creds.api_secret not in json.dumps(a.hello)

    b = await api.join(sid, "subscriber", data="bob")
    created = await a.event("connection_created")
    assert created["connection"]["id"] == b.id
    assert created["connection"]["data"] == "bob"
    assert {c["id"] for c in b.hello["connections"]} == {a.id, b.id}

    with pytest.raises(Refused) as info:
        await api.join(sid, "moderator")
    assert info.value.error["code"] == "participant_limit"
    err, close_code = await refused(api, sid, api.mint(sid))
    assert (err["code"], close_code) == ("participant_limit", 4429)

    # The subscriber cannot publish.
    reply = await b.request({"type": "publish", "sdp": fake_offer(), "sdp_type": "offer"})
    assert (reply["type"], reply["code"]) == ("error", "forbidden")
    assert reply["id"] is not None

    reply = await b.request({"type": "disconnect"})
    assert reply["type"] == "ok"
    assert await b.wait_closed() == 1000
    gone = await a.event("connection_destroyed")
    assert gone["connection"]["id"] == b.id
    # A place is free again.
    c = await api.join(sid, "publisher")
    await c.close()
    await a.close()


@pytest.mark.asyncio
async def test_participant_limit_holds_under_concurrent_joins(api: Api) -> None:
    sid = (await api.create_session(max_participants=3))["id"]
    results = await asyncio.gather(*(api.join(sid) for _ in range(12)), return_exceptions=True)
    joined = [r for r in results if isinstance(r, Peer)]
    refusals = [r for r in results if isinstance(r, Refused)]
    assert len(joined) == 3, results
    assert len(refusals) == 9
    assert {r.error["code"] for r in refusals} == {"participant_limit"}
    _, got = await api.call("GET", f"/v1/sessions/{sid}")
    assert len(got["connections"]) == 3
    for p in joined:
        await p.close()


@pytest.mark.asyncio
async def test_signal_and_relayed_session(api: Api) -> None:
    sid = (await api.create_session(media_mode="relayed"))["id"]
    a, b, c = [await api.join(sid, r) for r in ("publisher", "publisher", "subscriber")]
    assert await a.request({"type": "signal", "kind": "chat", "data": "hi all"}) == {
        "type": "ok",
        "id": 1,
    }
    for peer in (b, c):
        ev = await peer.event("signal")
        assert ev == {"type": "signal", "from": a.id, "kind": "chat", "data": "hi all"}
    await b.request({"type": "signal", "to": c.id, "kind": "sdp", "data": "offer..."})
    ev = await c.event("signal")
    assert (ev["from"], ev["data"]) == (b.id, "offer...")
    pending = [a.events.get_nowait() for _ in range(a.events.qsize())]
    assert "signal" not in {e["type"] for e in pending}  # not the addressed one

    for msg, code in [
        ({"type": "signal", "kind": "x", "data": "é" * 4097}, "bad_request"),  # > 8 KiB
        ({"type": "signal", "kind": "x", "data": 5}, "bad_request"),
        ({"type": "signal", "data": "no kind"}, "bad_request"),
        ({"type": "signal", "kind": "x", "to": "nobody"}, "unknown_connection"),
        # Relayed: media goes peer to peer, not through the server (for now).
        ({"type": "publish", "sdp": fake_offer()}, "not_implemented"),
        ({"type": "subscribe", "stream_id": "s"}, "not_implemented"),
    ]:
        reply = await a.request(msg)
        assert (reply["type"], reply["code"]) == ("error", code), msg
    for p in (a, b, c):
        await p.close()


@pytest.mark.asyncio
async def test_bad_ws_input_keeps_serving(api: Api) -> None:
    sid = (await api.create_session())["id"]
    bad = await api.join(sid)
    good = await api.join(sid)
    watcher = await api.join(sid, "subscriber")

    async def expect_error(code: str) -> None:
        ev = await bad.event("error")
        assert ev["code"] == code, ev
        assert "Traceback" not in ev["message"]

    for raw, code in [
        ("{not json", "bad_json"),
        ("[1, 2, 3]", "bad_request"),
        ("42", "bad_request"),
        ('{"no": "type"}', "bad_request"),
        ('{"type": 7}', "bad_request"),
        ('{"type": "launch_rockets"}', "unknown_type"),
        ('{"type": "ping", "id": {"nested": true}}', "bad_request"),
        ('{"type": "unpublish", "stream_id": ["x"]}', "bad_request"),
        ('{"type": "subscribe", "stream_id": null}', "bad_request"),
        ('{"type": "answer", "subscription_id": "x", "sdp": 1}', "bad_request"),
        ('{"type": "force_disconnect", "connection_id": "x"}', "forbidden"),
        ("[" * 100_000 + "]" * 100_000, "bad_json"),
        (
            json.dumps({"type": "signal", "kind": "x", "data": "a" * 300_000}),
            "message_too_large",
        ),
    ]:
        await bad.send_raw(raw)
        await expect_error(code)
    await bad.ws.send_bytes(b"\x00\x01")
    await expect_error("bad_request")
    reply = await bad.request({"type": "launch_rockets"})
    assert (reply["type"], reply["code"], reply["id"]) == ("error", "unknown_type", 1)

    # Everyone, the offender included, is still served.
    assert (await bad.request({"type": "ping"}))["type"] == "pong"
    await good.request({"type": "signal", "kind": "k", "data": "still here"})
    assert (await watcher.event("signal"))["data"] == "still here"

    # Over the hard limit (1 MiB): that connection is closed (1009), nobody else.
    await bad.send_raw("x" * (1024 * 1024 + 10))
    # 1009 (message too big); 1006 when the server's close races the rest of the
    # upload and the client sees the reset first.
    assert await bad.wait_closed() in (1009, 1006)
    gone = await watcher.event("connection_destroyed")
    assert gone["connection"]["id"] == bad.id
    await good.request({"type": "signal", "kind": "k", "data": "after"})
    assert (await watcher.event("signal"))["data"] == "after"
    await good.close()
    await watcher.close()


# -- WebSocket: streams and moderation (fake media router) --------------------------------


@pytest.mark.asyncio
async def test_streams_subscriptions_and_moderation(fake_api: Api) -> None:
    sid = (await fake_api.create_session(e2ee=True, kdf_iterations=1000))["id"]
    pub = await fake_api.join(sid, "publisher", data="pub")
    sub = await fake_api.join(sid, "subscriber")
    mod = await fake_api.join(sid, "moderator")

    # Publish: the answer to the publisher, stream_created to everyone.
    reply = await pub.request(
        {"type": "publish", "sdp": fake_offer(), "sdp_type": "offer", "name": "cam"}
    )
    assert reply["type"] == "answer", reply
    stream_id = reply["stream_id"]
    assert reply["sdp"].startswith("fake-answer")
    for peer in (pub, sub, mod):
        ev = await peer.event("stream_created")
        assert ev["stream"] == {
            **ev["stream"],
            "id": stream_id,
            "connection_id": pub.id,
            "name": "cam",
            "has_audio": True,
            "has_video": True,
        }

    # Only VP8 / Opus in an E2EE session.
    reply = await pub.request(
        {"type": "publish", "sdp": fake_offer(video="H264/90000", audio=None)}
    )
    assert (reply["type"], reply["code"]) == ("error", "codec_not_allowed")

    # Subscribe, answer, counts.
    offer = await sub.request({"type": "subscribe", "stream_id": stream_id})
    assert offer["type"] == "offer"
    assert offer["stream_id"] == stream_id
    sub_id = offer["subscription_id"]
    count = await pub.event("subscriber_count")
    assert count == {"type": "subscriber_count", "stream_id": stream_id, "count": 1}
    ok = await sub.request({"type": "answer", "subscription_id": sub_id, "sdp": "v=0\r\n"})
    assert ok["type"] == "ok", ok
    reply = await mod.request({"type": "answer", "subscription_id": sub_id, "sdp": "v=0"})
    assert reply["code"] == "unknown_subscription"  # not the moderator's
    reply = await sub.request({"type": "subscribe", "stream_id": "nope"})
    assert reply["code"] == "unknown_stream"

    status, got = await fake_api.call("GET", f"/v1/sessions/{sid}")
    assert [s["subscriber_count"] for s in got["streams"]] == [1]
    assert got["router"]["frames_decoded"] == 0
    assert got["router"]["publish"] == 2
    assert len(got["connections"]) == 3

    assert (await sub.request({"type": "unsubscribe", "subscription_id": sub_id}))["type"] == "ok"
    assert (await pub.event("subscriber_count"))["count"] == 0

    # A publisher may not force anything; a moderator may.
    for msg in (
        {"type": "force_unpublish", "stream_id": stream_id},
        {"type": "force_disconnect", "connection_id": sub.id},
    ):
        reply = await pub.request(msg)
        assert (reply["type"], reply["code"]) == ("error", "forbidden")
    reply = await sub.request({"type": "unpublish", "stream_id": stream_id})
    assert reply["code"] == "forbidden"  # not its stream

    assert (await mod.request({"type": "force_unpublish", "stream_id": stream_id}))["type"] == "ok"
    ev = await pub.event("stream_destroyed")
    assert (ev["stream"]["id"], ev["reason"]) == (stream_id, "force_unpublished")

    # Force-unpublish through REST.
    stream2 = (await pub.request({"type": "publish", "sdp": fake_offer(audio=None)}))["stream_id"]
    assert (await sub.event("stream_created"))["stream"]["has_audio"] is False
    status, _ = await fake_api.call("DELETE", f"/v1/sessions/{sid}/streams/{stream2}")
    assert status == 204
    ev = await sub.event("stream_destroyed")
    assert (ev["stream"]["id"], ev["reason"]) == (stream2, "force_unpublished")
    status, err = await fake_api.call("DELETE", f"/v1/sessions/{sid}/streams/{stream2}")
    assert (status, err["code"]) == (404, "unknown_stream")

    # Own unpublish.
    stream3 = (await pub.request({"type": "publish", "sdp": fake_offer()}))["stream_id"]
    assert (await pub.request({"type": "unpublish", "stream_id": stream3}))["type"] == "ok"
    assert (await sub.event("stream_destroyed"))["reason"] == "unpublished"

    # Force-disconnect by the moderator: its streams go first, then the connection.
    stream4 = (await pub.request({"type": "publish", "sdp": fake_offer()}))["stream_id"]
    await sub.event("stream_created")
    reply = await mod.request({"type": "force_disconnect", "connection_id": pub.id})
    assert reply["type"] == "ok"
    assert (await pub.event("disconnected"))["reason"] == "force_disconnected"
    assert await pub.wait_closed() == 4001
    ev = await sub.event("stream_destroyed")
    assert (ev["stream"]["id"], ev["reason"]) == (stream4, "disconnected")
    ev = await sub.event("connection_destroyed")
    assert (ev["connection"]["id"], ev["reason"]) == (pub.id, "force_disconnected")

    # Force-disconnect through REST.
    status, _ = await fake_api.call("DELETE", f"/v1/sessions/{sid}/connections/{sub.id}")
    assert status == 204
    assert await sub.wait_closed() == 4001
    status, err = await fake_api.call("DELETE", f"/v1/sessions/{sid}/connections/{sub.id}")
    assert (status, err["code"]) == (404, "unknown_connection")
    status, got = await fake_api.call("GET", f"/v1/sessions/{sid}")
    assert [c["id"] for c in got["connections"]] == [mod.id]
    assert got["streams"] == []
    await mod.close()


# -- durability and secrecy ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_restart_keeps_sessions_and_tokens(tmp_path: Path) -> None:
    # Its own server process (not the module's fixture): stopping and restarting it is the
    # test.  Start and stop block, so they run in a thread; one client session per run.
    proc = ServerProcess(tmp_path / "data")
    await asyncio.to_thread(proc.start)
    try:
        state: dict[str, Any] = {}

        async with aiohttp.ClientSession() as http:
            api = Api(proc, http)
            state["sid"] = (await api.create_session(e2ee=True, kdf_iterations=1000))["id"]
            state["token"] = await api.token(state["sid"], "moderator", data="kept")
            state["key"] = api.creds.api_key

            # A client still connected when the server stops is told so (1001).
            state["peer"] = await api.join(state["sid"])
            stopping = asyncio.create_task(asyncio.to_thread(proc.stop))
            assert (await state["peer"].event("disconnected"))["reason"] == "server_shutdown"
            assert await state["peer"].wait_closed() == 1001
            assert await stopping == 0
            await api.close()

        await asyncio.to_thread(proc.start)

        async with aiohttp.ClientSession() as http:
            api = Api(proc, http)
            assert api.creds.api_key == state["key"]
            status, got = await api.call("GET", f"/v1/sessions/{state['sid']}")
            assert status == 200
            assert got["kdf_iterations"] == 1000
            peer = await Peer.connect(api, state["sid"], state["token"])
            assert peer.hello["connection"] == {
                **peer.hello["connection"],
                "role": "moderator",
                "data": "kept",
            }
            await peer.close()
    finally:
        await asyncio.to_thread(proc.stop)
    banner = "".join(proc.stdout_lines)
    assert state["key"] in banner
    assert "e2ee.sqlite3" in banner
    creds = proc.credentials()
    logs = proc.stderr_path.read_text()
    assert creds.api_secret not in banner + logs
    assert state["token"] not in logs  # the access log leaves out the query string
    assert "/ws" in logs


@pytest.mark.asyncio
async def test_secret_never_reaches_clients(server: ServerProcess, api: Api) -> None:
    session = await api.create_session()
    status, minted = await api.call(
        "POST", f"/v1/sessions/{session['id']}/tokens", {"role": "moderator"}
    )
    assert status == 201
    peer = await Peer.connect(api, session["id"], minted["token"])
    _status, got = await api.call("GET", f"/v1/sessions/{session['id']}")
    seen = json.dumps([session, minted, got, peer.hello])
    assert api.creds.api_secret not in seen
    await peer.close()
    assert server.credentials().api_secret not in "".join(server.stdout_lines)
    assert server.credentials().api_secret not in server.stderr_path.read_text()


# -- real media (needs e2ee.sfu.router) -----------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("e2ee.sfu.router") is None, reason="e2ee.sfu.router is not there yet"
)
@pytest.mark.asyncio
async def test_real_media_through_router(api: Api, cleanup: list[Any]) -> None:
    # Teardown: ``cleanup`` closes the peer connections, then ``api`` the signaling clients.
    sid = (await api.create_session(e2ee=True, kdf_iterations=1000))["id"]
    pub = await api.join(sid, "publisher")
    sub = await api.join(sid, "subscriber")
    pc_pub, pc_sub = new_pc(), new_pc()
    cleanup.extend([pc_pub, pc_sub])
    pc_pub.addTransceiver(SyntheticVideoTrack(), direction="sendonly")
    await pc_pub.setLocalDescription(await pc_pub.createOffer())
    reply = await pub.request(
        {"type": "publish", "sdp": pc_pub.localDescription.sdp, "sdp_type": "offer"},
        timeout=20,
    )
    assert reply["type"] == "answer", reply
    await pc_pub.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
    stream_id = reply["stream_id"]
    ev = await sub.event("stream_created")
    assert ev["stream"]["has_video"] is True

    offer = await sub.request({"type": "subscribe", "stream_id": stream_id}, timeout=20)
    assert offer["type"] == "offer", offer
    await pc_sub.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    await pc_sub.setLocalDescription(await pc_sub.createAnswer())
    ok = await sub.request(
        {
            "type": "answer",
            "subscription_id": offer["subscription_id"],
            "sdp": pc_sub.localDescription.sdp,
        },
        timeout=20,
    )
    assert ok["type"] == "ok", ok

    for _ in range(200):
        _, got = await api.call("GET", f"/v1/sessions/{sid}")
        if got["router"] and got["router"].get("frames_forwarded", 0) > 0:
            break
        await asyncio.sleep(0.1)
    assert got["router"]["frames_forwarded"] > 0, got["router"]
    assert got["router"]["frames_decoded"] == 0
