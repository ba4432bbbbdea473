"""The client is the trust anchor: a hostile server cannot talk it out of E2EE.

A fake signaling server (:class:`HostileServer`, an aiohttp app on 127.0.0.1:0 in this
process) sends a crafted hello and answers ``publish`` and ``subscribe`` with SDP from an
aiortc peer of its own, optionally tampered with.  Against it, the client
(e2ee.client.session) given a secret:

* refuses a hello without E2EE, with a weak suite or iteration count, or garbled, with a
  clear error, closes the WebSocket, sends the server nothing and never creates a peer
  connection (so no RTP can leave it);
* strips the media-derived audio-level extension from every description it applies and
  sends, whatever the server puts in them.

And against the real server (fixtures ``server``/``api``): the default policy refuses a
1000-iteration session, an explicitly lowered one joins it and exchanges media.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import WSMsgType, web
from aiortc import RTCPeerConnection, RTCSessionDescription

import e2ee.client.session as session_module
from e2ee.client.session import E2eeRequired, Session, SessionError
from e2ee.errors import WeakSessionParameters
from e2ee.rtc import compat
from e2ee.server.tokens import mint_token
from e2ee.tools.synthetic import FrameCollector, SyntheticAudioTrack, SyntheticVideoTrack
from e2ee.wire.extmap import MEDIA_DERIVED_EXTENSIONS
from e2ee.wire.params import SessionPolicy
from support.server import Api, ServerProcess

SID = "hostile-session"
SECRET = "a shared secret for the test"
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
GOOD_HELLO: dict[str, Any] = {
    "e2ee": True,
    "media_mode": "routed",
    "suite": 6,
    "kdf_iterations": 100_000,
    "max_participants": None,
}


def has_audio_level(sdp: str) -> bool:
    return any(
        line.startswith("a=extmap:") and line.split()[1].lower() in MEDIA_DERIVED_EXTENSIONS
        for line in sdp.splitlines()
        if len(line.split()) >= 2
    )


def add_audio_level(sdp: str) -> str:
    """``sdp`` with the client-to-mixer audio level (RFC 6464) in its audio section."""
    out, in_audio = [], False
    for line in sdp.splitlines(keepends=True):
        if line.startswith("m="):
            in_audio = line.startswith("m=audio")
        out.append(line)
        if in_audio and line.startswith("a=mid:"):
            out.append(f"a=extmap:2 {AUDIO_LEVEL}\r\n")
    return "".join(out)


class HostileServer:
    """Speaks enough of the signaling protocol to lure a client: ``hello`` is the
    ``session`` object of its first message; ``tamper(sdp)`` rewrites every SDP it sends.
    ``messages`` holds everything the client sent; ``closed`` is set when a client's
    WebSocket ends."""

    def __init__(self, hello: dict[str, Any], tamper: Callable[[str], str] = str) -> None:
        self.hello = {"id": SID, **hello}
        self.tamper = tamper
        self.messages: list[dict[str, Any]] = []
        self.sent_sdp: list[str] = []
        self.closed = asyncio.Event()
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> HostileServer:
        app = web.Application()
        app.router.add_get("/v1/sessions/{sid}/ws", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        for pc in self.pcs.values():
            await pc.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def types(self) -> list[str]:
        return [str(m.get("type")) for m in self.messages]

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json(
            {
                "type": "session",
                "session": self.hello,
                "connection": {"id": "c1", "role": "publisher", "data": ""},
                "connections": [{"id": "c1", "role": "publisher", "data": ""}],
                "streams": [{"id": "s-theirs", "connection_id": "c0", "name": ""}],
            }
        )
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                self.messages.append(data)
                reply = await self._reply(data)
                await ws.send_json({**reply, "id": data.get("id")})
                if data.get("type") == "disconnect":
                    await ws.close()
        finally:
            self.closed.set()
        return ws

    async def _reply(self, data: dict[str, Any]) -> dict[str, Any]:
        kind = data.get("type")
        if kind == "publish":
            pc = self.pcs["publish"] = RTCPeerConnection()
            await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            sdp = self.tamper(pc.localDescription.sdp)
            self.sent_sdp.append(sdp)
            return {"type": "answer", "stream_id": "s-mine", "sdp": sdp, "sdp_type": "answer"}
        if kind == "subscribe":
            pc = self.pcs["subscribe"] = RTCPeerConnection()
            pc.addTransceiver("audio", direction="sendonly")
            pc.addTransceiver("video", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            sdp = self.tamper(pc.localDescription.sdp)
            self.sent_sdp.append(sdp)
            return {
                "type": "offer",
                "subscription_id": "sub-1",
                "stream_id": data.get("stream_id"),
                "sdp": sdp,
            }
        if kind == "answer":
            pc = self.pcs["subscribe"]
            await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
        return {"type": "ok"}


@pytest.fixture
def created_pcs(monkeypatch: pytest.MonkeyPatch) -> list[RTCPeerConnection]:
    """Every RTCPeerConnection the client creates (none: no RTP can have left it)."""
    created: list[RTCPeerConnection] = []

    class Recorded(RTCPeerConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            created.append(self)

    monkeypatch.setattr(session_module, "RTCPeerConnection", Recorded)
    return created


@pytest_asyncio.fixture
async def hostile() -> AsyncIterator[Callable[..., Any]]:
    started: list[HostileServer] = []

    async def start(hello: dict[str, Any], tamper: Callable[[str], str] = str) -> HostileServer:
        server = await HostileServer(hello, tamper).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


async def assert_nothing_left(
    server: HostileServer, client: Session, created: list[RTCPeerConnection]
) -> None:
    """The client closed the connection, sent no message, and cannot publish."""
    await asyncio.wait_for(server.closed.wait(), 5)
    with pytest.raises(SessionError) as info:
        await client.publish(video=SyntheticVideoTrack(), audio=SyntheticAudioTrack())
    assert info.value.code == "not_connected"
    with pytest.raises(SessionError):
        await client.subscribe("s-theirs")
    assert server.messages == [], server.messages
    assert "publish" not in server.types()
    assert created == [], "the client created a peer connection"
    assert client.ring is None, "a key was derived"
    assert client.publishers == {}
    assert client.subscribers == {}


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hello",
    [
        pytest.param(
            {**GOOD_HELLO, "e2ee": False, "suite": None, "kdf_iterations": None}, id="e2ee-false"
        ),
        pytest.param({**GOOD_HELLO, "e2ee": False}, id="e2ee-false-with-params"),
        pytest.param({k: v for k, v in GOOD_HELLO.items() if k != "e2ee"}, id="e2ee-absent"),
        pytest.param({**GOOD_HELLO, "e2ee": "yes"}, id="e2ee-garbled"),
        pytest.param({**GOOD_HELLO, "media_mode": "relayed"}, id="relayed"),
        pytest.param({**GOOD_HELLO, "suite": None}, id="suite-missing"),
        pytest.param({**GOOD_HELLO, "kdf_iterations": "100000"}, id="iterations-garbled"),
    ],
)  # fmt: skip
@pytest.mark.asyncio
async def test_a_hello_without_e2ee_is_refused_when_the_app_gave_a_secret(
    hostile: Callable[..., Any], created_pcs: list[RTCPeerConnection], hello: dict[str, Any]
) -> None:
    server = await hostile(hello)
    client = Session(server.url, SID, "token", encryption_secret=SECRET)
    with pytest.raises(E2eeRequired) as info:
        await client.connect()
    assert info.value.code == "e2ee_required"
    assert "refuses" in str(info.value)
    if hello.get("e2ee") is False:
        assert "offered an unencrypted session" in str(info.value)
    assert not client.e2ee
    await assert_nothing_left(server, client, created_pcs)


@pytest.mark.parametrize(
    ("suite", "iterations", "policy", "why"),
    [
        pytest.param(6, 1, None, "1 PBKDF2 iterations", id="1-iteration"),
        pytest.param(6, 99_999, None, "99999 PBKDF2 iterations", id="below-floor"),
        pytest.param(6, 20_000_000, None, "20000000 PBKDF2", id="above-ceiling"),
        pytest.param(3, 600_000, None, "suite 3 (AES_128_CTR_HMAC_SHA256_32)", id="suite-3"),
        pytest.param(8, 600_000, None, "suite 8 (AES_256_CTR_HMAC_SHA512_32)", id="suite-8"),
        pytest.param(
            6, 1000, SessionPolicy(min_iterations=2000), "allows 2000", id="lowered-floor"
        ),
        pytest.param(6, 600_000, SessionPolicy(pin_suite=5), "requires 5", id="pinned-suite"),
        pytest.param(
            6, 600_000, SessionPolicy(pin_iterations=700_000), "requires 700000",
            id="pinned-iterations",
        ),
    ],
)  # fmt: skip
@pytest.mark.asyncio
async def test_weak_session_parameters_are_refused(
    hostile: Callable[..., Any],
    created_pcs: list[RTCPeerConnection],
    suite: int,
    iterations: int,
    policy: SessionPolicy | None,
    why: str,
) -> None:
    server = await hostile({**GOOD_HELLO, "suite": suite, "kdf_iterations": iterations})
    client = Session(server.url, SID, "token", encryption_secret=SECRET, policy=policy)
    with pytest.raises(WeakSessionParameters) as info:
        await client.connect()
    assert why in str(info.value)
    assert (info.value.suite, info.value.kdf_iterations) == (suite, iterations)
    assert SECRET not in str(info.value)
    await assert_nothing_left(server, client, created_pcs)


@pytest.mark.asyncio
async def test_a_secret_given_after_joining_a_plain_session_stops_media(
    hostile: Callable[..., Any], created_pcs: list[RTCPeerConnection]
) -> None:
    # Without a secret the client joins a session without E2EE (as before) ...
    server = await hostile({**GOOD_HELLO, "e2ee": False, "suite": None, "kdf_iterations": None})
    client = Session(server.url, SID, "token")
    await client.connect()
    try:
        assert not client.e2ee
        # ... but once the application gives one, nothing is sent unencrypted.
        await client.set_encryption_secret(SECRET)
        with pytest.raises(E2eeRequired):
            await client.publish(video=SyntheticVideoTrack(), audio=SyntheticAudioTrack())
        with pytest.raises(E2eeRequired):
            await client.subscribe("s-theirs")
        assert "publish" not in server.types()
        assert "subscribe" not in server.types()
        assert created_pcs == []
    finally:
        await client.disconnect()


# -- media-derived header extensions ---------------------------------------------------


@pytest.mark.asyncio
async def test_an_answer_with_the_audio_level_is_applied_without_it(
    hostile: Callable[..., Any], created_pcs: list[RTCPeerConnection]
) -> None:
    server = await hostile(GOOD_HELLO, tamper=add_audio_level)
    client = Session(server.url, SID, "token", encryption_secret=SECRET)
    await client.accept_encryption_secret("the next shared secret")  # applied at connect
    await client.connect()
    try:
        assert client.e2ee
        assert client.ring is not None
        assert len(client.ring.accepted_ids) == 1
        pub = await client.publish(video=SyntheticVideoTrack(), audio=SyntheticAudioTrack())
        assert has_audio_level(server.sent_sdp[0]), "the hostile answer carries the audio level"
        offer = server.messages[0]
        assert offer["type"] == "publish"
        assert not has_audio_level(offer["sdp"]), "the client offered the audio level"
        assert pub.transform is not None, "the connection is not protected"
        applied = pub.pc.remoteDescription.sdp
        assert not has_audio_level(applied), "the client applied the audio level"
        assert re.search(r"^a=extmap:\d+ urn:ietf:params:rtp-hdrext:sdes:mid", applied, re.M)
        for transceiver in pub.pc.getTransceivers():
            uris = {e.uri.lower() for e in compat.negotiated_header_extensions(transceiver)}
            assert not uris & MEDIA_DERIVED_EXTENSIONS, (transceiver.kind, uris)
        assert created_pcs == [pub.pc]
    finally:
        await client.disconnect()


@pytest.mark.asyncio
async def test_a_subscribe_offer_with_the_audio_level_is_applied_without_it(
    hostile: Callable[..., Any],
) -> None:
    # aiortc's own offers list the audio level: the hostile server's offer has it untouched.
    server = await hostile(GOOD_HELLO)
    client = Session(server.url, SID, "token", encryption_secret=SECRET)
    await client.connect()
    try:
        sub = await client.subscribe("s-theirs")
        assert has_audio_level(server.sent_sdp[0])
        assert sub.transform is not None, "the connection is not protected"
        assert not has_audio_level(sub.pc.remoteDescription.sdp)
        answer = next(m for m in server.messages if m["type"] == "answer")
        assert not has_audio_level(answer["sdp"])
        for transceiver in sub.pc.getTransceivers():
            uris = {e.uri.lower() for e in compat.negotiated_header_extensions(transceiver)}
            assert not uris & MEDIA_DERIVED_EXTENSIONS, (transceiver.kind, uris)
    finally:
        await client.disconnect()


# -- the real server ---------------------------------------------------------------------


def real_client(
    server: ServerProcess, sid: str, policy: SessionPolicy | None, secret: str | None = SECRET
) -> Session:
    creds = server.credentials()
    token = mint_token(creds.api_key, creds.api_secret, sid, role="publisher")
    return Session(server.url, sid, token, encryption_secret=secret, policy=policy)


@pytest.mark.asyncio
async def test_the_default_policy_refuses_a_real_1000_iteration_session(
    server: ServerProcess, api: Api
) -> None:
    sid = (await api.create_session(e2ee=True, kdf_iterations=1000))["id"]
    client = real_client(server, sid, None)
    with pytest.raises(WeakSessionParameters, match="1000 PBKDF2 iterations"):
        await client.connect()
    plain = (await api.create_session(e2ee=False))["id"]
    with pytest.raises(E2eeRequired):
        await real_client(server, plain, None).connect()
    for session_id in (sid, plain):
        status, info = await api.call("GET", f"/v1/sessions/{session_id}")
        assert status == 200
        assert info["streams"] == []


@pytest.mark.asyncio
async def test_a_lowered_floor_joins_a_real_1000_iteration_session_and_exchanges_media(
    server: ServerProcess, api: Api
) -> None:
    sid = (await api.create_session(e2ee=True, kdf_iterations=1000))["id"]
    policy = SessionPolicy(min_iterations=1000)  # explicit: a test session, quick joins
    alice, bob = real_client(server, sid, policy), real_client(server, sid, policy)
    collectors: list[FrameCollector] = []
    try:
        await alice.connect()
        await bob.connect()
        assert alice.e2ee
        assert bob.e2ee
        assert alice.ring is not None
        assert alice.ring.kdf_iterations == 1000
        pub = await alice.publish(video=SyntheticVideoTrack(), audio=SyntheticAudioTrack())
        sub = await bob.subscribe(pub.stream_id)
        for _ in range(500):
            if sub.audio is not None and sub.video is not None:
                break
            await asyncio.sleep(0.02)
        assert sub.audio is not None
        assert sub.video is not None
        video, audio = FrameCollector(sub.video).start(), FrameCollector(sub.audio).start()
        collectors += [video, audio]
        assert await video.wait_for(10, timeout=15), "too few good video frames"
        assert await audio.wait_for(10, timeout=15), "too few good audio frames"
        assert not has_audio_level(pub.pc.remoteDescription.sdp)
        assert not has_audio_level(sub.pc.remoteDescription.sdp)
    finally:
        for c in collectors:
            await c.stop()
        await alice.disconnect()
        await bob.disconnect()
