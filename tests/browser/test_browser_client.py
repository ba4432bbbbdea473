"""The browser client in real Chromium, interoperating with the Python client through a
real ``e2ee serve --dev`` (its router): E2EE media both ways, browser to browser, a
participant with the wrong secret, a planned change of secret, the fallback transform
API, and a three-party call (whose screenshot becomes docs/browser-call.png with
E2EE_UPDATE_SCREENSHOT=1).

Every count is measured on decoded media: Python checks the picture and the tone
(e2ee.tools.synthetic), the browser samples its <video> element into a canvas and
compares the halves of the picture (synthetic.js).  Sessions use 1,000 PBKDF2
iterations, a floor both clients lower explicitly.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser.helpers import (
    OTHER_SECRET,
    SECRET,
    CallPage,
    DevServer,
    PythonPeer,
    join_call,
    open_call,
    stream_by_name,
)
from e2ee.tools.synthetic import SyntheticAudioTrack, SyntheticVideoTrack

pytestmark = pytest.mark.asyncio(loop_scope="session")

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "browser-call.png"
NEW_SECRET = "the next shared secret"

#: A stream of ``name`` that decrypted ``n`` video and audio frames and shows the real
#: picture: for CallPage.wait.
SEES = """(s, [name, n]) => {
  const st = s.streams.find((x) => x.name === name);
  if (!st || st.state !== "ok" || !st.video || !st.audio) return false;
  if (st.video.framesDelivered < n || st.audio.framesDelivered < n) return false;
  const shown = window.e2ee.sample(st.streamId);
  return shown && shown.looksLikeSource ? shown : false;
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    srv = DevServer(tmp_path_factory.mktemp("call")).start()
    yield srv
    srv.stop()


async def sees(call: CallPage, name: str, frames: int = 30, timeout: float = 45.0) -> Any:
    """Waits until ``call`` shows ``name``'s real picture after ``frames`` decrypted
    video and audio frames; the sampled halves."""
    return await call.wait(SEES, timeout, [name, frames])


async def python_sees(collectors: dict[str, Any], frames: int = 30, timeout: float = 45.0) -> None:
    assert await collectors["video"].wait_for(frames, timeout), "no real picture"
    assert await collectors["audio"].wait_for(frames, timeout), "no real tone"


def router_decoded_nothing(server: DevServer, session_id: str) -> None:
    status, info = server.rest("GET", f"/v1/sessions/{session_id}")
    assert status == 200
    assert info["router"]["frames_forwarded"] > 0
    assert info["router"]["frames_decoded"] == 0


@pytest.mark.timeout(120)
async def test_browser_publishes_python_subscribes(browser: Any, server: DevServer) -> None:
    sid = server.session()
    ann = await join_call(browser, server, sid, "ann")
    py = PythonPeer(server, sid, "py")
    try:
        await py.start(publish=False)
        collectors = await py.receive("ann")
        await python_sees(collectors, 60)
        sub = py.subscribers["ann"]
        for stats in sub.stats():
            assert stats["state"] == "ok"
            assert stats["frames_mismatched"] == stats["frames_failed"] == 0
        sent = await ann.page.evaluate("window.e2ee.publisher.stats()")
        assert {s["codec"] for s in sent} == {"vp8", "opus"}
        # One random KID per track, both under the one secret.
        kids = {int(s["kid"], 16) for s in sent}
        assert len(kids) == 2
        assert len({k >> 48 for k in kids}) == 1
        for stats in sent:
            assert stats["framesEncrypted"] > 0
            assert stats["framesDropped"] == 0
            assert stats["kid"] is not None
        router_decoded_nothing(server, sid)
        assert not ann.errors
    finally:
        await py.close()
        await ann.close()


@pytest.mark.timeout(120)
async def test_python_publishes_browser_subscribes(browser: Any, server: DevServer) -> None:
    sid = server.session()
    py = PythonPeer(server, sid, "py")
    bea: CallPage | None = None
    try:
        await py.start()
        bea = await join_call(browser, server, sid, "bea", publish=False)
        shown = await sees(bea, "py", 60)
        assert abs(shown["left"] - 40) < 20
        assert abs(shown["right"] - 210) < 20
        stream = stream_by_name(await bea.state(), "py")
        assert stream is not None
        assert stream["framesDropped"] == 0
        assert stream["video"]["framesMismatched"] == stream["video"]["framesFailed"] == 0
        assert await bea.page.get_attribute(".tile:not(.local)", "data-state") == "ok"
        assert not await bea.page.is_visible(".tile:not(.local) .banner")
        assert not bea.errors
    finally:
        if bea is not None:
            await bea.close()
        await py.close()


@pytest.mark.timeout(150)
async def test_two_browsers_see_each_other(browser: Any, server: DevServer) -> None:
    sid = server.session()
    ann = await join_call(browser, server, sid, "ann")
    ben: CallPage | None = None
    try:
        ben = await join_call(browser, server, sid, "ben")
        await sees(ann, "ben")
        await sees(ben, "ann")
        for call in (ann, ben):
            state = await call.state()
            assert [s["state"] for s in state["streams"]] == ["ok"]
            assert not call.errors
        router_decoded_nothing(server, sid)

        # Camera off and on again: the track is disabled, the preview says so.
        camera = ann.page.locator("#toggle-camera")
        await camera.click()
        assert await camera.get_attribute("aria-pressed") == "false"
        assert (
            await ann.page.evaluate("window.e2ee.publisher.stream.getVideoTracks()[0].enabled")
            is False
        )
        assert "camera-off" in (await ann.page.get_attribute(".tile.local", "class") or "")
        await camera.click()
        assert await camera.get_attribute("aria-pressed") == "true"

        # Ben leaves: his tile goes from Ann's page.
        await ben.page.click("#leave")
        await ann.wait("(s) => s.streams.length === 0", 20)
        assert await ann.page.locator(".tile:not(.local)").count() == 0
        assert any(e["type"] == "streamDestroyed" for e in (await ann.state())["events"])
    finally:
        if ben is not None:
            await ben.close()
        await ann.close()


@pytest.mark.timeout(150)
async def test_wrong_secret_decrypts_nothing_until_it_is_set(
    browser: Any, server: DevServer, tmp_path: Path
) -> None:
    """An eavesdropper with another secret gets no picture and no sound, and sees a
    mismatch banner (not "connecting", not "no media"); with the right secret, it matches."""
    sid = server.session()
    py = PythonPeer(server, sid, "py")
    eve: CallPage | None = None
    try:
        await py.start()
        eve = await join_call(browser, server, sid, "eve", secret=OTHER_SECRET, publish=False)
        await eve.wait('(s) => s.streams.some((x) => x.state === "mismatch")', 30)
        await eve.page.wait_for_timeout(2000)  # frames keep arriving, none decrypts
        state = await eve.state()
        stream = stream_by_name(state, "py")
        assert stream is not None
        assert stream["state"] == "mismatch"
        assert stream["framesDecrypted"] == 0
        assert stream["video"]["framesMismatched"] > 30
        assert stream["audio"]["framesMismatched"] > 30
        # The decoder never got a frame: the element has no picture at all.
        assert await eve.page.evaluate("window.e2ee.sample()") is None
        mismatches = [e for e in state["events"] if e["type"] == "encryptionSecretMismatch"]
        assert {e["kind"] for e in mismatches} == {"audio", "video"}
        assert len(mismatches) == 2  # on entering the state, not per frame
        tile = eve.page.locator(".tile:not(.local)")
        assert await tile.get_attribute("data-state") == "mismatch"
        assert "Secret mismatch" in (await tile.locator(".banner").inner_text())
        await eve.page.screenshot(path=str(tmp_path / "mismatch.png"))

        # The right secret, typed into the page: the stream matches, the picture shows.
        await eve.page.click("#change-secret")
        await eve.page.fill("#secret-dialog input[name=secret]", SECRET)
        await eve.page.click("#secret-dialog button[type=submit]")
        await sees(eve, "py", 30)
        state = await eve.state()
        stream = stream_by_name(state, "py")
        assert stream is not None
        # Video waited for a key frame (asked for at the match), not decoding from a
        # missing reference.
        assert stream["video"]["keyframeRequests"] > 0
        matches = [e for e in state["events"] if e["type"] == "encryptionSecretMatch"]
        assert {e["kind"] for e in matches} == {"audio", "video"}
        assert await tile.get_attribute("data-state") == "ok"
        assert not eve.errors
    finally:
        if eve is not None:
            await eve.close()
        await py.close()


@pytest.mark.timeout(150)
async def test_planned_secret_change_has_no_mismatch(browser: Any, server: DevServer) -> None:
    """Make-before-break between the two clients: everyone accepts the new secret, then
    everyone sets it; nobody ever sees a mismatch, and media keeps flowing both ways."""
    sid = server.session()
    ann = await join_call(browser, server, sid, "ann")
    py = PythonPeer(server, sid, "py")
    try:
        await py.start()
        collectors = await py.receive("ann")
        await sees(ann, "py")
        await python_sees(collectors)

        await ann.page.evaluate(f"window.e2ee.session.acceptEncryptionSecret({NEW_SECRET!r})")
        await py.session.accept_encryption_secret(NEW_SECRET)
        await py.session.set_encryption_secret(NEW_SECRET)
        await ann.page.evaluate(f"window.e2ee.setEncryptionSecret({NEW_SECRET!r})")
        before = stream_by_name(await ann.state(), "py")
        assert before is not None
        seen = collectors["video"].count(good=True)
        await sees(ann, "py", before["video"]["framesDelivered"] + 60)
        assert await collectors["video"].wait_for(seen + 60, 30)

        state = await ann.state()
        assert not [e for e in state["events"] if e["type"] == "encryptionSecretMismatch"]
        assert not [e for e in py.subscribers["ann"].events if "mismatch" in e.type]
        kids = {s["kid"] for s in await ann.page.evaluate("window.e2ee.publisher.stats()")}
        secret_id = await ann.page.evaluate("window.e2ee.session.ring.secretId")
        assert {int(k, 16) >> 48 for k in kids} == {secret_id}  # sending under the new one
    finally:
        await py.close()
        await ann.close()


@pytest.mark.timeout(120)
async def test_encoded_streams_fallback(browser: Any, server: DevServer) -> None:
    """Where RTCRtpScriptTransform is missing, the older createEncodedStreams carries the
    frames through the same worker: still E2EE both ways."""
    sid = server.session()
    py = PythonPeer(server, sid, "py")
    call = await open_call(browser, server)
    try:
        await py.start()
        await call.page.click("body")  # a user gesture, for the tone's AudioContext
        result = await call.page.evaluate(
            """async ([sid, token, secret]) => {
              const m = await import("/static/e2ee.js");
              const syn = await import("/static/synthetic.js");
              const s = await m.connect(location.origin, sid, token, {
                encryptionSecret: secret, policy: { minIterations: 1000 },
                transformApi: "encoded-streams",
              });
              window.fallback = s;
              const v = syn.syntheticVideoTrack();
              const a = syn.syntheticAudioTrack();
              const pub = await s.publish({ video: v.track, audio: a.track, name: "fallback" });
              const streamId = [...s.streams.values()].find((x) => x.name === "py").id;
              const sub = await s.subscribe(streamId);
              window.fallbackSub = sub;
              return {
                senders: pub.pc.getSenders().map((x) => x.transform === null),
                receivers: sub.pc.getReceivers().map((x) => x.transform === null),
              };
            }""",
            [sid, server.token(sid, "fallback"), SECRET],
        )
        # No RTCRtpScriptTransform was used: the frames went through encoded streams.
        assert result == {"senders": [True, True], "receivers": [True, True]}
        collectors = await py.receive("fallback")
        await python_sees(collectors)
        await call.page.wait_for_function(
            """() => {
              const st = window.fallbackSub.stats();
              return st.length === 2 && st.every((x) => x.state === "ok" && x.framesDelivered > 30);
            }""",
            timeout=30_000,
        )
        await call.page.evaluate("window.fallback.disconnect()")
    finally:
        await call.context.close()
        await py.close()


@pytest.mark.timeout(180)
async def test_three_party_call(browser: Any, server: DevServer, tmp_path: Path) -> None:
    """Two browsers (one on the fake camera, one synthetic) and a Python participant, all
    seeing and hearing each other; a screenshot of the call for the docs."""
    sid = server.session()
    ann = await join_call(browser, server, sid, "Ann", synthetic=False)
    ben: CallPage | None = None
    py = PythonPeer(server, sid, "Python")
    try:
        ben = await join_call(browser, server, sid, "Ben")
        await py.start()
        from_ben = await py.receive("Ben")
        from_ann = await py.receive("Ann")
        await sees(ann, "Ben")
        await sees(ann, "Python")
        await sees(ben, "Python")
        await ben.wait(
            '(s) => s.streams.some((x) => x.name === "Ann" && x.state === "ok"'
            " && x.video.framesDelivered > 30 && x.audio.framesDelivered > 30)",
            45,
        )
        await python_sees(from_ben)
        # Ann sends Chromium's fake camera (not the synthetic picture): any decoded frame.
        assert await from_ann["video"].wait_for(30, 45, good=False)
        assert await from_ann["audio"].wait_for(30, 45, good=False)
        assert py.subscribers["Ann"].stats()[0]["frames_failed"] == 0

        for call in (ann, ben):
            state = await call.state()
            assert sorted(s["state"] for s in state["streams"]) == ["ok", "ok"]
            assert not call.errors
        router_decoded_nothing(server, sid)

        await ann.page.wait_for_timeout(1000)
        shot = tmp_path / "browser-call.png"
        await ann.page.screenshot(path=str(shot))
        if os.environ.get("E2EE_UPDATE_SCREENSHOT") == "1":  # a test leaves the tree clean
            shutil.copyfile(shot, DOCS_SCREENSHOT)
    finally:
        await py.close()
        if ben is not None:
            await ben.close()
        await ann.close()


@pytest.mark.timeout(120)
async def test_events_during_key_derivation_are_not_lost(browser: Any, server: DevServer) -> None:
    """connect() derives the key (PBKDF2) after the hello; what the server sends in the
    meantime is delivered once it is done, in order."""
    sid = server.session(kdf_iterations=10_000_000)  # the most a client accepts: seconds
    py = PythonPeer(server, sid, "py")
    other = PythonPeer(server, sid, "other")
    call = await open_call(browser, server)
    try:
        await py.session.connect()  # derives its key now, publishes later
        joined = len(py.session.connections)
        await call.page.evaluate(
            """([sid, token, secret]) => {
              window.early = { events: [], done: false };
              import("/static/e2ee.js").then(async (m) => {
                const s = new m.Session(location.origin, sid, token, { encryptionSecret: secret });
                for (const type of ["connectionCreated", "streamCreated"]) {
                  s.on(type, () => window.early.events.push(type));
                }
                const t0 = performance.now();
                await s.connect();
                window.early.took = performance.now() - t0;
                window.early.atConnect = [...window.early.events];
                window.early.streams = [...s.streams.values()].map((x) => x.name);
                window.early.done = true;  // still connected: later events count too
              });
            }""",
            [sid, server.token(sid, "early"), SECRET],
        )
        # The page has joined (py heard of it; its hello went out before anything else).
        async with asyncio.timeout(30):
            while len(py.session.connections) == joined:
                await asyncio.sleep(0.01)
        # While the page derives its key: another client joins (at once), py publishes
        # (a negotiation with the router: on a loaded machine it may end after the
        # derivation, so its event may come after connect() returned).
        await other.session.connect()
        await py.session.publish(
            video=SyntheticVideoTrack(), audio=SyntheticAudioTrack(), name="py"
        )
        await call.page.wait_for_function("() => window.early.done", timeout=60_000)
        await call.page.wait_for_function("() => window.early.events.length >= 2")
        early = await call.page.evaluate("window.early")
        # What arrived while the key was derived was handed out before connect()
        # returned (the join at least), nothing was lost, and all came in order.
        assert early["events"] == ["connectionCreated", "streamCreated"], early
        assert early["atConnect"] == early["events"][: len(early["atConnect"])], early
        assert early["atConnect"], early
        if len(early["atConnect"]) == 2:
            assert early["streams"] == ["py"], early
    finally:
        await call.context.close()
        await other.close()
        await py.close()
