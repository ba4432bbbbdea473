"""No media-derived RTP header extension in an E2EE session.

aiortc offers ``urn:ietf:params:rtp-hdrext:ssrc-audio-level`` and fills it from the raw
audio before encryption (RFC 6464 §5): negotiated, it would show the router who speaks
when.  Checked here:

* :func:`e2ee.transform.strip_media_derived_extensions` on SDP text, and that aiortc
  given a stripped remote offer or answer does not negotiate the extension;
* a real protected publisher whose offer lists it, through an in-process
  ``Router(e2ee=True)``: the router's answer and its offer to a subscriber leave it out,
  and no packet the publisher sends carries it; media still flows end to end.

The async tests run on pytest-asyncio; what they create goes into the ``cleanup`` fixture
(tests/conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)

from e2ee import KeyRing
from e2ee.rtc import compat
from e2ee.sfu import Router
from e2ee.tools.synthetic import FrameCollector, SyntheticAudioTrack, SyntheticVideoTrack
from e2ee.transform import protect, strip_media_derived_extensions
from e2ee.wire.extmap import MEDIA_DERIVED_EXTENSIONS, extmap_uris
from e2ee.wire.rtp import is_rtcp, parse_rtp_header
from support.media import new_pc
from support.router import wait_connected

pytestmark = pytest.mark.timeout(60)

SESSION = "trust-router-session"
SECRET = "correct horse battery staple"
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
CSRC_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:csrc-audio-level"


def new_ring() -> KeyRing:
    ring = KeyRing(SESSION, kdf_iterations=1000)
    ring.set_secret(SECRET)
    return ring


def negotiated_uris(transceiver: RTCRtpTransceiver) -> set[str]:
    return {e.uri for e in compat.negotiated_header_extensions(transceiver)}


def extmap_ids(sdp: str, kind: str) -> dict[str, int]:
    """``{uri: id}`` of the ``a=extmap`` lines of the first ``kind`` m-section."""
    out: dict[str, int] = {}
    section = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            if section == kind:
                break
            section = line[2:].split()[0]
        elif section == kind and line.startswith("a=extmap:"):
            value, uri = line[len("a=extmap:") :].split()[:2]
            out[uri] = int(value.split("/")[0])
    return out


# -- 1. The SDP helper --------------------------------------------------------------------

SDP = (
    "v=0\r\n"
    "o=- 1 1 IN IP4 0.0.0.0\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "a=extmap-allow-mixed\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
    "a=extmap:3/sendonly urn:ietf:params:rtp-hdrext:csrc-audio-level vad=on\r\n"
    "a=extmap:4 URN:IETF:PARAMS:RTP-HDREXT:SSRC-AUDIO-LEVEL\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"
    "a=rtpmap:96 VP8/90000\r\n"
)


def test_strip_removes_only_the_media_derived_extmap_lines() -> None:
    stripped = strip_media_derived_extensions(SDP)
    removed = [line for line in SDP.split("\r\n") if line not in stripped.split("\r\n")]
    assert removed == [
        "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:3/sendonly urn:ietf:params:rtp-hdrext:csrc-audio-level vad=on",
        "a=extmap:4 URN:IETF:PARAMS:RTP-HDREXT:SSRC-AUDIO-LEVEL",
    ]
    assert stripped.count("\r\n") == SDP.count("\r\n") - 3  # line endings kept
    assert "a=extmap-allow-mixed\r\n" in stripped
    assert extmap_uris(stripped) == [
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    ]
    assert strip_media_derived_extensions(stripped) == stripped
    assert strip_media_derived_extensions(SDP.replace("\r\n", "\n")) == stripped.replace(
        "\r\n", "\n"
    )
    assert {AUDIO_LEVEL, CSRC_AUDIO_LEVEL} == MEDIA_DERIVED_EXTENSIONS


@pytest.mark.asyncio
async def test_aiortc_does_not_negotiate_what_a_stripped_description_leaves_out(
    cleanup: list[Any],
) -> None:
    offerer, answerer, plain = new_pc(), new_pc(), new_pc()
    cleanup += [offerer, answerer, plain]
    audio = offerer.addTransceiver(SyntheticAudioTrack(), direction="sendonly")
    offer = await offerer.createOffer()
    assert AUDIO_LEVEL in extmap_uris(offer.sdp)  # aiortc offers it

    # Answerer side: a stripped remote offer, so neither it nor its answer has it.
    await answerer.setRemoteDescription(
        RTCSessionDescription(strip_media_derived_extensions(offer.sdp), "offer")
    )
    (received,) = answerer.getTransceivers()
    assert AUDIO_LEVEL not in negotiated_uris(received)
    assert "urn:ietf:params:rtp-hdrext:sdes:mid" in negotiated_uris(received)
    answer = await answerer.createAnswer()
    assert AUDIO_LEVEL not in extmap_uris(answer.sdp)

    # Offerer side: a plain aiortc answer lists it; stripped, it is not negotiated.
    await offerer.setLocalDescription(offer)
    await plain.setRemoteDescription(offerer.localDescription)
    plain_answer = await plain.createAnswer()
    assert AUDIO_LEVEL in extmap_uris(plain_answer.sdp)
    assert AUDIO_LEVEL in negotiated_uris(audio)  # as offered, until the answer
    await offerer.setRemoteDescription(
        RTCSessionDescription(strip_media_derived_extensions(plain_answer.sdp), "answer")
    )
    assert AUDIO_LEVEL not in negotiated_uris(audio)
    assert "urn:ietf:params:rtp-hdrext:sdes:mid" in negotiated_uris(audio)


# -- 2. Through an E2EE router ------------------------------------------------------------


class WireRecorder:
    """Every packet a peer connection's transports actually send (inside the E2EE guard,
    so only what it admitted): hook before :func:`protect`."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.packets: list[bytes] = []
        for transceiver in pc.getTransceivers():
            compat.hook_transport_send(transceiver.sender.transport, self._wrap, key=self)

    def _wrap(self, send: compat.SendRtp) -> compat.SendRtp:
        async def recording_send(data: bytes) -> None:
            self.packets.append(data)
            await send(data)

        return recording_send


@pytest.mark.asyncio
async def test_an_e2ee_router_never_negotiates_the_audio_level(cleanup: list[Any]) -> None:
    router = Router(e2ee=True, rtc_configuration=RTCConfiguration(iceServers=[]))
    cleanup.append(router)

    # A protected publisher; nobody strips anything on the client side here.
    pub = new_pc()
    cleanup.append(pub)
    video = pub.addTransceiver(SyntheticVideoTrack(320, 240), direction="sendonly")
    audio = pub.addTransceiver(SyntheticAudioTrack(), direction="sendonly")
    wire = WireRecorder(pub)
    transform = protect(pub, new_ring())
    await pub.setLocalDescription(await pub.createOffer())
    offered = extmap_ids(pub.localDescription.sdp, "audio")
    assert AUDIO_LEVEL in offered

    answer = await router.publish("alice", pub.localDescription)
    assert not MEDIA_DERIVED_EXTENSIONS & set(extmap_uris(answer.sdp))
    answered = {kind: extmap_ids(answer.sdp, kind) for kind in ("audio", "video")}
    assert "urn:ietf:params:rtp-hdrext:sdes:mid" in answered["audio"]
    await pub.setRemoteDescription(answer)
    assert AUDIO_LEVEL not in negotiated_uris(audio)
    protected = transform.sender_for(audio.sender)
    assert protected is not None
    assert protected.guard.forbidden_extensions == frozenset()
    await wait_connected(pub)

    # A protected subscriber: the router's offer leaves it out too.
    sub = new_pc()
    cleanup.append(sub)
    sub_transform = protect(sub, new_ring())
    collectors: dict[str, FrameCollector] = {}

    @sub.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        collectors[track.kind] = FrameCollector(track).start()
        cleanup.append(collectors[track.kind])

    offer = await router.subscribe("bob<-alice", "alice")
    assert not MEDIA_DERIVED_EXTENSIONS & set(extmap_uris(offer.sdp))
    await sub.setRemoteDescription(offer)
    await sub.setLocalDescription(await sub.createAnswer())
    await router.accept_answer("bob<-alice", sub.localDescription)
    await wait_connected(sub)
    for transceiver in sub.getTransceivers():
        assert not MEDIA_DERIVED_EXTENSIONS & negotiated_uris(transceiver)

    # Media flows end to end, decrypted at the subscriber.
    assert await collectors["video"].wait_for(10, timeout=10)
    assert await collectors["audio"].wait_for(10, timeout=10)
    for stats in sub_transform.stats():
        assert stats["frames_ok"] > 0
        assert stats["frames_failed"] == 0
    assert router.stats()["frames_decoded"] == 0

    # No packet the publisher sent carries the audio level (nor any extension the
    # answer did not list), and the guard had nothing to block.
    pairs = (("audio", audio), ("video", video))
    ssrcs = {kind: set(compat.sender_ssrcs(t.sender)) for kind, t in pairs}
    counts = dict.fromkeys(ssrcs, 0)
    for data in wire.packets:
        if is_rtcp(data):
            continue
        header = parse_rtp_header(data)
        assert header is not None
        (kind,) = [k for k, s in ssrcs.items() if header.ssrc in s]
        counts[kind] += 1
        assert offered[AUDIO_LEVEL] not in header.extension_ids
        assert header.extension_ids <= set(answered[kind].values())
    assert counts["audio"] > 20
    assert counts["video"] > 10
    for stats in transform.stats():
        if stats["direction"] == "send":
            assert stats["packets_blocked"] == 0


@pytest.mark.asyncio
async def test_a_router_without_e2ee_keeps_its_negotiation(cleanup: list[Any]) -> None:
    router = Router(e2ee=False, rtc_configuration=RTCConfiguration(iceServers=[]))
    cleanup.append(router)
    pub = new_pc()
    cleanup.append(pub)
    pub.addTransceiver(SyntheticAudioTrack(), direction="sendonly")
    await pub.setLocalDescription(await pub.createOffer())
    answer = await router.publish("alice", pub.localDescription)
    assert AUDIO_LEVEL in extmap_uris(answer.sdp)
