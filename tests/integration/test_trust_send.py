"""The client is the trust anchor: nothing plaintext or media-derived leaves a protected
connection, even if aiortc stops calling the E2EE hooks.

* :class:`~e2ee.transform.guard.OutboundGuard` on crafted packets (RTP, RTX, RTCP,
  VP8 frame starts and continuations, Opus, KID rotation, header extensions);
* a real protected publisher -> subscriber pair on loopback, whose publisher's hooks are
  then bypassed (:func:`e2ee.rtc.compat.bypass_sender_hooks`): nothing more reaches the
  network or the subscriber, and the publisher reports ``encryption_error``;
* the per-frame hook keeps the RFC 6464 audio level off the wire even where it was
  negotiated;
* a KID collision makes the affected video sender's next frame, under its new KID, a key
  frame.

The async tests run on pytest-asyncio; what they create goes into the ``cleanup`` fixture
(tests/conftest.py).  Secrets are derived with 1000 PBKDF2 iterations.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from typing import Any

import av
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, wrap_rtx

from e2ee import FrameDecryptor, FrameEncryptor, KeyRing
from e2ee.errors import EncryptionInternalError, Vp8ParseError
from e2ee.rtc import compat
from e2ee.tools.synthetic import FrameCollector, SyntheticAudioTrack, SyntheticVideoTrack
from e2ee.transform import E2eeEvent, E2eeTransform, protect
from e2ee.transform.guard import KIDS_KEPT, GuardedTrack, OutboundGuard, _vp8_descriptor
from e2ee.wire.codecs import clear_prefix_length
from e2ee.wire.extmap import MEDIA_DERIVED_EXTENSIONS
from e2ee.wire.rtp import is_rtcp, parse_rtp_header
from e2ee.wire.sframe_header import parse_sframe_header
from e2ee.wire.vp8 import parse_vp8_payload_descriptor
from support import FIXTURES
from support.media import connect, new_pc
from support.router import RecordingQueue

pytestmark = pytest.mark.timeout(60)

SESSION = "trust-send-session"
SECRET = "correct horse battery staple"
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


def new_ring(secret: str | None = SECRET) -> KeyRing:
    ring = KeyRing(SESSION, kdf_iterations=1000)
    if secret is not None:
        ring.set_secret(secret)
    return ring


# -- packets by hand ---------------------------------------------------------------------

SSRC, RTX_SSRC, AUDIO_SSRC = 0x1111, 0x2222, 0x3333


def rtp(
    ssrc: int,
    timestamp: int,
    payload: bytes,
    *,
    seq: int = 1,
    pt: int = 96,
    marker: bool = False,
    extensions: list[tuple[int, bytes]] | None = None,
) -> bytes:
    """An RTP packet (RFC 3550), with one-byte header extensions (RFC 8285) if given."""
    first = 0x80 | (0x10 if extensions else 0)
    head = struct.pack("!BBHII", first, pt | (0x80 if marker else 0), seq, timestamp, ssrc)
    if extensions:
        block = b"".join(bytes([i << 4 | (len(v) - 1)]) + v for i, v in extensions)
        block += b"\x00" * (-len(block) % 4)
        head += struct.pack("!HH", 0xBEDE, len(block) // 4) + block
    return head + payload


def rtx(packet: bytes, rtx_ssrc: int = RTX_SSRC, seq: int = 500) -> bytes:
    """The RTX retransmission of ``packet`` (RFC 4588 §4), as aiortc makes it."""
    header = parse_rtp_header(packet)
    assert header is not None
    original = RtpPacket(
        payload_type=header.payload_type,
        sequence_number=header.sequence_number,
        timestamp=header.timestamp,
        ssrc=header.ssrc,
        payload=packet[header.payload_start : header.payload_end],
    )
    return wrap_rtx(original, payload_type=97, sequence_number=seq, ssrc=rtx_ssrc).serialize()


def vp8_packets(frame: bytes, timestamp: int, ssrc: int = SSRC, size: int = 400) -> list[bytes]:
    """``frame`` in RTP packets with VP8 payload descriptors (RFC 7741 §4.2: X=1, I=1, a
    7-bit PictureID; S=1 on the first packet only)."""
    chunks = [frame[i : i + size] for i in range(0, len(frame), size)]
    return [
        rtp(ssrc, timestamp, bytes([0x90 if i == 0 else 0x80, 0x80, 0x05]) + chunk, seq=i + 1)
        for i, chunk in enumerate(chunks)
    ]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def guarded(kind: str = "video") -> tuple[OutboundGuard, GuardedTrack, list[str], list[str]]:
    blocked: list[str] = []
    unknown: list[str] = []
    guard = OutboundGuard(on_unknown=unknown.append)
    track = GuardedTrack(kind, on_blocked=blocked.append)
    if kind == "video":
        guard.register(track, SSRC, RTX_SSRC)
    else:
        guard.register(track, AUDIO_SSRC)
    return guard, track, blocked, unknown


# -- 1. The guard on crafted packets ------------------------------------------------------


def test_encrypted_vp8_frames_and_their_retransmissions_pass() -> None:
    guard, track, blocked, _ = guarded()
    encryptor = FrameEncryptor(new_ring(), "vp8")
    for n, name in enumerate(["vp8_640x480_00_key.bin", "vp8_640x480_01_delta.bin"]):
        wire = encryptor.encrypt(fixture(name))
        assert encryptor.kid is not None
        track.allow_kid(encryptor.kid)
        packets = vp8_packets(wire, timestamp=3000 * n)
        assert all(guard.admit(p) for p in packets)
        assert all(guard.admit(rtx(p)) for p in packets)  # RTX: same rules, inside
    assert track.packets_blocked == track.frames_blocked == 0
    assert blocked == []


def test_plain_vp8_is_blocked_start_and_continuations() -> None:
    guard, track, blocked, _ = guarded()
    encryptor = FrameEncryptor(new_ring(), "vp8")
    encryptor.encrypt(fixture("vp8_640x480_00_key.bin"))
    assert encryptor.kid is not None
    track.allow_kid(encryptor.kid)

    plain = vp8_packets(fixture("vp8_640x480_00_key.bin"), timestamp=9000)
    assert len(plain) >= 3
    assert not any(guard.admit(p) for p in plain)
    assert not any(guard.admit(rtx(p)) for p in plain)
    assert track.frames_blocked == 1  # one frame, however many packets
    assert track.packets_blocked == 2 * len(plain)
    assert len(blocked) == 1 + len(plain)  # once per blocked frame and per RTX packet
    assert "SFrame header" in blocked[0] or "KID" in blocked[0]

    # A delta frame too; and a continuation of a frame whose start passed passes only
    # with that frame's timestamp.
    assert not any(guard.admit(p) for p in vp8_packets(fixture("vp8_640x480_01_delta.bin"), 12000))
    good = vp8_packets(encryptor.encrypt(fixture("vp8_640x480_01_delta.bin")), 15000, size=200)
    assert guard.admit(good[0])
    assert guard.admit(good[1])
    moved = rtp(SSRC, 15001, good[1][12:])
    assert not guard.admit(moved)
    assert track.frames_blocked == 3


def test_only_this_senders_recent_kids_pass() -> None:
    guard, track, _, _ = guarded()
    ring = new_ring()
    mine, other = FrameEncryptor(ring, "vp8"), FrameEncryptor(ring, "vp8")
    frame = fixture("vp8_640x480_01_delta.bin")
    wire_mine, wire_other = mine.encrypt(frame), other.encrypt(frame)
    assert mine.kid is not None
    assert mine.kid != other.kid
    track.allow_kid(mine.kid)
    assert guard.admit(vp8_packets(wire_mine, 1)[0])
    # Same secret, same shape, another sender's KID: refused.
    assert not guard.admit(vp8_packets(wire_other, 2)[0])

    # A re-key keeps the last KIDS_KEPT KIDs: frames in flight under them still pass.
    kids = [mine.kid + 1 + i for i in range(KIDS_KEPT)]
    for kid in kids:
        track.allow_kid(kid)
    assert track.kids == tuple(reversed(kids))
    assert not guard.admit(vp8_packets(wire_mine, 3)[0])  # pushed out
    track.allow_kid(mine.kid)
    assert guard.admit(vp8_packets(wire_mine, 4)[0])


def test_a_non_minimal_or_truncated_sframe_header_is_blocked() -> None:
    guard, track, _, _ = guarded()
    track.allow_kid(5)
    tag = bytes([0x31, 0x02, 0x00])  # a VP8 delta frame tag (bit 0 set)
    descriptor = bytes([0x90, 0x80, 0x01])
    assert parse_sframe_header(b"\x50" + b"\x00" * 16) == (5, 0, 1)
    assert guard.admit(rtp(SSRC, 1, descriptor + tag + b"\x50" + b"\x00" * 16))
    assert not guard.admit(rtp(SSRC, 2, descriptor + tag + b"\x80\x05" + b"\x00" * 16))
    assert not guard.admit(rtp(SSRC, 3, descriptor + tag + b"\x90"))  # its 2 KID bytes missing
    assert not guard.admit(rtp(SSRC, 4, descriptor + tag))  # no header at all
    assert not guard.admit(rtp(SSRC, 5, descriptor))  # no frame tag
    assert not guard.admit(rtp(SSRC, 6, b""))  # no descriptor


def test_opus_every_packet_needs_an_sframe_header_with_an_allowed_kid() -> None:
    guard, track, blocked, _ = guarded("audio")
    encryptor = FrameEncryptor(new_ring(), "opus")
    packet = fixture("opus_48k_20ms_mono_00.bin")
    wire = encryptor.encrypt(packet)
    assert encryptor.kid is not None
    track.allow_kid(encryptor.kid)
    assert guard.admit(rtp(AUDIO_SSRC, 960, wire, pt=111))
    assert not guard.admit(rtp(AUDIO_SSRC, 1920, packet, pt=111))
    assert not guard.admit(rtp(AUDIO_SSRC, 2880, wire[:1], pt=111))  # TOC only
    assert not guard.admit(rtp(AUDIO_SSRC, 3840, b"", pt=111))
    assert track.frames_blocked == 3
    assert len(blocked) == 3


def test_rtcp_passes_unknown_and_malformed_packets_do_not() -> None:
    guard, _, _, unknown = guarded()
    sender_report = bytes([0x80, 200, 0x00, 0x06]) + b"\x00" * 24
    bye = bytes([0x81, 203, 0x00, 0x01]) + struct.pack("!I", SSRC)
    assert is_rtcp(sender_report)
    assert is_rtcp(bye)
    assert guard.admit(sender_report)
    assert guard.admit(bye)
    assert not guard.admit(rtp(0x9999, 1, b"\x90\x80\x01anything"))
    assert not guard.admit(b"\x80\x60")  # too short for RTP
    assert not guard.admit(b"\x40" + b"\x00" * 20)  # RTP version 1
    assert guard.unknown_blocked == len(unknown) == 3
    assert "unknown SSRC" in unknown[0]


def test_a_forbidden_header_extension_is_blocked() -> None:
    guard, track, blocked, _ = guarded("audio")
    encryptor = FrameEncryptor(new_ring(), "opus")
    wire = encryptor.encrypt(fixture("opus_48k_20ms_mono_00.bin"))
    assert encryptor.kid is not None
    track.allow_kid(encryptor.kid)
    mid = (1, b"0")
    level = (2, bytes([0x80 | 30]))
    assert guard.admit(rtp(AUDIO_SSRC, 1, wire, extensions=[mid, level]))
    track.forbidden_extensions = frozenset({2})
    assert guard.admit(rtp(AUDIO_SSRC, 2, wire, extensions=[mid]))
    assert not guard.admit(rtp(AUDIO_SSRC, 3, wire, extensions=[mid, level]))
    assert "header extension" in blocked[-1]


def test_the_fast_vp8_descriptor_reading_matches_the_parser() -> None:
    rnd = random.Random(7741)
    interesting = [0x00, 0x10, 0x17, 0x20, 0x30, 0x40, 0x7F, 0x80, 0x90, 0xFF]
    for _ in range(20_000):
        payload = bytes(
            rnd.choice([*interesting, rnd.randrange(256)]) for _ in range(rnd.randrange(8))
        )
        try:
            descriptor = parse_vp8_payload_descriptor(payload)
        except Vp8ParseError:
            expected = None
        else:
            expected = (descriptor.size, descriptor.has_payload_header)
        assert _vp8_descriptor(payload) == expected, payload.hex()


def test_the_rtp_parser_reads_what_aiortc_writes() -> None:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(id=2, uri=AUDIO_LEVEL),
            ]
        )
    )
    packet = RtpPacket(payload_type=111, sequence_number=7, timestamp=1234, ssrc=AUDIO_SSRC)
    packet.payload = b"\x78payload"
    packet.marker = 1
    packet.csrc = [42]
    packet.extensions.mid = "audio0"
    packet.extensions.audio_level = (True, 30)
    packet.padding_size = 4
    data = packet.serialize(extensions)
    header = parse_rtp_header(data)
    assert header is not None
    assert (header.ssrc, header.timestamp, header.sequence_number) == (AUDIO_SSRC, 1234, 7)
    assert header.marker
    assert header.payload_type == 111
    assert header.csrcs == (42,)
    assert header.extension_ids == {1, 2}
    assert dict(header.extensions) == {1: b"audio0", 2: bytes([0x80 | 30])}
    assert data[header.payload_start : header.payload_end] == b"\x78payload"
    assert not is_rtcp(data)


# -- real peers --------------------------------------------------------------------------


class Subscriber:
    """A protected receiving peer that records, per kind, every reassembled frame as it
    arrives (before decryption) and collects what its decoders output."""

    def __init__(self, ring: KeyRing, cleanup: list[Any]) -> None:
        self.pc = new_pc()
        cleanup.append(self.pc)
        self.transform = protect(self.pc, ring)
        self.raw: dict[str, list[tuple[float, bytes]]] = {"video": [], "audio": []}
        self.collectors: dict[str, FrameCollector] = {}

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            for transceiver in self.pc.getTransceivers():
                receiver = transceiver.receiver
                if receiver.track is track:  # outside the decrypting queue: wire frames
                    compat.set_decoder_queue(
                        receiver,
                        RecordingQueue(compat.decoder_queue(receiver), self.raw[track.kind]),
                    )
            collector = self.collectors[track.kind] = FrameCollector(track).start()
            cleanup.append(collector)


class WireRecorder:
    """Every packet a peer connection's transports actually send (inside the E2EE guard,
    so only what it admitted): hook before :func:`protect`."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.packets: list[tuple[float, bytes]] = []
        for transceiver in pc.getTransceivers():
            compat.hook_transport_send(transceiver.sender.transport, self._wrap, key=self)

    def _wrap(self, send: compat.SendRtp) -> compat.SendRtp:
        async def recording_send(data: bytes) -> None:
            self.packets.append((time.monotonic(), data))
            await send(data)

        return recording_send

    def rtp_from(self, ssrcs: set[int], since: float = 0.0) -> list[bytes]:
        out = []
        for at, data in self.packets:
            if at < since or is_rtcp(data):
                continue
            header = parse_rtp_header(data)
            assert header is not None
            if header.ssrc in ssrcs:
                out.append(data)
        return out


def sent(transform: E2eeTransform, kind: str) -> dict[str, Any]:
    (stats,) = [s for s in transform.stats() if s["direction"] == "send" and s["kind"] == kind]
    return stats


def received(transform: E2eeTransform, kind: str) -> dict[str, Any]:
    (stats,) = [s for s in transform.stats() if s["direction"] == "recv" and s["kind"] == kind]
    return stats


def plain_vp8_decodes(frames: list[bytes]) -> int:
    """How many of ``frames`` libvpx decodes to a picture, fed in order as plain VP8."""
    decoder = av.CodecContext.create("libvpx", "r")
    pictures = 0
    for data in frames:
        with contextlib.suppress(av.error.FFmpegError):
            pictures += len(decoder.decode(av.Packet(data)))
    return pictures


def sframe_kid(codec: str, frame: bytes) -> int | None:
    header = parse_sframe_header(frame, clear_prefix_length(codec, frame))
    return None if header is None else header[0]


async def publisher_with_call(
    cleanup: list[Any],
) -> tuple[
    RTCPeerConnection,
    E2eeTransform,
    list[E2eeEvent],
    dict[str, RTCRtpTransceiver],
    WireRecorder,
    Subscriber,
]:
    """A protected publisher of synthetic video and audio, connected to a protected
    subscriber under the same secret, media flowing."""
    pub = new_pc()
    cleanup.append(pub)
    transceivers = {
        "video": pub.addTransceiver(SyntheticVideoTrack(320, 240), direction="sendonly"),
        "audio": pub.addTransceiver(SyntheticAudioTrack(), direction="sendonly"),
    }
    wire = WireRecorder(pub)
    events: list[E2eeEvent] = []
    transform = protect(pub, new_ring(), on_event=events.append)
    sub = Subscriber(new_ring(), cleanup)
    await connect(pub, sub.pc)
    assert await sub.collectors["video"].wait_for(15, timeout=10)
    assert await sub.collectors["audio"].wait_for(10, timeout=10)
    return pub, transform, events, transceivers, wire, sub


# -- 2. Bypassed hooks: nothing leaves ----------------------------------------------------


@pytest.mark.asyncio
async def test_the_guard_sits_on_every_transport_a_sender_uses(cleanup: list[Any]) -> None:
    pub, transform, _, transceivers, _, _ = await publisher_with_call(cleanup)
    # BUNDLE moved the audio sender onto the video sender's transport; both carry
    # the guard, once (installing it again is a no-op).
    transports = {id(t.sender.transport): t.sender.transport for t in transceivers.values()}
    assert len(transports) == 1
    for transport in transports.values():
        assert not compat.hook_transport_send(transport, lambda send: send, key=transform.guard)
    # A transceiver added later is guarded at once, on whatever transport it has.
    late = pub.addTransceiver("video", direction="sendonly")
    assert not compat.hook_transport_send(
        late.sender.transport, lambda send: send, key=transform.guard
    )
    protected = transform.sender_for(late.sender)
    assert protected is not None
    media, rtx_ssrc = compat.sender_ssrcs(late.sender)
    assert transform.guard.track(media) is transform.guard.track(rtx_ssrc) is protected.guard


@pytest.mark.asyncio
async def test_bypassed_hooks_send_nothing_and_report_encryption_errors(cleanup: list[Any]) -> None:
    _, transform, events, transceivers, wire, sub = await publisher_with_call(cleanup)
    ssrcs = {kind: set(compat.sender_ssrcs(t.sender)) for kind, t in transceivers.items()}

    # (c) Hooks intact: media flows, decrypts, and the guard blocked nothing.
    for kind in ("video", "audio"):
        assert sent(transform, kind)["frames_encrypted"] > 5
        assert sent(transform, kind)["frames_blocked"] == 0
        assert received(sub.transform, kind)["frames_ok"] > 5
        assert received(sub.transform, kind)["frames_failed"] == 0
    assert sub.collectors["video"].count(good=True) >= 15
    assert not [e for e in events if e.type == "encryption_error"]
    assert wire.rtp_from(ssrcs["video"])
    assert wire.rtp_from(ssrcs["audio"])

    # aiortc stops calling the E2EE hooks: plain encoders, aiortc's own frame step.
    for t in transceivers.values():
        compat.bypass_sender_hooks(t.sender)
    bypassed = time.monotonic()
    settled = bypassed + 0.3  # the frame being encoded at that moment was encrypted
    await asyncio.sleep(2.0)

    for t in transceivers.values():  # the bypass took effect: aiortc encodes in clear
        encoder = compat.sender_encoder(t.sender)
        assert encoder is not None
        assert type(encoder).__module__.startswith("aiortc.codecs")

    for kind in ("video", "audio"):
        # Nothing of it reached the network...
        assert wire.rtp_from(ssrcs[kind], since=settled) == []
        # ...so the subscriber received nothing more, and decoded nothing more.
        assert [at for at, _ in sub.raw[kind] if at >= settled] == []
        assert sub.collectors[kind].count(since=settled + 0.2) == 0
        # Everything it ever received is an E2EE frame of the publisher.
        assert sub.raw[kind]
        assert all(sframe_kid(kind_codec(kind), f) is not None for _, f in sub.raw[kind])
        stats = sent(transform, kind)
        assert stats["frames_blocked"] > 10, stats
        assert stats["packets_blocked"] >= stats["frames_blocked"]
    # (a) No frame the subscriber got decodes as plain VP8.
    assert plain_vp8_decodes([f for _, f in sub.raw["video"]]) == 0

    # (b) The publisher said so, rate-limited, with EncryptionInternalError.
    errors = [e for e in events if e.type == "encryption_error"]
    assert {e.kind for e in errors} == {"video", "audio"}
    assert all(isinstance(e.error, EncryptionInternalError) for e in errors)
    assert all(e.direction == "send" and "blocked" in e.message for e in errors)
    for kind in ("video", "audio"):
        per_kind = [e for e in errors if e.kind == kind]
        assert len(per_kind) <= 4  # about one a second
        assert sum(e.count for e in per_kind) <= sent(transform, kind)["frames_blocked"]


def kind_codec(kind: str) -> str:
    return "vp8" if kind == "video" else "opus"


# -- 3. The audio level never leaves, even where negotiated -------------------------------


@pytest.mark.asyncio
async def test_the_audio_level_is_not_written_even_when_negotiated(cleanup: list[Any]) -> None:
    # A plain aiortc pair negotiates ssrc-audio-level (nobody stripped it here).
    _, transform, _, transceivers, wire, _ = await publisher_with_call(cleanup)
    negotiated = {e.uri: e.id for e in compat.negotiated_header_extensions(transceivers["audio"])}
    assert AUDIO_LEVEL in negotiated
    # The guard knows the negotiated ID as forbidden...
    protected = transform.sender_for(transceivers["audio"].sender)
    assert protected is not None
    assert protected.guard.forbidden_extensions == {negotiated[AUDIO_LEVEL]}
    # ...and the per-frame hook cleared every frame's level: no packet carries it.
    await asyncio.sleep(0.5)
    audio = wire.rtp_from(set(compat.sender_ssrcs(transceivers["audio"].sender)))
    assert len(audio) > 20
    for data in audio:
        header = parse_rtp_header(data)
        assert header is not None
        assert negotiated[AUDIO_LEVEL] not in header.extension_ids
        assert negotiated["urn:ietf:params:rtp-hdrext:sdes:mid"] in header.extension_ids
    assert sent(transform, "audio")["packets_blocked"] == 0
    assert AUDIO_LEVEL in MEDIA_DERIVED_EXTENSIONS


# -- 4. KID collision: a key frame under the new KID --------------------------------------


@pytest.mark.asyncio
async def test_a_kid_collision_forces_a_key_frame_under_the_new_kid(cleanup: list[Any]) -> None:
    _, transform, events, transceivers, _, sub = await publisher_with_call(cleanup)
    protected = transform.sender_for(transceivers["video"].sender)
    assert protected is not None
    assert protected.encryptor is not None
    old_kid = protected.encryptor.kid
    assert old_kid is not None
    requests = protected.keyframe_requests

    # Another client drew the same KID under the same secret; one of its frames
    # authenticates at a decryptor of the publisher's ring.
    other = KeyRing(SESSION, kdf_iterations=1000, kid_source=lambda _id: old_kid)
    other.set_secret(SECRET)
    wire = FrameEncryptor(other, "vp8").encrypt(fixture("vp8_320x240_00_key.bin"))
    collided_at = time.monotonic()
    FrameDecryptor(transform.ring, "vp8").decrypt(wire)
    assert transform.ring.collided_kids == {old_kid}
    await asyncio.sleep(1.0)

    assert protected.keyframe_requests == requests + 1
    new_kid = protected.encryptor.kid
    assert new_kid is not None
    assert new_kid != old_kid
    assert new_kid in protected.guard.kids
    assert old_kid in protected.guard.kids
    after = [f for at, f in sub.raw["video"] if at >= collided_at]
    under_new = [f for f in after if sframe_kid("vp8", f) == new_kid]
    # The frame being encoded at the collision may already take the new KID; the
    # requested key frame is the next one.
    assert any(not f[0] & 1 for f in under_new[:2]), "a key frame under the new KID"
    # It got through the guard and decrypts at the subscriber; nothing was blocked.
    assert sent(transform, "video")["frames_blocked"] == 0
    assert received(sub.transform, "video")["frames_failed"] == 0
    assert sub.collectors["video"].count(good=True, since=collided_at + 0.5) > 5
    assert not [e for e in events if e.type == "encryption_error"]
