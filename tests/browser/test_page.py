"""The call page and e2ee.js in Chromium, against a real ``e2ee serve --dev``: the join
form and dev mode, and the client-side policy (what the browser refuses before any media
leaves).  Media interop with the Python client is in test_browser_client.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from browser.helpers import SECRET, TEST_ITERATIONS, DevServer, open_call

pytestmark = pytest.mark.asyncio(loop_scope="session")

NO_TRANSFORM_API = """
delete window.RTCRtpScriptTransform;
delete RTCRtpSender.prototype.createEncodedStreams;
delete RTCRtpReceiver.prototype.createEncodedStreams;
"""


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("page")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("page-plain"), dev=False).start()
    yield server
    server.stop()


async def no_streams(server: DevServer, session_id: str) -> dict[str, Any]:
    """The session as the server sees it, once nobody is connected any more."""
    for _ in range(50):
        status, info = server.rest("GET", f"/v1/sessions/{session_id}")
        assert status == 200
        if not info["connections"]:
            break
        await asyncio.sleep(0.1)
    assert info["streams"] == []
    return dict(info)


# -- the form and dev mode ----------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_create_a_test_session_and_join_from_the_form(
    browser: Any, dev_server: DevServer
) -> None:
    call = await open_call(browser, dev_server)
    page = call.page
    try:
        await page.wait_for_selector("#dev-create", state="visible", timeout=10_000)
        await page.click("#dev-create")
        await page.wait_for_function(
            "() => document.querySelector('input[name=session]').value.length > 10"
        )
        session_id = await page.input_value("input[name=session]")
        assert await page.is_visible("#dev-note")
        await page.fill("input[name=name]", "Ann")
        await page.fill("input[name=secret]", SECRET)
        await page.uncheck("input[name=publish]")
        # The default session parameters (600,000 iterations) and the default policy.
        await page.click("#join-button")
        await call.wait("(s) => s.connected || s.error", 30)
        state = await call.state()
        assert state["connected"], state
        assert state["error"] is None
        assert state["sessionId"] == session_id
        assert state["suite"] == 6
        assert await page.is_visible("#badge")
        assert await page.text_content("#status") == "Connected"
        assert not await page.is_visible("#toggle-camera")  # receive only
        status, info = dev_server.rest("GET", f"/v1/sessions/{session_id}")
        assert status == 200
        assert [c["data"] for c in info["connections"]] == ["Ann"]

        await page.click("#leave")
        await call.wait("(s) => !s.connected", 10)
        assert await page.is_visible("#join")
        await no_streams(dev_server, session_id)
        assert not call.errors
    finally:
        await call.close()


@pytest.mark.timeout(60)
async def test_no_dev_button_without_dev_mode(browser: Any, plain_server: DevServer) -> None:
    call = await open_call(browser, plain_server)
    try:
        await call.wait("(s) => s.ready", 20)
        assert not (await call.state())["dev"]
        assert await call.page.is_visible("#join-form")
        assert not await call.page.is_visible("#dev-create")
    finally:
        await call.close()


# -- the client's policy, in the browser ---------------------------------------------------

POLICY_JS = """
async () => {
  const m = await import("/static/e2ee.js");
  const policy = m.sessionPolicy({ minIterations: 1000 });
  const hello = { e2ee: true, media_mode: "routed", suite: 6, kdf_iterations: 600000 };
  const code = (f) => { try { f(); return "ok"; } catch (e) { return e.code ?? e.name; } };
  const check = (h, opts) => code(() => m.checkHello({ ...hello, ...h }, opts));
  const withSecret = { secretGiven: true };
  const sdp = [
    "v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:3/sendonly URN:IETF:PARAMS:RTP-HDREXT:CSRC-AUDIO-LEVEL vad=on",
    "a=extmap-allow-mixed", "",
  ].join("\\r\\n");
  let secretError = null;
  try { await new m.Session(location.origin, "s", "t", { encryptionSecret: "short" }); }
  catch (e) {
    const isClass = e instanceof m.InvalidEncryptionSecret;
    secretError = { code: e.code, message: e.message, isClass };
  }
  const ring = new m.KeyRing("ring session", { suite: 6, kdfIterations: 1000, gracePeriod: 10 });
  await ring.setSecret("the first secret");
  const first = ring.secretId;
  await ring.acceptSecret("the second secret");
  const afterAccept = ring.forWorker();
  await ring.setSecret("the second secret");
  const afterSet = ring.forWorker();
  let ringError = null;
  try { await ring.setSecret("1234567"); } catch (e) { ringError = e.code; }
  return {
    ok: check({}, withSecret),
    lowered: check({ kdf_iterations: 1000 }, { ...withSecret, policy }),
    weakIterations: check({ kdf_iterations: 1000 }, withSecret),
    weakSuite: check({ suite: 7 }, withSecret),
    weakSuite3: check({ suite: 3 }, { ...withSecret, policy }),
    tooMany: check({ kdf_iterations: 20000000 }, withSecret),
    pinned: check({}, { ...withSecret, policy: m.sessionPolicy({ pinIterations: 700000 }) }),
    unencrypted: check({ e2ee: false }, withSecret),
    relayed: check({ media_mode: "relayed" }, withSecret),
    noSuite: check({ suite: null }, withSecret),
    stringIterations: check({ kdf_iterations: "600000" }, withSecret),
    noSecret: check({}, { secretGiven: false }),
    plainNoSecret: check({ e2ee: false }, { secretGiven: false }),
    badPolicy: code(() => m.sessionPolicy({ suites: [7] })),
    badFloor: code(() => m.sessionPolicy({ minIterations: 0 })),
    weakMessage: (() => {
      try { m.checkHello({ ...hello, kdf_iterations: 1000 }, withSecret); }
      catch (e) { return e.message; }
    })(),
    stripped: m.stripMediaDerivedExtensions(sdp),
    strippedTwice: m.stripMediaDerivedExtensions(m.stripMediaDerivedExtensions(sdp))
      === m.stripMediaDerivedExtensions(sdp),
    secretError,
    first, afterAccept: {
      send: afterAccept.send.id,
      receive: afterAccept.receive.map((r) => [r.id, r.expiresIn === null]),
    },
    afterSet: {
      send: afterSet.send.id,
      receive: afterSet.receive.map((r) => [r.id, r.expiresIn === null]),
    },
    ringError,
    ringKeptSecret: ring.secretId === afterSet.send.id,
    support: m.hasEndToEndEncryptionSupport(),
  };
}
"""


@pytest.mark.timeout(60)
async def test_client_policy_in_the_browser(browser: Any, dev_server: DevServer) -> None:
    call = await open_call(browser, dev_server)
    try:
        r = await call.page.evaluate(POLICY_JS)
    finally:
        await call.close()
    assert r["ok"] == "ok"
    assert r["lowered"] == "ok"
    assert r["weakIterations"] == "WeakSessionParameters"
    assert "1000 PBKDF2 iterations" in r["weakMessage"]
    assert "100000" in r["weakMessage"]
    assert r["weakSuite"] == r["weakSuite3"] == r["tooMany"] == "WeakSessionParameters"
    assert r["pinned"] == "WeakSessionParameters"
    assert r["unencrypted"] == r["relayed"] == r["noSuite"] == "e2ee_required"
    assert r["stringIterations"] == "e2ee_required"
    assert r["noSecret"] == "EncryptionSecretMissing"
    assert r["plainNoSecret"] == "ok"
    assert r["badPolicy"] == r["badFloor"] == "RangeError"
    assert "audio-level" not in r["stripped"].lower()
    assert "a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:mid\r\n" in r["stripped"]
    assert "a=extmap-allow-mixed\r\n" in r["stripped"]
    assert r["strippedTwice"]
    assert r["secretError"]["code"] == "InvalidEncryptionSecret"
    assert r["secretError"]["isClass"]
    assert "short" not in r["secretError"]["message"]
    # accept: received, not sent; set: promoted, and the old one kept for the grace period.
    second = r["afterSet"]["send"]
    assert r["afterAccept"]["send"] == r["first"]
    assert r["afterAccept"]["receive"] == [[r["first"], True], [second, True]]
    assert r["afterSet"]["receive"] == [[second, True], [r["first"], False]]
    assert r["ringError"] == "InvalidEncryptionSecret"
    assert r["ringKeptSecret"]
    assert r["support"] is True


@pytest.mark.timeout(60)
async def test_weak_session_is_refused_before_anything_is_sent(
    browser: Any, dev_server: DevServer
) -> None:
    session_id = dev_server.session(kdf_iterations=TEST_ITERATIONS)
    token = dev_server.token(session_id, "weak")
    # No minIterations: the default floor of 100,000 applies.
    call = await open_call(
        browser, dev_server, session=session_id, token=token, secret=SECRET, publish=1
    )
    try:
        await call.wait("(s) => s.error", 20)
        state = await call.state()
        assert state["error"]["code"] == "WeakSessionParameters"
        assert not state["connected"]
        assert not state["publishing"]
        assert await call.page.is_visible("#join-error")
        assert "PBKDF2" in (await call.page.text_content("#join-error") or "")
        # The secret is not left in the address bar.
        assert SECRET.replace(" ", "+") not in call.page.url
        assert "secret=" not in call.page.url
        await no_streams(dev_server, session_id)
    finally:
        await call.close()


@pytest.mark.timeout(60)
async def test_unencrypted_session_is_refused_with_a_secret(
    browser: Any, dev_server: DevServer
) -> None:
    status, session = dev_server.rest("POST", "/v1/sessions", {"e2ee": False})
    assert status == 201
    status, token = dev_server.rest(
        "POST", f"/v1/sessions/{session['id']}/tokens", {"role": "publisher"}
    )
    call = await open_call(
        browser,
        dev_server,
        session=session["id"],
        token=token["token"],
        secret=SECRET,
        publish=1,
        synthetic=1,
    )
    try:
        await call.wait("(s) => s.error", 20)
        state = await call.state()
        assert state["error"]["code"] == "e2ee_required"
        assert not state["publishing"]
        await no_streams(dev_server, session["id"])
    finally:
        await call.close()


@pytest.mark.timeout(60)
async def test_without_a_transform_api_nothing_is_published(
    browser: Any, dev_server: DevServer
) -> None:
    """No plaintext fallback: a browser that cannot transform encoded frames does not
    join an E2EE session, and a session whose API vanished cannot publish."""
    session_id = dev_server.session()
    context = await browser.new_context(permissions=["camera", "microphone"])
    try:
        page = await context.new_page()
        await page.add_init_script(NO_TRANSFORM_API)
        await page.goto(
            f"{dev_server.url}/?session={session_id}&token={dev_server.token(session_id)}"
            f"&secret={SECRET}&publish=1&synthetic=1&minIterations={TEST_ITERATIONS}"
        )
        await page.wait_for_function("() => window.e2ee?.state.error", timeout=20_000)
        state = await page.evaluate("window.e2ee.state")
        assert state["error"]["code"] == "e2ee_not_supported"
        assert await page.is_visible("#support-warning")
        await no_streams(dev_server, session_id)

        # Connected while the API was there; gone before publishing: publish fails.
        page = await context.new_page()
        await page.goto(dev_server.url)
        result = await page.evaluate(
            """async ([sid, token, secret]) => {
              const m = await import("/static/e2ee.js");
              const s = await m.connect(location.origin, sid, token,
                { encryptionSecret: secret, policy: { minIterations: 1000 } });
              const saved = window.RTCRtpScriptTransform;
              delete window.RTCRtpScriptTransform;
              delete RTCRtpSender.prototype.createEncodedStreams;
              const media = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
              let error = null;
              try {
                await s.publish({
                  video: media.getVideoTracks()[0], audio: media.getAudioTracks()[0] });
              } catch (e) { error = { code: e.code, cls: e instanceof m.EncryptionInternalError }; }
              window.RTCRtpScriptTransform = saved;
              const publishers = s.publishers.size;
              await s.disconnect();
              return { error, publishers };
            }""",
            [session_id, dev_server.token(session_id), SECRET],
        )
        assert result == {
            "error": {"code": "EncryptionInternalError", "cls": True},
            "publishers": 0,
        }
        await no_streams(dev_server, session_id)
    finally:
        await context.close()


@pytest.mark.timeout(90)
async def test_published_tracks_are_protected_before_negotiation(
    browser: Any, dev_server: DevServer
) -> None:
    """Every sender has its transform before the offer; only VP8 and Opus are offered;
    no description set or sent carries the audio level."""
    session_id = dev_server.session()
    call = await open_call(browser, dev_server)
    try:
        result = await call.page.evaluate(
            """async ([sid, token, secret]) => {
              const m = await import("/static/e2ee.js");
              const s = await m.connect(location.origin, sid, token,
                { encryptionSecret: secret, policy: { minIterations: 1000 } });
              const media = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
              const seen = [];
              const orig = RTCPeerConnection.prototype.setLocalDescription;
              RTCPeerConnection.prototype.setLocalDescription = function (d) {
                seen.push({ sdp: d.sdp, transforms: this.getSenders().map((x) => !!x.transform) });
                return orig.call(this, d);
              };
              const pub = await s.publish({
                  video: media.getVideoTracks()[0], audio: media.getAudioTracks()[0] });
              RTCPeerConnection.prototype.setLocalDescription = orig;
              const out = {
                seen,
                local: pub.pc.localDescription.sdp,
                remote: pub.pc.remoteDescription.sdp,
                streamId: pub.streamId,
              };
              await s.disconnect();
              return out;
            }""",
            [session_id, dev_server.token(session_id), SECRET],
        )
    finally:
        await call.close()
    assert result["streamId"]
    assert len(result["seen"]) == 1
    assert result["seen"][0]["transforms"] == [True, True]
    for sdp in (result["seen"][0]["sdp"], result["local"], result["remote"]):
        assert "audio-level" not in sdp
    codecs = {
        line.split(" ", 1)[1].split("/")[0].lower()
        for line in result["local"].splitlines()
        if line.startswith("a=rtpmap:")
    }
    assert codecs == {"vp8", "rtx", "opus"}, codecs
