"""The router's SRTP sender in Rust (e2ee._srtp) between real aiortc peers: a publisher
sends VP8 and Opus through the real Router, a subscriber's aiortc (libsrtp) unprotects
and decodes them, and the router's stats say the Rust sender protected every packet.
Without a Rust sender for the transport, the router falls back to aiortc's libsrtp
session and says why, once.  Byte-level agreement with libsrtp per profile is in
tests/unit/rtc/test_srtp.py; each profile forced through the egress in
tests/unit/sfu/test_egress_srtp.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCConfiguration

from e2ee.rtc import compat, srtp
from e2ee.sfu import Router
from support.media import FrameCollector, SyntheticAudioTrack, SyntheticVideoTrack, new_pc
from support.router import publish, subscribe, wait_connected

pytestmark = pytest.mark.timeout(40)


async def relay_through_router(cleanup: list[Any]) -> tuple[Router, Any, dict[str, Any]]:
    """Publisher -> Router -> one subscriber; returns once the subscriber decoded 15 video
    and 15 audio frames."""
    router = Router(rtc_configuration=RTCConfiguration(iceServers=[]))
    cleanup.append(router)
    pub = new_pc()
    cleanup.append(pub)
    await publish(router, "alice", [SyntheticVideoTrack(320, 240), SyntheticAudioTrack()], pub)
    await wait_connected(pub)
    sub = new_pc()
    cleanup.append(sub)
    _, tracks = await subscribe(router, "bob", "alice", sub)
    video, audio = FrameCollector(tracks["video"]).start(), FrameCollector(tracks["audio"]).start()
    cleanup.extend([video, audio])
    assert await video.wait_for(15, timeout=8), f"video frames: {len(video.frames)}"
    assert await audio.wait_for(15, timeout=4), f"audio frames: {len(audio.frames)}"
    assert {(f.width, f.height) for f in video.frames} == {(320, 240)}
    assert all(f.good for f in video.frames)  # the real pictures, from a key frame on
    per_kind = {t["kind"]: t for t in router.stats()["subscriptions"]["bob"]["tracks"].values()}
    return router, sub, per_kind


@pytest.mark.asyncio
async def test_the_subscriber_decodes_what_the_rust_sender_protected(
    cleanup: list[Any],
) -> None:
    _, sub, per_kind = await relay_through_router(cleanup)
    # The profile aiortc peers negotiate by default, as the subscriber's side sees it.
    dtls = sub.getTransceivers()[0].receiver.transport
    keying = compat.srtp_tx_keying(dtls)
    assert keying is not None
    negotiated = keying[0]
    assert negotiated in srtp.PROFILES
    for kind in ("video", "audio"):
        stats = per_kind[kind]
        assert stats["srtp_backend"] == "rust", stats
        assert stats["srtp_profile"] == negotiated
        assert stats["packets_rust"] == stats["packets_forwarded"] > 0
        assert stats["packets_libsrtp"] == 0
        # Written by the Rust sender's sendmmsg (a loopback socket takes every datagram).
        assert stats["packets_mmsg"] == stats["packets_rust"]


@pytest.mark.asyncio
async def test_the_subscriber_hears_what_was_relayed_in_rtcp_sr(cleanup: list[Any]) -> None:
    """The relay notes its counts on the sender every SR_NOTE_INTERVAL at most: the
    subscriber's view of the router's RTCP SR (RFC 3550 §6.4.1) still counts packets."""
    router, sub, _ = await relay_through_router(cleanup)
    for receiver in sub.getReceivers():
        kind = receiver.track.kind
        for _ in range(100):  # aiortc sends an SR every 0.5 to 1.5 s
            reports = [
                s for s in (await receiver.getStats()).values() if s.type == "remote-outbound-rtp"
            ]
            if reports and reports[0].packetsSent > 0:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"no RTCP SR with packets for {kind}")
        tracks = router.stats()["subscriptions"]["bob"]["tracks"].values()
        forwarded = {t["kind"]: t["packets_forwarded"] for t in tracks}[kind]
        assert 0 < reports[0].packetsSent <= forwarded


@pytest.mark.asyncio
async def test_without_a_rust_sender_libsrtp_protects_and_says_why(
    cleanup: list[Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(srtp, "sender_for_transport", lambda dtls, protect: "forced by a test")
    caplog.set_level("INFO", logger="e2ee.rtc.srtp")
    _, _, per_kind = await relay_through_router(cleanup)
    for kind in ("video", "audio"):
        stats = per_kind[kind]
        assert stats["srtp_backend"] == "libsrtp", stats
        assert stats["packets_libsrtp"] == stats["packets_forwarded"] > 0
        assert stats["packets_rust"] == 0
    # Video and audio share the subscriber's one (bundled) transport: one line.
    lines = [r.getMessage() for r in caplog.records if r.name == "e2ee.rtc.srtp"]
    assert lines == ["router: SRTP by aiortc's libsrtp on this transport: forced by a test"]
