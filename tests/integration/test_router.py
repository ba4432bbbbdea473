"""End-to-end tests of the media router (e2ee.sfu): real aiortc peers on this host (host
candidates only), real libvpx/libopus encoding at the publishers and decoding at the
subscribers; the router in between never decodes.  SDP is exchanged in process.  The tests
run on pytest-asyncio; each appends the routers, peer connections and frame collectors it
creates to the ``cleanup`` fixture (tests/conftest.py), which closes them afterwards.  The
unit tests of the per-frame policy are in tests/unit/sfu/test_policy.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiortc import RTCConfiguration, sdp

from e2ee import KeyRing
from e2ee.rtc import compat
from e2ee.sfu import CodecNotAllowed, Router, UnknownStream, UnknownSubscription
from support import FIXTURES
from support.media import (
    FrameCollector,
    SyntheticAudioTrack,
    SyntheticVideoTrack,
    new_pc,
)
from support.router import (
    install_recording_encoder,
    only_codec,
    publish,
    record_received_frames,
    record_sent_wire_frames,
    subscribe,
    video_ssrc_of,
    wait_connected,
)

pytestmark = pytest.mark.timeout(40)


def new_router(cleanup: list[Any], **kwargs: Any) -> Router:
    router = Router(rtc_configuration=RTCConfiguration(iceServers=[]), **kwargs)
    cleanup.append(router)
    return router


def collect(cleanup: list[Any], track: Any) -> FrameCollector:
    collector = FrameCollector(track).start()
    cleanup.append(collector)
    return collector


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def answer_codecs(description: Any) -> dict[str, list[str]]:
    parsed = sdp.SessionDescription.parse(description.sdp)
    return {m.kind: [c.mimeType.lower() for c in m.rtp.codecs] for m in parsed.media}


# -- 1. Fan-out to three subscribers, nothing decoded at the router --------------------


@pytest.mark.asyncio
async def test_one_publisher_three_subscribers_decode(cleanup: list[Any]) -> None:
    router = new_router(cleanup)
    video, audio = SyntheticVideoTrack(320, 240), SyntheticAudioTrack()
    pub = new_pc()
    cleanup.append(pub)
    await publish(router, "alice", [video, audio], pub)
    # The answer negotiates only VP8 (+RTX) and Opus.
    codecs = answer_codecs(pub.remoteDescription)
    assert set(codecs["video"]) <= {"video/vp8", "video/rtx"}, codecs
    assert codecs["audio"] == ["audio/opus"], codecs
    await wait_connected(pub)

    collectors = []
    for i in range(3):
        pc = new_pc()
        cleanup.append(pc)
        _, tracks = await subscribe(router, f"sub{i}", "alice", pc)
        assert set(tracks) == {"audio", "video"}
        collectors.append((collect(cleanup, tracks["video"]), collect(cleanup, tracks["audio"])))
    assert router.subscriber_count("alice") == 3

    for v, a in collectors:
        assert await v.wait_for(15, timeout=6), f"video frames: {len(v.frames)}"
        assert await a.wait_for(15, timeout=3), f"audio frames: {len(a.frames)}"
    for v, _ in collectors:
        assert {(f.width, f.height) for f in v.frames} == {(320, 240)}
        # Starts on a key frame: every decoded picture is the real one.
        assert all(f.good for f in v.frames)

    stats = router.stats()
    assert stats["frames_decoded"] == 0
    assert stats["frames_forwarded"] > 0
    assert stats["bytes_forwarded"] > 0
    assert stats["frames_received"] > 0
    tracks_stats = stats["streams"]["alice"]["tracks"]
    kinds = {t["kind"]: t for t in tracks_stats.values()}
    assert kinds["video"]["width"] == 320
    assert kinds["video"]["height"] == 240
    assert kinds["video"]["frames_decoded"] == kinds["audio"]["frames_decoded"] == 0
    assert stats["streams"]["alice"]["subscribers"] == 3
    for i in range(3):
        sub = stats["subscriptions"][f"sub{i}"]
        assert sub["stream_id"] == "alice"
        per_kind = {t["kind"]: t for t in sub["tracks"].values()}
        assert per_kind["video"]["frames_forwarded"] > 0
        assert per_kind["audio"]["frames_forwarded"] > 0
        assert per_kind["video"]["packets_forwarded"] >= per_kind["video"]["frames_forwarded"]
        assert per_kind["video"]["max_backlog"] <= router.backlog_packets


@pytest.mark.asyncio
async def test_subscribers_are_not_offered_abs_send_time(cleanup: list[Any]) -> None:
    # It would only make every subscriber send REMB feedback the router has no use for.
    from e2ee.wire.extmap import ABS_SEND_TIME, extmap_uris

    router = new_router(cleanup)
    pub = new_pc()
    cleanup.append(pub)
    await publish(router, "alice", [SyntheticVideoTrack(), SyntheticAudioTrack()], pub)
    offer = await router.subscribe("bob", "alice")
    uris = extmap_uris(offer.sdp)
    assert "urn:ietf:params:rtp-hdrext:sdes:mid" in uris
    assert ABS_SEND_TIME not in uris


# -- 2. Forwarded frames are byte-identical -------------------------------------------


@pytest.mark.asyncio
async def test_forwarded_frames_are_byte_identical(cleanup: list[Any]) -> None:
    router = new_router(cleanup)
    pub = new_pc()
    cleanup.append(pub)
    await publish(router, "alice", [SyntheticVideoTrack(320, 240)], pub)
    encoder = install_recording_encoder(pub.getSenders()[0])
    await wait_connected(pub)

    sub = new_pc()
    cleanup.append(sub)
    received = record_received_frames(sub)
    _, tracks = await subscribe(router, "bob", "alice", sub)
    collector = collect(cleanup, tracks["video"])
    assert await collector.wait_for(45, timeout=8)

    sent = set(encoder.frames)
    got = [data for _, data in received]
    assert len(got) >= 45
    missing = [i for i, data in enumerate(got) if data not in sent]
    assert not missing, f"{len(missing)} of {len(got)} received frames were never sent"
    # In order: the received frames are a contiguous run of the sent ones.
    start = encoder.frames.index(got[0])
    assert encoder.frames[start : start + len(got)] == got
    assert got[0][0] & 1 == 0, "the subscriber must start on a key frame"
    assert router.stats()["frames_decoded"] == 0


# -- 3. A late joiner starts on a key frame, quickly ----------------------------------


@pytest.mark.asyncio
async def test_late_joiner_gets_keyframe_within_one_second(cleanup: list[Any]) -> None:
    router = new_router(cleanup)
    pub = new_pc()
    cleanup.append(pub)
    await publish(router, "alice", [SyntheticVideoTrack(320, 240)], pub)
    encoder = install_recording_encoder(pub.getSenders()[0])
    await wait_connected(pub)
    early = new_pc()
    cleanup.append(early)
    _, tracks = await subscribe(router, "early", "alice", early)
    early_collector = collect(cleanup, tracks["video"])
    await asyncio.sleep(3.0)
    assert early_collector.count(good=True) > 30
    forced_before = encoder.forced
    early_before = _only_track(router.stats()["subscriptions"]["early"])

    late = new_pc()
    cleanup.append(late)
    received = record_received_frames(late)
    t0 = time.monotonic()
    _, tracks = await subscribe(router, "late", "alice", late)
    t_connected = time.monotonic()
    collector = collect(cleanup, tracks["video"])
    assert await collector.wait_for(1, timeout=3)
    first_good = next(f.at for f in collector.frames if f.good)
    assert first_good - t_connected < 1.0, (
        f"first decodable frame {first_good - t_connected:.3f}s after connecting "
        f"({first_good - t0:.3f}s after subscribe())"
    )
    # It started on a key frame (never a delta), asked for by the router (the
    # publisher's own key frame interval is 3000 frames).
    assert received
    assert received[0][1][0] & 1 == 0
    assert all(f.good for f in collector.frames)
    assert encoder.forced > forced_before
    # The early subscriber was not disturbed by the late join: its queue was never
    # flushed and it never waited for a key frame (exact), and its picture kept coming
    # (a loose bound: a stalled track would show the whole window).
    early_after = _only_track(router.stats()["subscriptions"]["early"])
    for counter in ("flushes", "dropped_overflow", "dropped_waiting_keyframe"):
        assert early_after[counter] == early_before[counter], counter
    assert not early_after["waiting_keyframe"]
    assert early_collector.max_gap(t0, time.monotonic()) < 1.5


def _only_track(subscription: dict[str, Any]) -> dict[str, Any]:
    (track,) = subscription["tracks"].values()
    return dict(track)


# -- 4. A subscriber's PLI reaches the publisher, rate-limited ------------------------


@pytest.mark.asyncio
async def test_subscriber_pli_reaches_publisher_rate_limited(cleanup: list[Any]) -> None:
    router = new_router(cleanup, pli_interval=0.3)
    pub = new_pc()
    cleanup.append(pub)
    await publish(router, "alice", [SyntheticVideoTrack(320, 240)], pub)
    encoder = install_recording_encoder(pub.getSenders()[0])
    await wait_connected(pub)
    sub = new_pc()
    cleanup.append(sub)
    received = record_received_frames(sub)
    _, tracks = await subscribe(router, "bob", "alice", sub)
    collector = collect(cleanup, tracks["video"])
    assert await collector.wait_for(10, timeout=5)
    await asyncio.sleep(0.7)  # the join's key frame request is long answered
    forced_before = encoder.forced
    plis_before = router.stats()["streams"]["alice"]["tracks"]["0"]["plis_sent"]

    # A storm of 20 PLIs from the subscriber within ~0.2 s.
    receiver = sub.getReceivers()[0]
    media_ssrc = video_ssrc_of(sub.remoteDescription.sdp)  # the router's sender SSRC
    t_pli = time.monotonic()
    for _ in range(20):
        await compat.send_pli(receiver, media_ssrc)
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)

    stats = router.stats()
    sub_video = stats["subscriptions"]["bob"]["tracks"]["0"]
    assert sub_video["plis_received"] == 20
    plis_sent = stats["streams"]["alice"]["tracks"]["0"]["plis_sent"] - plis_before
    forced = encoder.forced - forced_before
    # 20 requests over ~0.2 s at most 1 PLI per 0.3 s: one at once, one coalesced.
    assert 1 <= plis_sent <= 2, plis_sent
    assert 1 <= forced <= 2, forced
    assert encoder.forced_at[-forced] - t_pli < 0.5
    # A new key frame reached the subscriber.
    assert any(t > t_pli and data[0] & 1 == 0 for t, data in received)


# -- 5. Codec policy ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rejects_offer_without_vp8_or_opus(cleanup: list[Any]) -> None:
    router = new_router(cleanup)
    pub = new_pc()
    cleanup.append(pub)
    transceiver = pub.addTransceiver(SyntheticVideoTrack(), direction="sendonly")
    transceiver.setCodecPreferences(only_codec("video", "video/H264"))
    await pub.setLocalDescription(await pub.createOffer())
    with pytest.raises(CodecNotAllowed, match="VP8") as info:
        await router.publish("h264", pub.localDescription)
    assert isinstance(info.value, ValueError)
    assert "video/H264" in str(info.value)
    assert router.streams == []
    with pytest.raises(UnknownStream):
        router.subscriber_count("h264")

    pub2 = new_pc()
    cleanup.append(pub2)
    transceiver = pub2.addTransceiver(SyntheticAudioTrack(), direction="sendonly")
    transceiver.setCodecPreferences(only_codec("audio", "audio/PCMU"))
    await pub2.setLocalDescription(await pub2.createOffer())
    with pytest.raises(CodecNotAllowed, match="Opus"):
        await router.publish("pcmu", pub2.localDescription)

    # An offer listing H264 first and VP8 second is answered with VP8 only.
    pub3 = new_pc()
    cleanup.append(pub3)
    transceiver = pub3.addTransceiver(SyntheticVideoTrack(), direction="sendonly")
    transceiver.setCodecPreferences(
        only_codec("video", "video/H264")
        + only_codec("video", "video/VP8")
        + only_codec("video", "video/rtx")
    )
    await pub3.setLocalDescription(await pub3.createOffer())
    answer = await router.publish("mixed", pub3.localDescription)
    assert set(answer_codecs(answer)["video"]) == {"video/vp8", "video/rtx"}
    # The router's offer to a subscriber carries only VP8 too.
    offer = await router.subscribe("s", "mixed")
    assert offer.type == "offer"
    assert set(answer_codecs(offer)["video"]) == {"video/vp8", "video/rtx"}
    with pytest.raises(UnknownStream):
        await router.subscribe("s2", "nope")
    with pytest.raises(UnknownSubscription):
        await router.unsubscribe("nope")


# -- 6. Unpublish ends the subscribers' tracks ----------------------------------------


@pytest.mark.asyncio
async def test_unpublish_ends_subscriber_tracks(cleanup: list[Any]) -> None:
    router = new_router(cleanup)
    ended_streams: list[tuple[str, str]] = []
    ended_subs: list[tuple[str, str, str]] = []
    router.on_stream_ended = lambda *a: ended_streams.append(a)
    router.on_subscription_ended = lambda *a: ended_subs.append(a)
    pub = new_pc()
    cleanup.append(pub)
    await publish(router, "alice", [SyntheticVideoTrack(), SyntheticAudioTrack()], pub)
    await wait_connected(pub)
    collectors = []
    for i in range(2):
        pc = new_pc()
        cleanup.append(pc)
        _, tracks = await subscribe(router, f"sub{i}", "alice", pc)
        collectors += [collect(cleanup, t) for t in tracks.values()]
    assert await collectors[0].wait_for(3, timeout=5, good=False)

    await router.unpublish("alice")
    assert await wait_until(lambda: all(c.ended for c in collectors), 5), [
        c.ended for c in collectors
    ]
    assert ended_streams == [("alice", "unpublished")]
    assert sorted(ended_subs) == [
        ("sub0", "alice", "stream_ended"),
        ("sub1", "alice", "stream_ended"),
    ]
    assert router.subscriptions == []
    assert router.streams == []
    with pytest.raises(UnknownStream):
        router.subscriber_count("alice")
    with pytest.raises(UnknownStream):
        await router.subscribe("late", "alice")
    assert router.stats()["frames_forwarded"] > 0  # totals survive the stream


# -- 7. Bounded queues: a stalled subscriber does not grow memory ---------------------


@pytest.mark.asyncio
async def test_backlogged_subscriber_is_bounded_and_recovers(cleanup: list[Any]) -> None:
    router = new_router(cleanup, backlog_packets=8)
    pub = new_pc()
    cleanup.append(pub)
    await publish(router, "alice", [SyntheticVideoTrack(320, 240)], pub)
    await wait_connected(pub)
    healthy = new_pc()
    cleanup.append(healthy)
    _, tracks = await subscribe(router, "healthy", "alice", healthy)
    healthy_collector = collect(cleanup, tracks["video"])
    sub = new_pc()
    cleanup.append(sub)
    _, tracks = await subscribe(router, "slow", "alice", sub)
    collector = collect(cleanup, tracks["video"])
    assert await collector.wait_for(5, timeout=5)

    # "slow"'s socket reports an unwritten backlog past its budget (as a congested
    # egress would): its video is dropped and waits for a key frame; nothing queues.
    (relay,) = router._subscriptions["slow"].relays
    assert relay in relay._group.steady  # its frames so far all went straight out
    relay.backlog = lambda: 1000  # type: ignore[method-assign]
    # A relay whose frames all went straight out skips its policy (FanoutGroup's steady
    # set) until the next check, at most SR_NOTE_INTERVAL later, sees the backlog.
    group = relay._group
    assert await wait_until(lambda: relay not in group.steady, 1)
    dropped_before = router.stats()["frames_dropped"]
    forwarded_before = relay.frames_forwarded
    keyframes_before = relay.keyframes_forwarded
    await asyncio.sleep(1.5)  # ~45 frames at 30 fps
    stats = router.stats()
    slow = stats["subscriptions"]["slow"]["tracks"]["0"]
    assert stats["frames_dropped"] - dropped_before >= 20
    assert slow["dropped_overflow"] > 0
    assert slow["flushes"] > 0
    assert slow["max_backlog"] == 1000
    # Only key frames still go out (each restarts the track: FLUSH_ACCEPT), no delta.
    forwarded = relay.frames_forwarded - forwarded_before
    assert forwarded == relay.keyframes_forwarded - keyframes_before
    # The healthy subscriber is unaffected.
    assert healthy_collector.max_gap(time.monotonic() - 1.5, time.monotonic()) < 0.5

    # The backlog clears: the slow subscriber recovers on a fresh key frame (PLI).
    del relay.backlog
    t_resume = time.monotonic()
    assert await wait_until(lambda: collector.count(good=True, since=t_resume) >= 10, 4)
    assert all(f.good for f in collector.frames)


# -- 8. Encrypted frames pass through unchanged; only the key holder decodes -----------

SESSION = "router-test-session"


@pytest.mark.asyncio
async def test_encrypted_frames_forwarded_and_decodable_only_with_secret(
    cleanup: list[Any],
) -> None:
    from e2ee.transform.protect import protect

    def ring(secret: str) -> KeyRing:
        r = KeyRing(SESSION, kdf_iterations=1000)
        r.set_secret(secret)
        return r

    router = new_router(cleanup)
    pub = new_pc()
    cleanup.append(pub)
    protect(pub, ring("correct horse battery staple"))
    await publish(router, "alice", [SyntheticVideoTrack(320, 240), SyntheticAudioTrack()], pub)
    sent: list[bytes] = []
    video_sender = next(s for s in pub.getSenders() if s.kind == "video")
    record_sent_wire_frames(video_sender, sent)
    await wait_connected(pub)

    good = new_pc()
    cleanup.append(good)
    protect(good, ring("correct horse battery staple"))
    good_wire = record_received_frames(good)
    _, good_tracks = await subscribe(router, "good", "alice", good)
    bad = new_pc()
    cleanup.append(bad)
    protect(bad, ring("tr0ub4dor&3 is not a good secret"))
    _, bad_tracks = await subscribe(router, "bad", "alice", bad)
    good_v, good_a = (
        collect(cleanup, good_tracks["video"]),
        collect(cleanup, good_tracks["audio"]),
    )
    bad_v = collect(cleanup, bad_tracks["video"])
    bad_a = collect(cleanup, bad_tracks["audio"])

    assert await good_v.wait_for(20, timeout=6)
    assert await good_a.wait_for(10, timeout=3)
    await asyncio.sleep(0.5)
    assert bad_v.count() == 0
    assert bad_a.count() == 0

    # What arrived is exactly the publisher's encrypted wire frames.
    sent_set = set(sent)
    assert len(good_wire) >= 20
    assert all(data in sent_set for _, data in good_wire)
    # ...and really encrypted: the router saw SFrame headers after the clear bytes.
    video = next(
        t for t in router.stats()["streams"]["alice"]["tracks"].values() if t["kind"] == "video"
    )
    assert video["not_sframe"] == 0
    assert video["sframe_kid"] is not None
    assert video["sframe_samples_consistent"] >= 2
    assert video["sframe_samples_consistent"] > video["sframe_samples_inconsistent"]
    assert router.stats()["frames_decoded"] == 0


# -- Publisher leaving without unpublish ------------------------------------------------


@pytest.mark.asyncio
async def test_publisher_disconnect_ends_stream(cleanup: list[Any]) -> None:
    router = new_router(cleanup)
    ended: list[tuple[str, str]] = []
    router.on_stream_ended = lambda *a: ended.append(a)
    pub = new_pc()
    cleanup.append(pub)
    await publish(router, "alice", [SyntheticVideoTrack(), SyntheticAudioTrack()], pub)
    await wait_connected(pub)
    sub = new_pc()
    cleanup.append(sub)
    _, tracks = await subscribe(router, "bob", "alice", sub)
    collectors = [collect(cleanup, t) for t in tracks.values()]
    assert await collectors[0].wait_for(3, timeout=5, good=False)

    await pub.close()  # RTCP BYE / DTLS close reach the router's receivers
    assert await wait_until(lambda: all(c.ended for c in collectors), 5)
    assert ended == [("alice", "publisher_disconnected")]
    assert router.streams == []
    assert router.subscriptions == []


# -- The forwarding path with injected frames (no network) -----------------------------


@pytest.mark.asyncio
async def test_forwarder_gating_with_injected_frames(
    cleanup: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiortc.mediastreams import MediaStreamError
    from aiortc.rtcrtpparameters import (
        RTCRtpCodecParameters,
        RTCRtpHeaderExtensionParameters,
        RTCRtpSendParameters,
    )

    from e2ee.wire.rtp import parse_rtp_header

    key = (FIXTURES / "vp8_320x240_00_key.bin").read_bytes()
    d1 = (FIXTURES / "vp8_320x240_01_delta.bin").read_bytes()
    d2 = (FIXTURES / "vp8_320x240_02_delta.bin").read_bytes()
    broken_key = key[:3] + b"\x00\x00\x00" + key[6:]  # key bit set, no start code

    router = new_router(cleanup, pli_interval=10.0)
    pub = new_pc()
    cleanup.append(pub)
    await publish(router, "alice", [SyntheticVideoTrack()], pub)  # never connected
    await router.subscribe("bob", "alice")
    (forwarder,) = router._streams["alice"].forwarders
    (relay,) = router._subscriptions["bob"].relays

    # The wire: SRTP "protect" is the identity and the socket a list, so what the relay
    # writes can be read back (the real path is exercised by every test above).
    wire: list[bytes] = []

    class Socket:
        def sendto(self, data: bytes, address: Any) -> None:
            wire.append(data)

        def get_write_buffer_size(self) -> int:
            return 0

    monkeypatch.setattr(compat, "rtp_path", lambda sender: (bytes, Socket(), ("127.0.0.1", 9)))
    (sender,) = [t.sender for t in router._subscriptions["bob"].pc.getTransceivers()]
    relay._configure(
        RTCRtpSendParameters(
            codecs=[RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)],
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(
                    id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                ),
            ],
            muxId="0",
        )
    )
    timestamps = iter(range(0, 10**9, 3000))

    def inject(frame: bytes, split: int = 2) -> int:
        # As a publisher packetizes (RFC 7741 §4): a descriptor with PictureID on each
        # packet, S=1 on the first.
        size = -(-len(frame) // split)
        parts = [frame[i : i + size] for i in range(0, len(frame), size)]
        payloads = [bytes([0x90 if i == 0 else 0x80, 0x80, 7]) + p for i, p in enumerate(parts)]
        ts = next(timestamps)
        forwarder.on_frame(payloads, ts)
        return ts

    def sent_frames() -> list[tuple[bytes, int, list[int]]]:
        # Reassemble what went out: (VP8 data, RTP timestamp, sequence numbers).
        frames: list[tuple[bytes, int, list[int]]] = []
        data, seqs = b"", []
        for packet in wire:
            header = parse_rtp_header(packet)
            assert header is not None
            assert header.payload_type == 97
            assert header.ssrc == compat.sender_ssrc(sender)
            assert dict(header.extensions)[1] == b"0"  # mid (RFC 8843 §15)
            assert len(dict(header.extensions)[3]) == 3  # abs-send-time
            payload = packet[header.payload_start : header.payload_end]
            data += payload[3:]
            seqs.append(header.sequence_number)
            if header.marker:
                frames.append((data, header.timestamp, seqs))
                data, seqs = b"", []
        wire.clear()
        return frames

    pending = asyncio.ensure_future(relay.recv())  # the sender's start attaches
    await asyncio.sleep(0)
    assert forwarder.keyframe_requests == 1  # joining asks for a key frame
    sent_ts = [inject(data) for data in (d1, d2, broken_key, key, d1, d2)]
    got = sent_frames()
    assert [g[0] for g in got] == [key, d1, d2]  # byte-identical, from the key frame
    offset = (got[0][1] - sent_ts[3]) & 0xFFFFFFFF
    assert [(g[1] - offset) & 0xFFFFFFFF for g in got] == sent_ts[3:]
    seqs = [s for g in got for s in g[2]]
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == list(range(6))  # no gap to NACK
    assert relay.keyframes_forwarded == 1
    assert relay.gate.dropped_waiting == 2  # d1, d2 (broken_key is invalid)
    assert forwarder.invalid_frames == 1
    assert forwarder.keyframe_requests == 2  # the invalid frame counts as a loss

    forwarder.on_gap()  # what the assembler reports after lost packets
    assert forwarder.keyframe_requests == 3
    assert relay.gate.need_keyframe
    inject(d1)
    inject(key)
    inject(d2)
    got = sent_frames()
    assert [g[0] for g in got] == [key, d2]
    assert got[0][2][0] == (seqs[-1] + 1) & 0xFFFF  # still consecutive after the drop
    assert router.stats()["frames_decoded"] == 0
    assert forwarder.invalid_frames == 1

    # A NACK is answered with the packet exactly as it went out.
    first = got[0][2][0]
    relay._resolve()
    await relay.retransmit(first)
    (resent,) = wire
    assert parse_rtp_header(resent).sequence_number == first  # type: ignore[union-attr]
    assert relay.retransmissions == 1
    relay.end()
    with pytest.raises(MediaStreamError):
        await pending
