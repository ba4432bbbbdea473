"""The router's egress writing a frame in one ``sendmmsg(2)``
(:meth:`e2ee._srtp.SrtpSender.send_frame`, :meth:`e2ee.sfu.egress.RelayTrack.send`) on
real UDP sockets on loopback, IPv4 and IPv6: the datagrams received are byte-equal to
``protect_frame``'s and libsrtp (pylibsrtp, as an aiortc subscriber) unprotects them;
what the kernel does not take (a full send buffer, made real with a slow ``tbf`` qdisc
on the namespace's loopback) is buffered by asyncio and arrives in order; the sender's
RTCP SR counters are noted at most every ``SR_NOTE_INTERVAL``, with one frame's
NTP/RTP pair, and add up to everything relayed."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from pylibsrtp import Policy, Session

from e2ee import _srtp
from e2ee.rtc import compat, srtp, udp
from e2ee.sfu.egress import SR_NOTE_INTERVAL, RelayTrack
from e2ee.sfu.frames import RelayFrame, Totals
from e2ee.sfu.policy import FrameGate

NAME = "SRTP_AEAD_AES_256_GCM"  # what aiortc peers negotiate
LIBSRTP = {NAME: (Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12)}
PARAMETERS = RTCRtpSendParameters(
    codecs=[RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)],
    headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(
            id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
        ),
    ],
    muxId="7",
)
FAMILIES = {"ipv4": (socket.AF_INET, "127.0.0.1"), "ipv6": (socket.AF_INET6, "::1")}
#: Seconds to wait for datagrams or a drained buffer: generous, the machine is shared.
WAIT = float(os.environ.get("E2EE_TEST_WAIT", "10"))


def _keys() -> tuple[bytes, bytes, Session]:
    profile, key_len, salt_len = LIBSRTP[NAME]
    key, salt = os.urandom(key_len), os.urandom(salt_len)
    rx = Session(Policy(key=key + salt, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
    return key, salt, rx


def _receiver(family: int, host: str) -> socket.socket:
    try:
        rx = socket.socket(family, socket.SOCK_DGRAM)
        rx.bind((host, 0))
    except OSError as exc:  # pragma: no cover - a host without IPv6 loopback
        pytest.skip(f"no {host} here: {exc}")
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.settimeout(WAIT)
    return rx


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_send_frame_writes_what_protect_frame_builds(family: str) -> None:
    af, host = FAMILIES[family]
    key, salt, rx_session = _keys()
    twin, sender = _srtp.SrtpSender(NAME, key, salt), _srtp.SrtpSender(NAME, key, salt)
    rx = _receiver(af, host)
    tx = socket.socket(af, socket.SOCK_DGRAM)
    tx.setblocking(False)
    payloads = [os.urandom(n) for n in (1100, 1100, 1100, 40)]
    ext = b"\xbe\xde\x00\x01\x10\x37\x00\x00"  # one-byte extensions: mid "7", padding
    args = (0x90, 97, 65_534, 123_456, 0x5EED_0001, ext, payloads)
    try:
        expected = twin.protect_frame(*args)
        packets, taken = sender.send_frame(tx.fileno(), rx.getsockname(), *args)
        wire = [rx.recv(2048) for _ in payloads]
    finally:
        rx.close()
        tx.close()
    assert packets == expected
    assert taken == len(payloads)
    assert wire == expected
    extensions = HeaderExtensionsMap()
    extensions.configure(PARAMETERS)
    parsed = [RtpPacket.parse(rx_session.unprotect(p), extensions) for p in wire]
    assert [p.payload for p in parsed] == payloads
    assert [p.sequence_number for p in parsed] == [65_534, 65_535, 0, 1]
    assert [p.marker for p in parsed] == [0, 0, 0, 1]


def test_send_frame_errors() -> None:
    key, salt, _ = _keys()
    sender = _srtp.SrtpSender(NAME, key, salt)
    frame = (0x80, 97, 1, 2, 3, b"", [b"x"])
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        with pytest.raises(OSError, match="non-socket") as info:
            sender.send_frame(fd, ("127.0.0.1", 9), *frame)  # not a socket
        assert info.value.errno == errno.ENOTSOCK
    finally:
        os.close(fd)
    for address in [("localhost", 9), ("127.0.0.1",), "127.0.0.1:9", ("::1", 70_000)]:
        with pytest.raises(ValueError, match="address must be"):
            sender.send_frame(3, address, *frame)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fd must be"):
        sender.send_frame(-1, ("127.0.0.1", 9), *frame)


class _Relay:
    """A relay whose path is a real asyncio datagram transport (the router's kind), to a
    real receiving socket; the sender is a stand-in that keeps the RTCP SR fields."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, family: str, transport: Any) -> None:
        af, host = FAMILIES[family]
        key, salt, self.rx_session = _keys()
        profile = LIBSRTP[NAME][0]
        libsrtp = Session(
            Policy(key=key + salt, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        )
        self.rx = _receiver(af, host)
        self.wire: list[bytes] = []
        self.transport = transport
        forwarder = SimpleNamespace(
            kind="video", video=True, totals=Totals(), track_id="t", relays=set()
        )
        self.relay = RelayTrack(forwarder, "sub", 10_000)  # type: ignore[arg-type]
        self.relay._configure(PARAMETERS)
        self.sender = SimpleNamespace(**{name: 0 for name in compat._SENDER_SR_FIELDS})
        self.notes: list[tuple[int, int, int, int]] = []
        self.relay._sender = self.sender  # type: ignore[assignment]
        self.relay.gate = FrameGate(10_000, False)
        address = self.rx.getsockname()
        monkeypatch.setattr(compat, "rtp_path", lambda s: (libsrtp.protect, transport, address))
        rust = _srtp.SrtpSender(NAME, key, salt)
        monkeypatch.setattr(srtp, "rust_sender", lambda s, protect: rust)
        note = compat.note_rtp_sent

        def noted(sender: Any, ntp: int, rtp: int, octets: int, packets: int) -> None:
            self.notes.append((ntp, rtp, octets, packets))
            note(sender, ntp, rtp, octets, packets)

        monkeypatch.setattr(compat, "note_rtp_sent", noted)

    def received(self, count: int) -> list[RtpPacket]:
        extensions = HeaderExtensionsMap()
        extensions.configure(PARAMETERS)
        wire = [self.rx.recv(2048) for _ in range(count)]
        self.wire.extend(wire)
        return [RtpPacket.parse(self.rx_session.unprotect(p), extensions) for p in wire]


@pytest.fixture
def transport(request: pytest.FixtureRequest) -> Iterator[Any]:
    family = request.param
    loop = asyncio.new_event_loop()
    af, host = FAMILIES[family]
    try:
        made, _ = loop.run_until_complete(
            loop.create_datagram_endpoint(asyncio.DatagramProtocol, family=af, local_addr=(host, 0))
        )
    except OSError as exc:  # pragma: no cover - a host without IPv6 loopback
        loop.close()
        pytest.skip(f"no {host} here: {exc}")
    made.family = family
    made.loop = loop
    yield made
    made.close()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


@pytest.mark.parametrize("transport", sorted(FAMILIES), indirect=True)
def test_the_relay_writes_each_frame_in_one_sendmmsg(
    monkeypatch: pytest.MonkeyPatch, transport: Any
) -> None:
    relay = _Relay(monkeypatch, transport.family, transport)
    track = relay.relay
    track.next_seq = 65_533
    frames = [[os.urandom(n) for n in sizes] for sizes in ((1100, 1100, 7), (900, 900, 900, 3))]
    try:
        for i, payloads in enumerate(frames):
            track.send(RelayFrame(payloads, 1000 * i, False, (i + 1) << 32))
        received = relay.received(7)
    finally:
        relay.rx.close()
    assert [p.payload for p in received] == [p for f in frames for p in f]
    assert [p.sequence_number for p in received] == [(65_533 + k) & 0xFFFF for k in range(7)]
    stats = track.stats()
    assert stats["srtp_backend"] == "rust"
    assert stats["packets_rust"] == stats["packets_mmsg"] == stats["packets_forwarded"] == 7
    # NACK history: the packets as first protected.
    assert [track.sent_packet(k) for k in (65_535, 0)] == relay.wire[2:4]


def _private_loopback() -> str | None:
    """Why the slow-loopback test cannot run here, or None: it changes the loopback's
    qdisc, so only in a network namespace of our own (loopback alone) and as root."""
    if shutil.which("tc") is None:
        return "no tc"
    if os.geteuid() != 0:
        return "not root"
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        return "not in a private network namespace (unshare --net)"
    return None


@pytest.fixture
def slow_loopback() -> Iterator[None]:
    why = _private_loopback()
    if why:
        pytest.skip(f"slow loopback: {why}")
    tbf = ["tc", "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", "8mbit"]
    subprocess.run([*tbf, "burst", "4kb", "latency", "5s"], check=True)
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)


@pytest.mark.usefixtures("slow_loopback")
@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
@pytest.mark.parametrize("transport", ["ipv4"], indirect=True)
def test_what_the_kernel_does_not_take_asyncio_sends_in_order(
    monkeypatch: pytest.MonkeyPatch, transport: Any, gso: bool
) -> None:
    # A small send buffer on a slow link: the kernel soon refuses more (EAGAIN).
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    relay = _Relay(monkeypatch, "ipv4", transport)
    track = relay.relay
    track._group.fanout.gso = gso  # type: ignore[union-attr]
    frames = [[os.urandom(1000) for _ in range(20)] for _ in range(5)]
    buffered = []
    try:
        for i, payloads in enumerate(frames):
            track.send(RelayFrame(payloads, 3000 * i, False, (i + 1) << 32))
            buffered.append(udp.buffered_bytes(transport))

        async def drained() -> None:
            for _ in range(int(WAIT * 100)):
                if not udp.buffered_bytes(transport):
                    return
                await asyncio.sleep(0.01)

        transport.loop.run_until_complete(drained())
        received = relay.received(100)
    finally:
        relay.rx.close()
    # Without GSO the first frame already does not fit; with it, the first frame is one
    # message, which an empty buffer always takes, and the next ones do not fit.
    assert buffered[0 if not gso else 1] > 0, buffered
    assert 0 < track.packets_mmsg < track.packets_rust == 100
    assert [p.payload for p in received] == [p for f in frames for p in f]  # in order
    first = received[0].sequence_number
    assert [p.sequence_number for p in received] == [(first + k) & 0xFFFF for k in range(100)]


@pytest.mark.parametrize("transport", ["ipv4"], indirect=True)
def test_sr_counters_are_noted_at_most_every_interval(
    monkeypatch: pytest.MonkeyPatch, transport: Any
) -> None:
    relay = _Relay(monkeypatch, "ipv4", transport)
    track = relay.relay
    step = (1 << 32) // 30  # 30 frames a second, in NTP format
    frames = [
        RelayFrame([os.urandom(100 + i), os.urandom(50)], 3000 * i, False, (10 << 32) + i * step)
        for i in range(30)
    ]
    try:
        for frame in frames:
            track.send(frame)
        relay.received(60)
        track.end()
    finally:
        relay.rx.close()
    ntp_name, rtp_name, octet_name, packet_name = compat._SENDER_SR_FIELDS
    # One second of frames: the first, then one per interval, then the rest at the end.
    assert len(relay.notes) <= 1 / SR_NOTE_INTERVAL + 2, relay.notes
    assert len(relay.notes) >= 3
    by_ntp = {f.ntp_timestamp: f for f in frames}
    for ntp, rtp, _, _ in relay.notes:  # each pair is one frame's
        assert rtp == (by_ntp[ntp].timestamp + track.ts_offset) & 0xFFFFFFFF
    assert getattr(relay.sender, packet_name) == 60 == sum(n[3] for n in relay.notes)
    assert getattr(relay.sender, octet_name) == sum(f.size for f in frames)
    assert getattr(relay.sender, ntp_name) == frames[-1].ntp_timestamp
    assert getattr(relay.sender, rtp_name) == (frames[-1].timestamp + track.ts_offset) & (
        0xFFFFFFFF
    )
