"""The light receive path of ``e2ee bench router``'s subscribers, with real SRTP, real
E2EE frames and real sockets: what it delivers, how it maps RTP timestamps to the
publisher's frame numbers, and what it refuses (missing packets, late packets, a shifted
mapping), plus the one-``epoll`` socket reader and the publisher's lossy uplink."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pylibsrtp
import pytest

from e2ee.crypto.frames import FrameDecryptor, FrameEncryptor
from e2ee.crypto.keyring import KeyRing
from e2ee.tools.bench.router_worker.light import LightSubscription, LightTrack, payload_kinds
from e2ee.tools.bench.router_worker.media import (
    MAGIC,
    STAMP,
    clear_bytes,
    load_media,
    prepare_media,
)
from e2ee.tools.bench.router_worker.sockets import SocketReader
from e2ee.tools.bench.router_worker.uplink import Uplink

VIDEO_PT, RTX_PT, AUDIO_PT = 97, 98, 111
SSRC, AUDIO_SSRC = 0x1234, 0x5678
TS_SHIFT = 777_000  # the router's own timestamp origin (a multiple of nothing in particular)
SRTP_KEY = bytes(range(30))


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    path: Path = tmp_path_factory.mktemp("media") / "media.bin"
    prepare_media(path, seconds=1.0, width=160, height=120, bitrate=300_000)
    return load_media(path).video


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    r = KeyRing("bench-session", kdf_iterations=1000, grace_period=0)
    r.set_secret("a secret for the light path test")
    return r


class _Sender:
    """What the router sends one light subscriber: stamped, encrypted VP8 frames,
    packetized (a VP8 payload descriptor per packet, RFC 7741 §4.2) and SRTP-protected."""

    def __init__(self, ring: KeyRing, frames: list[bytes]) -> None:
        self.encryptor = FrameEncryptor(ring, "vp8")
        self.frames = frames
        self.srtp = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=SRTP_KEY,
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            )
        )
        self.seq = 1000
        self.shift = TS_SHIFT
        self.sent: dict[int, int] = {}

    def frame(self, n: int) -> list[bytes]:
        data = self.frames[n % len(self.frames)]
        clear = clear_bytes(True, data)
        self.sent[n] = 10_000 + n
        wire = self.encryptor.encrypt(
            data[:clear] + STAMP.pack(MAGIC, n, self.sent[n]) + data[clear:]
        )
        chunks = [wire[i : i + 500] for i in range(0, len(wire), 500)]
        packets = []
        for i, chunk in enumerate(chunks):
            marker = 0x80 if i == len(chunks) - 1 else 0
            header = struct.pack(
                ">BBHII", 0x80, marker | VIDEO_PT, self.seq & 0xFFFF, self.shift + n * 3000, SSRC
            )
            self.seq += 1
            descriptor = b"\x10" if i == 0 else b"\x00"
            packets.append(self.srtp.protect(header + descriptor + chunk))
        return packets


def _receiver(ring: KeyRing, probe_every: int = 5) -> tuple[LightTrack, Any]:
    rx = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=SRTP_KEY,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
    )
    track = LightTrack(0, "stream", "video", FrameDecryptor(ring, "vp8"), lambda: rx, probe_every)
    track.set_ticks(3000)
    return track, rx


def _feed(track: LightTrack, packets: list[bytes], arrival: int) -> None:
    for p in packets:
        _first, b1, seq, ts, _ssrc = struct.unpack_from(">BBHII", p)
        track.packet(p, b1, seq, ts, arrival)


def test_frames_are_mapped_to_the_publishers_numbers(ring: KeyRing, frames: list[bytes]) -> None:
    sender = _Sender(ring, frames)
    track, _rx = _receiver(ring)
    for n in range(100, 121):
        _feed(track, sender.frame(n), arrival=n * 1000)
    assert track.ns == list(range(100, 121))
    assert track.times == [n * 1000 for n in range(100, 121)]
    assert track.first == (100, 100_000)  # the first frame, proved whole by its probe
    # The first frame and then one in every 5 (+1) were decrypted; their stamps agree.
    assert [n for n, _ in track.probes] == [100, 106, 112, 118]
    assert all(sent == sender.sent[n] for n, sent in track.probes)
    assert (track.mismatches, track.incomplete, track.errors, track.seq_gaps) == (0, 0, 0, 0)


def test_a_frame_with_a_missing_packet_is_not_delivered(ring: KeyRing, frames: list[bytes]) -> None:
    sender = _Sender(ring, frames)
    track, _rx = _receiver(ring, probe_every=1000)
    kept: dict[int, list[bytes]] = {}
    for n in range(10):
        packets = kept[n] = sender.frame(n)
        if n == 4:
            assert len(packets) > 2
            del packets[1]  # lost on the way
        _feed(track, packets, arrival=n)
    assert track.ns == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert track.seq_gaps == 1
    assert track.incomplete == 1
    # A packet from the past (a late repeat) changes nothing.
    _feed(track, sender.frame(10)[:1], arrival=10)
    late = kept[3][0]
    before = list(track.ns)
    _feed(track, [late], arrival=11)
    assert track.late == 1
    assert track.ns == before


def test_a_shifted_mapping_is_caught_by_the_next_probe(ring: KeyRing, frames: list[bytes]) -> None:
    sender = _Sender(ring, frames)
    track, _rx = _receiver(ring, probe_every=3)
    for n in range(6):
        _feed(track, sender.frame(n), arrival=n)
    sender.shift += 7 * 3000  # the router rebased its timestamps by 7 frames
    for n in range(6, 14):
        _feed(track, sender.frame(n), arrival=n)
    assert [n for n, _ in track.probes] == [0, 4, 8, 12]
    assert track.mismatches == 1  # the probe of frame 8
    # Frames 6 and 7 were numbered by the stale mapping (7 too high); from the probe on,
    # every frame is numbered right again.
    assert track.ns == [0, 1, 2, 3, 4, 5, 13, 14, *range(8, 14)]


def test_a_frame_that_does_not_decrypt_is_not_delivered(ring: KeyRing, frames: list[bytes]) -> None:
    sender = _Sender(ring, frames)
    other = KeyRing("bench-session", kdf_iterations=1000, grace_period=0)
    other.set_secret("another secret")
    track = LightTrack(
        0, "stream", "video", FrameDecryptor(other, "vp8"), lambda: _receiver(ring)[1], 1
    )
    track.set_ticks(3000)
    for n in range(3):
        _feed(track, sender.frame(n), arrival=n)
    assert track.ns == []
    assert (track.incomplete, track.errors) == (1, 2)  # the first frame: whole or not?


def test_a_gap_between_frames_is_settled_by_decrypting(ring: KeyRing, frames: list[bytes]) -> None:
    sender = _Sender(ring, frames)
    track, _rx = _receiver(ring, probe_every=1000)
    for n in range(12):
        packets = sender.frame(n)
        if n == 4:
            continue  # a whole frame dropped (its sequence numbers skipped)
        if n == 8:
            assert len(packets) > 1
            packets = packets[1:]  # this frame's first packet lost
        _feed(track, packets, arrival=n)
    # Frame 5 follows a gap but decrypts: it is whole.  Frame 8 does not.
    assert track.ns == [0, 1, 2, 3, 5, 6, 7, 9, 10, 11]
    assert [n for n, _ in track.probes] == [0, 5]  # frame 9 follows 8's marker
    assert (track.incomplete, track.errors) == (1, 0)


def test_audio_packets_are_frames(ring: KeyRing) -> None:
    encryptor = FrameEncryptor(ring, "opus")
    tx = pylibsrtp.Session(
        pylibsrtp.Policy(key=SRTP_KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    )
    rx = pylibsrtp.Session(
        pylibsrtp.Policy(key=SRTP_KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
    )
    track = LightTrack(0, "stream", "audio", FrameDecryptor(ring, "opus"), lambda: rx, 50)
    for n in range(20):
        opus = b"\x78" + STAMP.pack(MAGIC, n, 5_000 + n) + bytes(40)
        header = struct.pack(">BBHII", 0x80, AUDIO_PT, 50 + n, 31 + n * 960, AUDIO_SSRC)
        packet = tx.protect(header + encryptor.encrypt(opus))
        track.packet(packet, AUDIO_PT, 50 + n, 31 + n * 960, n)
    assert track.ns == list(range(20))
    assert track.probes == [(0, 5_000)]


def test_the_subscription_takes_rtp_drops_rtcp_and_passes_the_rest_on(
    ring: KeyRing, frames: list[bytes]
) -> None:
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        f"m=video 9 UDP/TLS/RTP/SAVPF {VIDEO_PT} {RTX_PT}\r\nc=IN IP4 0.0.0.0\r\n"
        f"a=rtpmap:{VIDEO_PT} VP8/90000\r\na=rtpmap:{RTX_PT} rtx/90000\r\n"
        f"a=fmtp:{RTX_PT} apt={VIDEO_PT}\r\n"
        f"m=audio 9 UDP/TLS/RTP/SAVPF {AUDIO_PT}\r\nc=IN IP4 0.0.0.0\r\n"
        f"a=rtpmap:{AUDIO_PT} opus/48000/2\r\n"
    )
    kinds = payload_kinds(sdp)
    assert kinds == {VIDEO_PT: "video", RTX_PT: "rtx", AUDIO_PT: "audio"}
    track, _rx = _receiver(ring)
    light = LightSubscription(kinds, {"video": track})
    passed: list[bytes] = []
    handler = light.wrap(lambda data, addr: passed.append(data))
    sender = _Sender(ring, frames)
    for p in sender.frame(0):
        handler(p, ("127.0.0.1", 1), 1)
    rtcp = struct.pack(">BBH", 0x80, 200, 6) + bytes(24)  # a sender report (RFC 3550 §6.4.1)
    stun = b"\x00\x01\x00\x00" + bytes(16)
    rtx = struct.pack(">BBHII", 0x80, RTX_PT, 1, 0, 0x9999) + bytes(20)
    for datagram in (rtcp, stun, rtx):
        handler(datagram, ("127.0.0.1", 1), 2)
    assert track.ns == [0]
    assert passed == [stun]
    assert (light.other_packets, light.rtcp_packets) == (1, 1)


@pytest.mark.asyncio
async def test_the_socket_reader_takes_sockets_from_asyncio() -> None:
    loop = asyncio.get_running_loop()
    seen_by_asyncio: list[bytes] = []

    class Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            seen_by_asyncio.append(data)

    transport, protocol = await loop.create_datagram_endpoint(Protocol, local_addr=("127.0.0.1", 0))
    reader = SocketReader(loop, coalesce=0.001)
    got: list[tuple[bytes, int]] = []
    done = asyncio.Event()

    def handler(data: bytes, addr: Any, arrival: int) -> None:
        got.append((data, arrival))
        if len(got) == 20:
            done.set()

    try:
        protocol.transport = transport  # type: ignore[attr-defined]
        reader.take(protocol, handler)
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        before = time.monotonic_ns()
        for i in range(20):
            out.sendto(bytes([i]) * 100, transport.get_extra_info("sockname"))
        out.close()
        await asyncio.wait_for(done.wait(), 10)
        after = time.monotonic_ns()
    finally:
        reader.close()
        transport.close()
    assert [d[0] for d, _ in got] == list(range(20))
    assert seen_by_asyncio == []  # asyncio no longer reads the socket
    # Kernel receive times, on CLOCK_MONOTONIC (1 ms of slack for the clocks' offset).
    assert reader.kernel_timestamps
    assert all(before - 1_000_000 <= t <= after + 1_000_000 for _, t in got)
    assert reader.datagrams == 20


@pytest.mark.asyncio
async def test_the_uplink_drops_rtp_never_rtcp() -> None:
    sent: list[bytes] = []
    frames = {"video": 0, "audio": 0}

    async def send(data: bytes) -> None:
        sent.append(data)

    uplink = Uplink(seed=1)
    uplink.add_track([SSRC, 0x4321], "video", lambda: frames["video"], 3000)
    uplink.add_track([AUDIO_SSRC], "audio", lambda: frames["audio"], 960)
    send_rtp = uplink.wrap(send)
    origin = 123_456

    async def video_frame(n: int, packets: int = 4) -> None:
        frames["video"] = n + 1  # the track has returned frame n
        for i in range(packets):
            await send_rtp(
                struct.pack(">BBHII", 0x80, VIDEO_PT, n * 10 + i, origin + n * 3000, SSRC)
            )

    rtcp = struct.pack(">BBH", 0x80, 200, 6) + bytes(24)
    uplink.set_loss(p=0.5)
    for n in range(50):
        await video_frame(n)
        await send_rtp(rtcp)
    report = uplink.report()
    dropped = report["packets_dropped"]["video"]
    assert report["packets_sent"]["video"] == 200
    assert 40 < dropped < 160
    assert len(sent) == 200 - dropped + 50  # every RTCP packet went out
    assert set(report["frames_affected"]["video"]) <= set(range(50))
    assert report["frames_affected"]["video"]

    uplink.mark()
    uplink.set_loss(burst_ms=80)
    await video_frame(50)
    assert uplink.report()["packets_dropped"]["video"] == 4  # all of it, in the burst
    assert uplink.report()["frames_affected"]["video"] == [50]
    await asyncio.sleep(0.2)
    await video_frame(51)
    assert uplink.report()["packets_dropped"]["video"] == 4  # the burst is over
    (burst,) = uplink.report()["bursts_ns"]
    assert burst[1] - burst[0] == 80_000_000


def test_a_probe_needs_the_srtp_session(ring: KeyRing, frames: list[bytes]) -> None:
    # Before DTLS completes there is no session: the frame is counted, not mapped.
    sender = _Sender(ring, frames)
    track = LightTrack(0, "stream", "video", FrameDecryptor(ring, "vp8"), lambda: None, 5)
    _feed(track, sender.frame(0), arrival=0)
    assert track.ns == []
    assert track.unmapped == 1
