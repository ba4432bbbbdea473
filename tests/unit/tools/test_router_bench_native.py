"""The native receive path of ``e2ee bench router``'s light subscribers
(:class:`e2ee._srtp.RtpReader` behind
:class:`~e2ee.tools.bench.router_worker.sockets.NativeReader`), on real loopback sockets
with real SRTP and real E2EE frames: it delivers what the Python path delivers, datagram
for datagram (frames, probes, losses, late packets, RTX, RTCP), hands STUN and DTLS to
aioice's protocol with their source address, and times frames by the kernel."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp
import pytest

from e2ee.crypto.frames import FrameDecryptor, FrameEncryptor
from e2ee.crypto.keyring import KeyRing
from e2ee.rtc import srtp as rtc_srtp
from e2ee.tools.bench.router_worker.light import LightSubscription, LightTrack, payload_kinds
from e2ee.tools.bench.router_worker.media import MAGIC, STAMP
from e2ee.tools.bench.router_worker.sockets import NativeReader, SocketReader, new_reader

from .test_router_bench_light import (
    AUDIO_PT,
    AUDIO_SSRC,
    RTX_PT,
    SRTP_KEY,
    VIDEO_PT,
    _Sender,
    frames,
    ring,
)

__all__ = ["frames", "ring"]  # the fixtures, shared with the Python path's tests

SDP = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    f"m=video 9 UDP/TLS/RTP/SAVPF {VIDEO_PT} {RTX_PT}\r\nc=IN IP4 0.0.0.0\r\n"
    f"a=rtpmap:{VIDEO_PT} VP8/90000\r\na=rtpmap:{RTX_PT} rtx/90000\r\n"
    f"a=fmtp:{RTX_PT} apt={VIDEO_PT}\r\n"
    f"m=audio 9 UDP/TLS/RTP/SAVPF {AUDIO_PT}\r\nc=IN IP4 0.0.0.0\r\n"
    f"a=rtpmap:{AUDIO_PT} opus/48000/2\r\n"
)
RTCP_SR = struct.pack(">BBH", 0x80, 200, 6) + bytes(24)  # RFC 3550 §6.4.1
STUN = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12)  # a binding request's header
DTLS = b"\x16\xfe\xfd" + bytes(40)  # a handshake record (RFC 7983: 20..63)
UDP_SEGMENT = 103  # Linux, include/uapi/linux/udp.h: the GSO segment size of a send


def _stream(ring: KeyRing, frames: list[bytes]) -> list[list[bytes]]:
    """What the router might send one subscriber, a group per frame interval: 40 video
    frames and 40 Opus frames, with losses, a late repeat, RTX, RTCP, STUN and DTLS among
    them."""
    sender = _Sender(ring, frames)
    opus = FrameEncryptor(ring, "opus")
    groups: list[list[bytes]] = []
    kept: dict[int, list[bytes]] = {}
    for n in range(40):
        out: list[bytes] = []
        groups.append(out)
        packets = kept[n] = sender.frame(n)
        if n == 7:
            del packets[1]  # a packet lost inside a frame
        elif n == 12:
            packets = []  # a whole frame lost
        elif n == 20:
            packets = packets[1:]  # a frame's first packet lost
        out.extend(packets)
        if n == 25:
            out.append(kept[24][0])  # a late repeat
        if n % 10 == 3:
            out += [RTCP_SR, STUN, DTLS]
            out.append(struct.pack(">BBHII", 0x80, RTX_PT, n, 0, 0x9999) + bytes(30))
        if n == 30:
            continue  # an Opus frame lost
        clear = b"\x78" + STAMP.pack(MAGIC, n, 5_000 + n) + bytes(40)
        header = struct.pack(">BBHII", 0x80, AUDIO_PT, 50 + n, 31 + n * 960, AUDIO_SSRC)
        out.append(sender.srtp.protect(header + opus.encrypt(clear)))
    return groups


def _light(ring: KeyRing) -> tuple[LightSubscription, list[LightTrack]]:
    rx = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=SRTP_KEY,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
    )
    video = LightTrack(0, "s", "video", FrameDecryptor(ring, "vp8"), lambda: rx, 6)
    video.set_ticks(3000)
    audio = LightTrack(0, "s", "audio", FrameDecryptor(ring, "opus"), lambda: rx, 9)
    light = LightSubscription(payload_kinds(SDP), {"video": video, "audio": audio})
    return light, [video, audio]


class _Protocol(asyncio.DatagramProtocol):
    """aioice's place: what reaches it."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.got: list[tuple[bytes, Any]] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((data, addr))


async def _endpoint() -> tuple[Any, _Protocol]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Protocol, local_addr=("127.0.0.1", 0)
    )
    protocol.transport = transport
    return transport, protocol


async def _until(done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.mark.asyncio
async def test_the_native_path_delivers_what_the_python_path_does(
    ring: KeyRing, frames: list[bytes]
) -> None:
    loop = asyncio.get_running_loop()
    groups = _stream(ring, frames)
    (t_native, p_native), (t_python, p_python) = await _endpoint(), await _endpoint()
    native, python = NativeReader(loop, coalesce=0.001), SocketReader(loop, coalesce=0.001)
    light_n, tracks_n = _light(ring)
    light_p, tracks_p = _light(ring)
    light_n.attach(native, [p_native])
    python.take(p_python, light_p.wrap(p_python.datagram_received))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.bind(("127.0.0.1", 0))
    source = out.getsockname()
    before = time.monotonic_ns()
    try:
        # A frame interval at a time, as the router sends them (the socket buffers stay
        # far from full, and each path sees a frame whole before the next one starts).
        sent = 0
        for group in groups:
            for d in group:
                out.sendto(d, t_native.get_extra_info("sockname"))
                out.sendto(d, t_python.get_extra_info("sockname"))
            sent += len(group)
            await _until(lambda s=sent: native.datagrams >= s and python.datagrams >= s)
        after = time.monotonic_ns()
        reports_n = [t.report() for t in tracks_n]
        reports_p = [t.report() for t in tracks_p]
    finally:
        native.close()
        python.close()
        out.close()
        t_native.close()
        t_python.close()
    assert native.datagrams == python.datagrams == sent
    timing = {"dt_us", "t0_ns", "first"}
    for rn, rp in zip(reports_n, reports_p, strict=True):
        assert {k: v for k, v in rn.items() if k not in timing} == {
            k: v for k, v in rp.items() if k not in timing
        }
    video, audio = reports_n
    # Frames 7 (a packet lost), 12 (lost whole) and 20 (its first packet lost: the probe
    # fails) are missing; every other frame, numbered by the mapping the probes checked.
    assert [video["n0"] + d for d in video["dn"]] == [n for n in range(40) if n not in (7, 12, 20)]
    assert (video["seq_gaps"], video["incomplete"], video["late"]) == (
        1 + len(_Sender(ring, frames).frame(12)) + 1,
        2,
        1,
    )
    assert video["errors"] == video["mismatches"] == video["unmapped"] == 0
    assert [n for n, _ in video["probes"]] == [0, 8, 13, 21, 28, 35]
    assert [audio["n0"] + d for d in audio["dn"]] == [n for n in range(40) if n != 30]
    assert audio["seq_gaps"] == 1
    assert [n for n, _ in audio["probes"]] == [0, 10, 20, 31]
    # RTX and RTCP counted, STUN and DTLS passed on with the sender's address.
    assert (light_n.other_packets, light_n.rtcp_packets) == (4, 4)
    assert (light_p.other_packets, light_p.rtcp_packets) == (4, 4)
    assert p_native.got == p_python.got == [(STUN, source), (DTLS, source)] * 4
    # Frames are timed by the kernel, on CLOCK_MONOTONIC (1 ms of slack for the offset).
    assert native.kernel_timestamps
    times = [t for track in tracks_n for t in track.times]
    assert all(before - 1_000_000 <= t <= after + 1_000_000 for t in times)


@pytest.mark.asyncio
async def test_gso_runs_arrive_whole_and_are_cut_into_packets(
    ring: KeyRing, frames: list[bytes]
) -> None:
    # The router's fan-out sends runs of a frame's equal-size packets as one UDP GSO
    # send (UDP_SEGMENT, udp(7)); with UDP_GRO on the socket they arrive as one datagram.
    loop = asyncio.get_running_loop()
    transport, protocol = await _endpoint()
    reader = NativeReader(loop, coalesce=0.001)
    light, (video, _audio) = _light(ring)
    light.attach(reader, [protocol])
    sender = _Sender(ring, frames)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    try:
        for n in range(10):
            packets = sender.frame(n)
            *run, last = packets
            assert len(run) >= 2
            assert len({len(p) for p in run}) == 1
            assert len(last) <= len(run[0])
            out.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, len(run[0]))
            out.sendto(b"".join(packets), transport.get_extra_info("sockname"))
            sent += len(packets)
            await _until(lambda s=sent: reader.datagrams >= s)
        report = video.report()
    finally:
        reader.close()
        out.close()
        transport.close()
    assert reader.gro
    assert reader.rtp.coalesced == 10  # one datagram per frame, cut here
    assert reader.datagrams == report["packets"] == sent
    assert [report["n0"] + d for d in report["dn"]] == list(range(10))
    assert (report["seq_gaps"], report["incomplete"], report["errors"]) == (0, 0, 0)


@pytest.mark.asyncio
async def test_a_closed_reader_leaves_the_socket_alone() -> None:
    loop = asyncio.get_running_loop()
    transport, protocol = await _endpoint()
    reader = new_reader("native", loop, coalesce=0)
    assert isinstance(reader, NativeReader)
    light = LightSubscription({}, {})
    light.attach(reader, [protocol])
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out.sendto(STUN, transport.get_extra_info("sockname"))
        await _until(lambda: len(protocol.got) == 1)
        reader.close()
        assert repr(reader.rtp) == "RtpReader(sockets=0, tracks=0)"
        out.sendto(STUN, transport.get_extra_info("sockname"))
        await asyncio.sleep(0.05)
        assert reader.rtp.drain() == ([], [], [], 0)
        assert len(protocol.got) == 1  # nobody reads it now (asyncio was paused)
    finally:
        out.close()
        transport.close()
    with pytest.raises(ValueError, match="unknown receiver"):
        new_reader("cython", loop)


def test_the_extension_refuses_bad_arguments() -> None:
    rtp = rtc_srtp.rtp_reader()
    with pytest.raises(ValueError, match="no such subscription"):
        rtp.add_track(0, [96], True)
    sub = rtp.add_subscription()
    with pytest.raises(ValueError, match="0 to 127"):
        rtp.add_track(sub, [128], True)
    with pytest.raises(ValueError, match="no such track"):
        rtp.set_probe(3, True)
    with pytest.raises(OSError, match="Bad file descriptor"):
        rtp.add_socket(10_000, sub)  # not an open descriptor
    assert rtp.take_counters(rtp.add_track(sub, [96], False)) == (0, 0, 0, 0, 0)
