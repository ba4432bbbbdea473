"""End to end: a real server process with its router, real clients (e2ee.client.session) with
real aiortc peers, libvpx and libopus, and the E2EE transform; everything on loopback.

Covers the media items of the router/server issue: participants decode each other
through the router, the router decodes nothing, a late joiner starts on a key frame, a
wrong secret is a mismatch with no frames, bad input from one client leaves the others'
media flowing, and the `e2ee demo` command reports measured counts.  The ``server`` and
``api`` fixtures come from tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from e2ee.client.session import Session, SessionError, Subscriber
from e2ee.errors import EncryptionSecretMissing, InvalidEncryptionSecret
from e2ee.server.tokens import mint_token
from e2ee.tools.synthetic import FrameCollector, SyntheticAudioTrack, SyntheticVideoTrack
from e2ee.wire.params import SessionPolicy
from support.server import Api, ServerProcess

SECRET = "a shared secret for the test"
#: The sessions here have 1000 PBKDF2 iterations (quick joins), below the client's default
#: floor of 100,000: the tests lower it explicitly, as an application would have to.
TEST_POLICY = SessionPolicy(min_iterations=1000)


async def new_session(api: Api, **options: Any) -> str:
    status, body = await api.call(
        "POST", "/v1/sessions", {"e2ee": True, "kdf_iterations": 1000, **options}
    )
    assert status == 201, body
    return str(body["id"])


def client(
    server: ServerProcess, sid: str, secret: str | None = SECRET, role: str = "publisher"
) -> Session:
    creds = server.credentials()
    token = mint_token(creds.api_key, creds.api_secret, sid, role=role)  # type: ignore[arg-type]
    return Session(server.url, sid, token, encryption_secret=secret, policy=TEST_POLICY)


def watch(sub: Subscriber) -> dict[str, FrameCollector]:
    out = {}
    for kind in ("audio", "video"):
        track = getattr(sub, kind)
        assert track is not None, f"no {kind} track"
        out[kind] = FrameCollector(track).start()
    return out


async def tracks_of(sub: Subscriber, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sub.audio is None or sub.video is None:
        assert time.monotonic() < deadline, "the subscription's tracks never arrived"
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_three_participants_decode_each_other_and_the_router_decodes_nothing(
    server: ServerProcess, api: Api
) -> None:
    sid = await new_session(api)
    people = [client(server, sid) for _ in range(3)]
    try:
        for p in people:
            await p.connect()
        streams = [
            (await p.publish(video=SyntheticVideoTrack(), audio=SyntheticAudioTrack())).stream_id
            for p in people
        ]
        watched = []
        for i, p in enumerate(people):
            for j, stream in enumerate(streams):
                if i != j:
                    sub = await p.subscribe(stream)
                    await tracks_of(sub)
                    watched.append(watch(sub))
        for w in watched:
            assert await w["video"].wait_for(15, timeout=15), "too few good video frames"
            assert await w["audio"].wait_for(10, timeout=15), "too few good audio frames"
            assert {(f.width, f.height) for f in w["video"].frames if f.good} == {(320, 240)}
        status, info = await api.call("GET", f"/v1/sessions/{sid}")
        assert status == 200
        assert info["router"]["frames_decoded"] == 0
        assert info["router"]["frames_forwarded"] > 6 * 25
        assert sorted(s["subscriber_count"] for s in info["streams"]) == [2, 2, 2]
    finally:
        for p in people:
            await p.disconnect()


@pytest.mark.asyncio
async def test_a_late_joiner_sees_video_within_a_second(server: ServerProcess, api: Api) -> None:
    sid = await new_session(api)
    alice, bob = client(server, sid), client(server, sid)
    try:
        await alice.connect()
        pub = await alice.publish(video=SyntheticVideoTrack(), audio=SyntheticAudioTrack())
        await asyncio.sleep(3.0)  # long after the first key frame
        await bob.connect()
        started = time.monotonic()
        sub = await bob.subscribe(pub.stream_id)
        await tracks_of(sub)
        video = watch(sub)["video"]
        assert await video.wait_for(1, timeout=5)
        first = next(f for f in video.frames if f.good)
        assert first.at - started < 1.0, f"first picture after {first.at - started:.2f} s"
        assert video.frames[0].good, "the first decoded frame must be a real picture"
    finally:
        await alice.disconnect()
        await bob.disconnect()


@pytest.mark.asyncio
async def test_a_wrong_secret_is_a_mismatch_with_no_frames(server: ServerProcess, api: Api) -> None:
    sid = await new_session(api)
    alice, mallory = client(server, sid), client(server, sid, secret="not the same secret")
    try:
        await alice.connect()
        await mallory.connect()
        pub = await alice.publish(video=SyntheticVideoTrack(), audio=SyntheticAudioTrack())
        events: list[dict[str, Any]] = []
        mallory.on("encryption_secret_mismatch", events.append)
        sub = await mallory.subscribe(pub.stream_id)
        await tracks_of(sub)
        collectors = watch(sub)
        await asyncio.sleep(3.0)
        assert [e["event"].kind for e in events if e["stream_id"] == pub.stream_id] in (
            ["video", "audio"],
            ["audio", "video"],
        ), "one mismatch per track"
        assert collectors["video"].count() == 0
        assert collectors["audio"].count(good=True) == 0
        await mallory.set_encryption_secret(SECRET)
        assert await collectors["video"].wait_for(5, timeout=5), "no picture after the fix"
        assert any(e.type == "encryption_secret_match" for e in sub.events)
    finally:
        await alice.disconnect()
        await mallory.disconnect()


#: Signaling events a client receives unasked (server/signaling.py), as opposed to replies.
EVENTS = frozenset(
    {
        "connection_created",
        "connection_destroyed",
        "stream_created",
        "stream_destroyed",
        "subscriber_count",
        "signal",
    }
)


@pytest.mark.asyncio
async def test_bad_input_leaves_the_others_media_flowing(server: ServerProcess, api: Api) -> None:
    sid = await new_session(api)
    alice, bob = client(server, sid), client(server, sid)
    try:
        await alice.connect()
        await bob.connect()
        pub = await alice.publish(video=SyntheticVideoTrack(), audio=SyntheticAudioTrack())
        sub = await bob.subscribe(pub.stream_id)
        await tracks_of(sub)
        video = watch(sub)["video"]
        assert await video.wait_for(5, timeout=10)
        creds = server.credentials()
        token = mint_token(creds.api_key, creds.api_secret, sid, role="publisher")
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{server.url}/v1/sessions/{sid}/ws", params={"token": token}) as ws,
        ):
            assert (await ws.receive_json())["type"] == "session"
            before = video.count(good=True)
            for junk in (
                "{not json",
                "[]",
                '{"type": "no_such_thing"}',
                '{"type": 5}',
                json.dumps({"type": "publish", "sdp": 42}),
                "x" * 300_000,
            ):
                await ws.send_str(junk)
                reply = await ws.receive_json(timeout=5)
                while reply["type"] in EVENTS:  # events may come between (coalesced counts)
                    reply = await ws.receive_json(timeout=5)
                assert reply["type"] == "error", reply
            await asyncio.sleep(1.0)
            assert video.count(good=True) > before + 10, "bob's video stalled"
        # The REST API answers bad input with errors too, and keeps serving.
        status, body = await api.call("POST", "/v1/sessions", raw=b"{oops")
        assert status == 400
        assert "code" in body
    finally:
        await alice.disconnect()
        await bob.disconnect()


@pytest.mark.asyncio
async def test_an_e2ee_session_needs_a_secret(server: ServerProcess, api: Api) -> None:
    sid = await new_session(api)
    with pytest.raises(EncryptionSecretMissing):
        await client(server, sid, secret=None).connect()
    bad = client(server, sid, secret="short")
    with pytest.raises(InvalidEncryptionSecret):
        await bad.connect()
    with pytest.raises(InvalidEncryptionSecret):
        await client(server, sid).set_encryption_secret("x" * 257)
    viewer = client(server, sid, role="subscriber")
    await viewer.connect()
    try:
        with pytest.raises(SessionError) as info:
            await viewer.publish(video=SyntheticVideoTrack())
        assert info.value.code == "forbidden"
    finally:
        await viewer.disconnect()


def test_demo_reports_measured_counts(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "e2ee", "demo", "--participants", "2", "--seconds", "6", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    )
    report = json.loads(out.stdout)
    assert report["session"]["e2ee"] is True
    assert report["session"]["suite"] == 6
    assert report["session"]["kdf_iterations"] == 600_000  # the default policy, unlowered
    pairs = {(p["publisher"], p["subscriber"]): p for p in report["pairs"]}
    assert set(pairs) == {("p1", "p2"), ("p2", "p1")}
    # p1 changed its secret alone: p2 saw one mismatch, then one match when it accepted it.
    assert pairs[("p1", "p2")]["mismatch_events"] == 1
    assert pairs[("p1", "p2")]["match_events"] == 1
    assert pairs[("p2", "p1")]["mismatch_events"] == 0  # p1 kept the old secret in grace
    # The planned change (everyone accepts, then everyone sets): no receiver saw a
    # mismatch, on audio or video.
    for p in pairs.values():
        assert p["planned_change_mismatch_events"] == 0, p
    assert report["planned_change"]["mismatch_events"] == 0
    for p in pairs.values():
        assert p["video_frames_decoded"] > 30
        assert p["audio_frames_decoded"] > 30
    assert report["router"]["frames_decoded"] == 0
    assert report["router"]["frames_forwarded"] > 0
    assert report["eavesdropper"]["frames_received"] > 0
    assert report["eavesdropper"]["frames_decodable"] == 0


@pytest.mark.asyncio
async def test_a_planned_change_shows_no_receiver_a_mismatch(
    server: ServerProcess, api: Api
) -> None:
    sid = await new_session(api)
    alice, bob = client(server, sid), client(server, sid)
    new_secret = "the next shared secret"
    try:
        await alice.connect()
        await bob.connect()
        a_pub = await alice.publish(video=SyntheticVideoTrack(), audio=SyntheticAudioTrack())
        b_pub = await bob.publish(video=SyntheticVideoTrack(), audio=SyntheticAudioTrack())
        subs = [await bob.subscribe(a_pub.stream_id), await alice.subscribe(b_pub.stream_id)]
        videos = []
        for sub in subs:
            await tracks_of(sub)
            videos.append(watch(sub)["video"])
        for video in videos:
            assert await video.wait_for(5, timeout=10)
        # Step 2: everyone accepts (receive only); step 3, once all have: everyone sets.
        await asyncio.gather(*(p.accept_encryption_secret(new_secret) for p in (alice, bob)))
        await alice.set_encryption_secret(new_secret)
        await asyncio.sleep(1.5)  # alice sends under the new secret, bob still the old
        await bob.set_encryption_secret(new_secret)
        before = [v.count(good=True) for v in videos]
        await asyncio.sleep(1.5)
        for sub, video, n in zip(subs, videos, before, strict=True):
            assert not [e for e in sub.events if e.type == "encryption_secret_mismatch"]
            assert video.count(good=True) > n + 10, "the picture stalled"
        assert alice.ring is not None
        assert bob.ring is not None
        assert alice.ring.secret_id == bob.ring.secret_id
    finally:
        await alice.disconnect()
        await bob.disconnect()
