"""End-to-end tests of e2ee.transform.protect: real aiortc peers on this host, real libvpx and
libopus encoding and decoding, real SFrame crypto.  Nothing is mocked.

The tests run on pytest-asyncio; the peers each creates go into the ``peers`` fixture
(tests/conftest.py), which closes them afterwards.  Peers are connected in process by
exchanging SDP objects; ICE uses host candidates only.
Secrets are derived with 1000 PBKDF2 iterations to keep the tests fast.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import RTCRtpSender
from aiortc.contrib.media import MediaRelay

from e2ee import KeyRing
from e2ee.rtc import compat
from e2ee.transform.protect import E2eeTransform, protect
from support.media import (
    EncodedVp8Track,
    Peer,
    SyntheticAudioTrack,
    SyntheticVideoTrack,
    call,
    make_peer,
)

pytestmark = pytest.mark.timeout(30)

SESSION = "transform-test-session"
SECRET_A = "correct horse battery staple"
SECRET_B = "tr0ub4dor&3 is not a good secret"


def new_ring(secret: str | None = None, *, grace_period: float = 10.0) -> KeyRing:
    ring = KeyRing(SESSION, kdf_iterations=1000, grace_period=grace_period)
    if secret is not None:
        ring.set_secret(secret)
    return ring


def peer(peers: list[Peer], ring: KeyRing | None) -> Peer:
    p = make_peer(ring)
    peers.append(p)
    return p


def transform(p: Peer) -> E2eeTransform:
    assert isinstance(p.transform, E2eeTransform)
    return p.transform


def sent(p: Peer, kind: str) -> dict:
    (stats,) = [s for s in transform(p).stats() if s["direction"] == "send" and s["kind"] == kind]
    return stats


def received(p: Peer, kind: str) -> dict:
    (stats,) = [s for s in transform(p).stats() if s["direction"] == "recv" and s["kind"] == kind]
    return stats


# -- 1. Same secret decodes; an observer without the key decodes nothing ---------------


@pytest.mark.asyncio
async def test_same_secret_decodes_and_observers_without_key_see_nothing(peers: list[Peer]) -> None:
    ring = new_ring(SECRET_A)
    relay = MediaRelay()
    video, audio = SyntheticVideoTrack(320, 240), SyntheticAudioTrack()

    # One source, three subscriber connections, every publisher leg under the same
    # ring: a receiver with the secret, a plain aiortc peer, a protected peer
    # without any secret.
    legs = []
    for sub_ring in (new_ring(SECRET_A), None, new_ring()):
        pub, sub = peer(peers, ring), peer(peers, sub_ring)
        await call(pub, sub, [relay.subscribe(video), relay.subscribe(audio)])
        legs.append((pub, sub))
    (pub, rx), (_, plain), (_, nokey) = legs

    assert await rx.collectors["video"].wait_for(20, timeout=5)
    assert await rx.collectors["audio"].wait_for(20, timeout=5)
    await asyncio.sleep(0.5)

    # The receiver with the secret decodes the real picture and tone.
    frames = rx.collectors["video"].frames
    assert {(f.width, f.height) for f in frames} == {(320, 240)}
    assert all(f.good for f in frames)
    assert all(f.good for f in rx.collectors["audio"].frames[5:])  # past Opus warm-up
    for kind in ("video", "audio"):
        stats = received(rx, kind)
        assert stats["state"] == "ok"
        assert stats["frames_failed"] == stats["frames_mismatched"] == 0
        assert stats["frames_delivered"] > 0
        assert sent(pub, kind)["frames_encrypted"] > 0
        assert sent(pub, kind)["frames_dropped"] == 0
    assert sent(pub, "video")["keyframes_encrypted"] >= 1
    assert rx.events == []

    # A plain aiortc peer gets the encrypted stream: libvpx rejects every frame, and
    # what libopus makes of the audio is not the tone.
    assert plain.collectors["video"].count() == 0
    assert plain.collectors["audio"].count() > 20  # it did receive audio packets...
    assert plain.collectors["audio"].count(good=True) == 0  # ...but not the tone

    # A protected peer without a secret decodes nothing and says why, once.
    assert nokey.collectors["video"].count() == 0
    assert nokey.collectors["audio"].count() == 0
    for kind in ("video", "audio"):
        assert received(nokey, kind)["frames_missing"] > 0
        assert received(nokey, kind)["frames_delivered"] == 0
        assert len(nokey.events_of("encryption_secret_missing", kind)) == 1


# -- 2. Wrong secret: one mismatch, nothing decoded; right secret: match, decodes again --


@pytest.mark.asyncio
async def test_wrong_secret_mismatch_then_match_recovers_within_a_second(peers: list[Peer]) -> None:
    pub, rx = peer(peers, new_ring(SECRET_A)), peer(peers, new_ring(SECRET_B))
    await call(pub, rx, [SyntheticVideoTrack(320, 240), SyntheticAudioTrack()])
    await asyncio.sleep(2.0)

    for kind in ("video", "audio"):
        assert rx.collectors[kind].count() == 0
        assert len(rx.events_of("encryption_secret_mismatch", kind)) == 1
        stats = received(rx, kind)
        assert stats["state"] == "mismatch"
        assert stats["frames_mismatched"] > 10
        assert stats["frames_delivered"] == 0
    (event,) = rx.events_of("encryption_secret_mismatch", "video")
    assert event.kid >> 48 == transform(pub).ring.secret_id  # names the publisher's secret

    keyframes_before = sent(pub, "video")["keyframes_encrypted"]
    changed = time.monotonic()
    await transform(rx).ring.set_secret_async(SECRET_A)
    assert await rx.collectors["video"].wait_for(1, timeout=1.0)
    assert await rx.collectors["audio"].wait_for(1, timeout=1.0)
    first_video = rx.collectors["video"].frames[0].at
    assert first_video - changed < 1.0

    for kind in ("video", "audio"):
        assert len(rx.events_of("encryption_secret_match", kind)) == 1
        assert len(rx.events_of("encryption_secret_mismatch", kind)) == 1
    # The match sent a PLI to the publisher's media SSRC (taken from the remote SDP),
    # and the publisher answered with a key frame.
    assert received(rx, "video")["keyframe_requests"] >= 1
    (rx_video,) = [r for r in transform(rx).receivers if r.kind == "video"]
    (pub_video,) = [s for s in transform(pub).senders if s.kind == "video"]
    assert rx_video._media_ssrcs() == [compat.sender_ssrc(pub_video.sender)]
    assert sent(pub, "video")["keyframes_encrypted"] > keyframes_before
    await asyncio.sleep(0.5)
    assert all(f.good for f in rx.collectors["video"].frames)


# -- 3. The publisher changes its secret mid-call ---------------------------------------


@pytest.mark.asyncio
async def test_secret_change_mid_call(peers: list[Peer]) -> None:
    pub_ring = new_ring(SECRET_A)
    relay = MediaRelay()
    video, audio = SyntheticVideoTrack(320, 240), SyntheticAudioTrack()
    both_ring = new_ring(SECRET_A)
    pub1, both = peer(peers, pub_ring), peer(peers, both_ring)
    pub2, old = peer(peers, pub_ring), peer(peers, new_ring(SECRET_A))
    await call(pub1, both, [relay.subscribe(video), relay.subscribe(audio)])
    await call(pub2, old, [relay.subscribe(video), relay.subscribe(audio)])
    assert await both.collectors["video"].wait_for(15, timeout=5)
    assert await old.collectors["video"].wait_for(15, timeout=5)
    kid_before = sent(pub1, "video")["kid"]

    # Coordinated change: this receiver learns the new secret first (the old one
    # stays in its grace period), then the publisher switches.
    await both_ring.set_secret_async(SECRET_B)
    await asyncio.sleep(0.5)
    requests_before = sent(pub1, "video")["keyframe_requests"]
    changed = time.monotonic()
    await pub_ring.set_secret_async(SECRET_B)
    await asyncio.sleep(2.0)
    end = time.monotonic()

    # Every track switched to a new KID under the new secret and forced a key frame.
    assert sent(pub1, "video")["kid"] != kid_before
    assert sent(pub1, "video")["kid"] >> 48 == pub_ring.secret_id
    assert sent(pub1, "video")["keyframe_requests"] > requests_before

    # The receiver holding both secrets saw no interruption.
    for kind in ("video", "audio"):
        collector = both.collectors[kind]
        # The counters above are the exact claim; the gap bound is loose on purpose (a
        # stream that stopped would show the whole 2.5 s window), so that a loaded
        # machine's scheduling hiccups cannot fail it.
        assert collector.max_gap(changed - 0.5, end) < 1.5, kind
        assert both.events_of("encryption_secret_mismatch", kind) == []
        assert received(both, kind)["frames_failed"] == 0
        assert received(both, kind)["frames_mismatched"] == 0

    # The receiver with only the old secret lost the stream, with one mismatch.
    for kind in ("video", "audio"):
        assert len(old.events_of("encryption_secret_mismatch", kind)) == 1
        assert old.collectors[kind].count(since=changed + 0.5) == 0
        assert received(old, kind)["state"] == "mismatch"


# -- 4. Pre-encoded frames (aiortc's pack() path) ---------------------------------------


@pytest.mark.asyncio
async def test_pre_encoded_vp8_is_encrypted_and_decodable(peers: list[Peer]) -> None:
    pub_ring = new_ring(SECRET_A)
    track = EncodedVp8Track(320, 240, gop=150)
    relay = MediaRelay()
    pub, rx = peer(peers, pub_ring), peer(peers, new_ring(SECRET_A))
    pub2, plain = peer(peers, pub_ring), peer(peers, None)
    # A track returned by MediaRelay is a proxy: pass the source's request_keyframe
    # on, since the transform looks for it on the track the sender holds.
    leg = relay.subscribe(track, buffered=False)
    leg.request_keyframe = track.request_keyframe  # type: ignore[attr-defined]
    await call(pub, rx, [leg])
    await call(pub2, plain, [relay.subscribe(track, buffered=False)])

    assert await rx.collectors["video"].wait_for(20, timeout=5)
    frames = rx.collectors["video"].frames
    assert {(f.width, f.height) for f in frames} == {(320, 240)}
    stats = received(rx, "video")
    assert stats["frames_ok"] >= 20
    assert stats["frames_failed"] == 0
    assert sent(pub, "video")["keyframes_encrypted"] >= 1
    # The same packets reach a plain peer, which cannot decode them.
    assert plain.collectors["video"].count() == 0

    # The pack() path ignores aiortc's key-frame flag; a secret change asks the
    # track itself (its request_keyframe()), so the new KID starts with a key frame.
    await pub_ring.set_secret_async(SECRET_B)
    await asyncio.sleep(0.5)
    assert track.keyframe_requests >= 1
    assert len(rx.events_of("encryption_secret_mismatch", "video")) == 1
    # The receiver catches up; its PLI reaches the track the same way, so it decodes
    # again at once instead of waiting for the source's next key frame (5 s away).
    requests = track.keyframe_requests
    await transform(rx).ring.set_secret_async(SECRET_B)
    changed = time.monotonic()
    count = rx.collectors["video"].count()
    assert await rx.collectors["video"].wait_for(count + 1, timeout=1.0)
    assert rx.collectors["video"].frames[count].at - changed < 1.0
    assert track.keyframe_requests > requests
    assert len(rx.events_of("encryption_secret_match", "video")) == 1


# -- Fail closed ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_publisher_without_secret_sends_nothing_until_it_has_one(peers: list[Peer]) -> None:
    pub_ring = new_ring()
    pub, rx = peer(peers, pub_ring), peer(peers, new_ring(SECRET_A))
    await call(pub, rx, [SyntheticVideoTrack(320, 240), SyntheticAudioTrack()])
    await asyncio.sleep(1.5)

    for kind in ("video", "audio"):
        assert rx.collectors[kind].count() == 0
        assert sent(pub, kind)["frames_dropped"] > 10
        assert sent(pub, kind)["frames_encrypted"] == 0
        missing = pub.events_of("encryption_secret_missing", kind)
        assert 1 <= len(missing) <= 3  # at most one a second
        assert all(e.direction == "send" for e in missing)
    assert received(rx, "video")["frames_ok"] == 0

    await pub_ring.set_secret_async(SECRET_A)
    assert await rx.collectors["video"].wait_for(5, timeout=2)
    assert await rx.collectors["audio"].wait_for(5, timeout=2)


@pytest.mark.asyncio
async def test_codecs_other_than_vp8_and_opus_are_refused(peers: list[Peer]) -> None:
    pub, plain = peer(peers, new_ring(SECRET_A)), peer(peers, None)
    transceiver = pub.pc.addTransceiver(SyntheticVideoTrack(320, 240), direction="sendonly")
    h264 = [
        c
        for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType.lower() == "video/h264"
    ]
    transceiver.setCodecPreferences(h264)
    await call(pub, plain, [])
    await asyncio.sleep(1.5)

    stats = sent(pub, "video")
    assert stats["codec"].lower() == "video/h264"
    assert stats["frames_encrypted"] == 0
    assert stats["frames_dropped"] > 10
    assert pub.events_of("encryption_error", "video")
    assert plain.collectors["video"].count() == 0
    outbound = [
        s for s in (await transceiver.sender.getStats()).values() if s.type == "outbound-rtp"
    ]
    assert outbound[0].packetsSent == 0


@pytest.mark.asyncio
async def test_protect_hooks_every_transceiver_and_close_detaches(peers: list[Peer]) -> None:
    ring = new_ring(SECRET_A)
    p = peer(peers, ring)
    t = transform(p)
    sender = p.pc.addTrack(SyntheticVideoTrack())
    p.pc.addTransceiver("audio")
    assert t.sender_for(sender) is not None
    assert len(t.senders) == len(t.receivers) == 2
    with pytest.raises(ValueError, match="already protected"):
        protect(p.pc, ring)
    t.close()
    assert t.closed
    assert "addTrack" not in vars(p.pc)
    assert ring._listeners == []  # the ring no longer calls us
    # Closed, but never downgraded: the sender still encrypts.
    protected = t.sender_for(sender)
    assert protected is not None
    assert getattr(compat.sender_frame_hook(sender), "__self__", None) is protected
