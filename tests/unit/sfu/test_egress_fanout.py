"""The router's fan-out (:class:`e2ee._srtp.Fanout`, :mod:`e2ee.sfu.egress_fanout`): one
frame to several subscribers in one call, on real UDP sockets on loopback.  Each
subscriber receives exactly what its own SRTP sender builds for it (byte-equal to
``protect_frame``, and libsrtp, as an aiortc subscriber, unprotects it): its SSRC,
payload type, consecutive sequence numbers across the 2^16 wrap, the publisher's
timestamp plus its offset, the marker on the last packet; with and without UDP GSO, and
when the kernel refuses GSO (a loopback MTU below the packets, in a private network
namespace).  Legs whose socket asyncio still buffers get their packets back, in order;
NACKs are answered from the history with the bytes first sent, also after a relay leaves
the fan-out; a leg whose socket fails does not hold back the others."""

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
from e2ee.rtc import compat, srtp
from e2ee.sfu.egress import HISTORY, RelayTrack
from e2ee.sfu.frames import RelayFrame, Totals
from e2ee.sfu.policy import FrameGate

NAME = "SRTP_AEAD_AES_256_GCM"  # what aiortc peers negotiate
EXT = b"\xbe\xde\x00\x01\x10\x37\x00\x00"  # one-byte extensions: mid "7", padding
PARAMETERS = RTCRtpSendParameters(
    codecs=[RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)],
    headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid")
    ],
    muxId="7",
)
#: Seconds to wait for a datagram: generous, the machine is shared.
WAIT = float(os.environ.get("E2EE_TEST_WAIT", "10"))


class _Sub:
    """One subscriber: keys, a receiving socket, the router's socket towards it."""

    def __init__(self, family: int = socket.AF_INET, host: str = "127.0.0.1") -> None:
        self.key, self.salt = os.urandom(32), os.urandom(12)
        policy = Policy(
            key=self.key + self.salt,
            ssrc_type=Policy.SSRC_ANY_INBOUND,
            srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
        )
        self.session = Session(policy)
        self.rx = socket.socket(family, socket.SOCK_DGRAM)
        self.rx.bind((host, 0))
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rx.settimeout(WAIT)
        self.tx = socket.socket(family, socket.SOCK_DGRAM)
        self.tx.setblocking(False)
        self.sender = _srtp.SrtpSender(NAME, self.key, self.salt)
        self.twin = _srtp.SrtpSender(NAME, self.key, self.salt)

    def recv(self, count: int) -> list[bytes]:
        return [self.rx.recv(65_536) for _ in range(count)]

    def nothing_more(self) -> bool:
        self.rx.settimeout(0.05)
        try:
            self.rx.recv(65_536)
        except TimeoutError:
            return True
        finally:
            self.rx.settimeout(WAIT)
        return False

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


@pytest.fixture
def subs() -> Iterator[list[_Sub]]:
    made = [_Sub() for _ in range(3)]
    yield made
    for sub in made:
        sub.close()


def _parse(sub: _Sub, wire: list[bytes]) -> list[RtpPacket]:
    extensions = HeaderExtensionsMap()
    extensions.configure(PARAMETERS)
    return [RtpPacket.parse(sub.session.unprotect(p), extensions) for p in wire]


@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
def test_one_call_gives_each_subscriber_its_own_packets(subs: list[_Sub], gso: bool) -> None:
    fanout = _srtp.Fanout(256)
    fanout.gso = gso
    legs = [
        fanout.add(
            s.sender,
            s.tx.fileno(),
            s.rx.getsockname(),
            0x90,
            97,
            0x5EED_0000 + i,
            65_534 - i,
            1000 * i,
            EXT,
        )
        for i, s in enumerate(subs)
    ]
    frames = [
        [os.urandom(n) for n in (1100, 1100, 1100, 40)],  # one GSO run
        [os.urandom(n) for n in (900, 901, 901, 3)],  # a single packet, then a run
        [os.urandom(77)],
    ]
    for k, payloads in enumerate(frames):
        calls = fanout.syscalls
        assert fanout.send(legs, [], payloads, 90_000 + 3000 * k, 0) == []
        assert fanout.syscalls == calls + len(subs)  # one sendmmsg per subscriber
    assert fanout.gso_sends == (len(subs) * 2 if gso else 0)  # a run per frame of several
    for i, sub in enumerate(subs):
        assert fanout.uses_gso(legs[i]) is gso
        wire = sub.recv(9)
        assert sub.nothing_more()
        seq = 65_534 - i
        expected = []
        for k, payloads in enumerate(frames):
            ts = 90_000 + 3000 * k + 1000 * i
            expected += sub.twin.protect_frame(0x90, 97, seq, ts, 0x5EED_0000 + i, EXT, payloads)
            seq = (seq + len(payloads)) & 0xFFFF
        assert wire == expected
        packets = _parse(sub, wire)
        assert [p.payload for p in packets] == [p for f in frames for p in f]
        assert [p.sequence_number for p in packets] == [(65_534 - i + j) & 0xFFFF for j in range(9)]
        assert [p.ssrc for p in packets] == [0x5EED_0000 + i] * 9
        assert [p.timestamp for p in packets] == [
            90_000 + 3000 * k + 1000 * i for k, f in enumerate(frames) for _ in f
        ]
        assert [p.marker for p in packets] == [0, 0, 0, 1, 0, 0, 0, 1, 1]
        assert {p.extensions.mid for p in packets} == {"7"}
        # NACKs: each packet as first protected and sent.
        assert [fanout.packet(legs[i], p.sequence_number) for p in packets] == wire


def test_buffered_legs_get_their_packets_back_in_order(subs: list[_Sub]) -> None:
    fanout = _srtp.Fanout(16)
    a, b = (
        fanout.add(s.sender, s.tx.fileno(), s.rx.getsockname(), 0x90, 97, 7, 10, 0, EXT)
        for s in subs[:2]
    )
    payloads = [os.urandom(500) for _ in range(3)]
    problems = fanout.send([a], [b], payloads, 1234, 0)
    assert len(problems) == 1
    leg, packets = problems[0]
    assert leg == b
    assert packets == subs[1].twin.protect_frame(0x90, 97, 10, 1234, 7, EXT, payloads)
    assert subs[1].nothing_more()  # built, not written: asyncio sends them
    assert subs[0].recv(3) == subs[0].twin.protect_frame(0x90, 97, 10, 1234, 7, EXT, payloads)
    # More frames than the history holds: the oldest are gone.
    for k in range(6):
        fanout.send([], [a], payloads, 1234 + k, 0)
    assert fanout.next_seq(a) == 31
    assert fanout.packet(a, 12) is None
    assert fanout.packet(a, 15) is not None
    seq, history = fanout.remove(a)
    assert seq == 31
    assert [s for s, _ in history] == list(range(15, 31))  # oldest first
    assert len(fanout) == 1
    with pytest.raises(ValueError, match="no leg"):
        fanout.packet(a, 15)


def test_a_failing_leg_does_not_hold_back_the_others(subs: list[_Sub]) -> None:
    fanout = _srtp.Fanout()
    # Linux refuses UDP to port 0 (EINVAL) at once: a leg whose first packet fails.
    bad = fanout.add(subs[0].sender, subs[0].tx.fileno(), ("127.0.0.1", 0), 0x80, 97, 1, 0, 0, b"")
    good = fanout.add(subs[1].sender, subs[1].tx.fileno(), subs[1].rx.getsockname(),
                      0x80, 97, 2, 0, 0, b"")  # fmt: skip
    problems = fanout.send([bad, good], [], [b"x" * 100, b"y" * 50], 5, 0)
    assert problems == [(bad, errno.EINVAL)]
    assert len(subs[1].recv(2)) == 2
    assert fanout.next_seq(bad) == 2  # its indices are used all the same


def test_a_leg_writes_to_its_socket_even_after_the_number_is_reused(subs: list[_Sub]) -> None:
    # asyncio closes a transport's socket a loop turn after close(): the number may then
    # name another socket.  The leg holds a descriptor of its own for the one it was given.
    sub = subs[0]
    fanout = _srtp.Fanout()
    sub.tx.bind(("127.0.0.1", 0))
    port = sub.tx.getsockname()[1]
    fd = sub.tx.fileno()
    leg = fanout.add(sub.sender, fd, sub.rx.getsockname(), 0x80, 97, 1, 0, 0, b"")
    sub.tx.close()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        other.bind(("127.0.0.1", 0))
        assert other.fileno() == fd  # the lowest free number: the one just closed
        assert fanout.send([leg], [], [b"x" * 10], 0, 0) == []
        _, source = sub.rx.recvfrom(2048)
        assert source[1] == port  # from the socket the leg was given, not `other`
    finally:
        other.close()
    fanout.remove(leg)  # closes the leg's descriptor: the port is free again
    sub.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sub.tx.bind(("127.0.0.1", port))
    sub.tx.setblocking(False)


def test_a_leg_needs_a_datagram_socket(subs: list[_Sub]) -> None:
    fanout = _srtp.Fanout()
    stream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (null, stream.fileno()):
            with pytest.raises(ValueError, match="not a usable datagram socket"):
                fanout.add(subs[0].sender, fd, ("127.0.0.1", 9), 0x80, 97, 1, 0, 0, b"")
    finally:
        os.close(null)
        stream.close()
    assert len(fanout) == 0


def test_bad_input_is_refused_before_anything_is_sent(subs: list[_Sub]) -> None:
    with pytest.raises(ValueError, match="power of two"):
        _srtp.Fanout(100)
    fanout = _srtp.Fanout(4)
    sub = subs[0]
    args = (sub.sender, sub.tx.fileno(), sub.rx.getsockname())
    with pytest.raises(ValueError, match="X bit"):
        fanout.add(*args, 0x80, 97, 1, 0, 0, EXT)
    with pytest.raises(ValueError, match="abs_send_time_at"):
        fanout.add(*args, 0x90, 97, 1, 0, 0, EXT, 6)
    with pytest.raises(ValueError, match="address must be"):
        fanout.add(sub.sender, sub.tx.fileno(), ("localhost", 9), 0x80, 97, 1, 0, 0, b"")
    leg = fanout.add(*args, 0x90, 97, 1, 0, 0, EXT)
    for legs, payloads, match in [
        ([leg, leg], [b"x"], "given twice"),
        ([leg + 1], [b"x"], "no leg"),
        ([leg], [], "1 to 4 packets"),
        ([leg], [b"x"] * 5, "1 to 4 packets"),
    ]:
        with pytest.raises(ValueError, match=match):
            fanout.send(legs, [], payloads, 0, 0)
    assert fanout.next_seq(leg) == 0
    assert sub.nothing_more()


def test_abs_send_time_is_written_per_frame(subs: list[_Sub]) -> None:
    sub = subs[0]
    ext = b"\xbe\xde\x00\x02\x10\x37\x32\x00\x00\x00\x00\x00"  # mid "7", abs-send-time id 3
    fanout = _srtp.Fanout()
    leg = fanout.add(sub.sender, sub.tx.fileno(), sub.rx.getsockname(), 0x90, 97, 1, 0, 0, ext, 7)
    fanout.send([leg], [], [b"a" * 30], 0, 0xABCDEF)
    packet = sub.session.unprotect(sub.recv(1)[0])
    assert packet[12:24] == b"\xbe\xde\x00\x02\x10\x37\x32\xab\xcd\xef\x00\x00"


def _private_loopback() -> str | None:
    if shutil.which("ip") is None:
        return "no ip"
    if os.geteuid() != 0:
        return "not root"
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        return "not in a private network namespace (unshare --net)"
    return None


@pytest.fixture
def small_mtu() -> Iterator[None]:
    why = _private_loopback()
    if why:
        pytest.skip(f"small loopback MTU: {why}")
    subprocess.run(["ip", "link", "set", "lo", "mtu", "1000"], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "link", "set", "lo", "mtu", "65536"], check=False)


@pytest.mark.usefixtures("small_mtu")
def test_a_gso_send_the_kernel_refuses_goes_again_without(subs: list[_Sub]) -> None:
    # Segments larger than the MTU: the kernel refuses the GSO message (EINVAL) before
    # sending any of it; the same packets then go one by one (fragmented by IP).
    sub = subs[0]
    fanout = _srtp.Fanout()
    leg = fanout.add(sub.sender, sub.tx.fileno(), sub.rx.getsockname(), 0x90, 97, 1, 0, 0, EXT)
    assert fanout.uses_gso(leg)
    payloads = [os.urandom(1100) for _ in range(3)]
    assert fanout.send([leg], [], payloads, 0, 0) == []
    assert not fanout.uses_gso(leg)
    assert fanout.gso_sends == 0
    assert sub.recv(3) == sub.twin.protect_frame(0x90, 97, 0, 0, 1, EXT, payloads)
    assert sub.nothing_more()


# -- the Python side: FanoutGroup and RelayTrack -------------------------------------------


class _Relays:
    """Relays of one forwarder, each to its own subscriber, on real asyncio transports."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, subs: list[_Sub]) -> None:
        self.loop = asyncio.new_event_loop()
        self.forwarder = SimpleNamespace(
            kind="video", video=True, totals=Totals(), track_id="t", relays=set()
        )
        self.transports: list[Any] = []
        self.relays: list[RelayTrack] = []
        by_sender: dict[int, tuple[Any, Any, Any]] = {}
        for sub in subs:
            transport, _ = self.loop.run_until_complete(
                self.loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
                )
            )
            self.transports.append(transport)
            relay = RelayTrack(self.forwarder, "sub", 10_000)  # type: ignore[arg-type]
            relay._configure(PARAMETERS)
            relay._sender = SimpleNamespace(id=len(by_sender))  # type: ignore[assignment]
            relay.gate = FrameGate(10_000, False)
            by_sender[len(by_sender)] = (transport, sub.rx.getsockname(), sub.sender)
            self.relays.append(relay)
        self.forwarder.relays = set(self.relays)
        path = lambda s: (None, by_sender[s.id][0], by_sender[s.id][1])  # noqa: E731
        monkeypatch.setattr(compat, "rtp_path", path)
        monkeypatch.setattr(srtp, "rust_sender", lambda s, protect: by_sender[s.id][2])
        monkeypatch.setattr(compat, "note_rtp_sent", lambda *a: None)

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


def test_the_forwarders_group_sends_to_all_relays_in_one_call(
    monkeypatch: pytest.MonkeyPatch, subs: list[_Sub]
) -> None:
    rig = _Relays(monkeypatch, subs)
    group = rig.forwarder.fan_out
    frames = [[os.urandom(1000), os.urandom(1000), os.urandom(10)] for _ in range(4)]
    try:
        for relay in rig.relays:
            relay.next_seq = 65_535
        calls: list[tuple[Any, ...]] = []
        send = group.fanout.send
        group.fanout = SimpleNamespace(  # count the calls into Rust
            send=lambda *a: calls.append(a) or send(*a),
            add=group.fanout.add,
            remove=group.fanout.remove,
            packet=group.fanout.packet,
            uses_gso=group.fanout.uses_gso,
        )
        for k, payloads in enumerate(frames[:2]):
            group.send(RelayFrame(payloads, 3000 * k, k == 0, (k + 1) << 32), rig.forwarder.relays)
        assert len(calls) == 2
        wires = [sub.recv(6) for sub in subs]
        for relay, sub, wire in zip(rig.relays, subs, wires, strict=True):
            packets = _parse(sub, wire)
            assert [p.payload for p in packets] == frames[0] + frames[1]
            assert [p.sequence_number for p in packets] == [65_535, 0, 1, 2, 3, 4]
            stats = relay.stats()
            assert stats["fanout"]
            assert stats["gso"]
            assert stats["packets_rust"] == stats["packets_mmsg"] == 6
            assert stats["frames_forwarded"] == 2
            assert stats["keyframes_forwarded"] == 1
        assert rig.forwarder.totals.packets_forwarded == 18
        # A NACK is answered with the packet as first sent.
        relay, sub = rig.relays[0], subs[0]
        rig.loop.run_until_complete(relay.retransmit(0))
        assert sub.recv(1) == [wires[0][1]]
        # The relay leaves the fan-out (its socket failed): the history and the sequence
        # numbers come back to it, and the next frame, on a new leg, continues them.
        relay.stopped(OSError("gone"))
        assert relay.leg is None
        assert relay.next_seq == 5
        relay.gate = FrameGate(10_000, False)  # stopped() waits for a key frame
        group.send(RelayFrame(frames[2], 6000, False, 3 << 32), [relay])
        assert [p.sequence_number for p in _parse(sub, sub.recv(3))] == [5, 6, 7]
        assert relay.leg is not None
        rig.loop.run_until_complete(relay.retransmit(65_535))  # from before the new leg
        assert sub.recv(1) == [wires[0][0]]
        assert len(calls) == 3
        # After the end, nothing more is sent.
        relay.end()
        group.send(RelayFrame(frames[3], 9000, False, 4 << 32), [relay])
        assert sub.nothing_more()
        assert relay.sent_packet(7) is not None  # the history is kept
        assert HISTORY == 256
    finally:
        rig.close()


def test_steady_relays_skip_their_policy_until_something_changes(
    monkeypatch: pytest.MonkeyPatch, subs: list[_Sub]
) -> None:
    rig = _Relays(monkeypatch, subs)
    group = rig.forwarder.fan_out
    asked: list[RelayTrack] = []
    for relay in rig.relays:
        relay.gate = FrameGate(10_000, True)  # video: starts on a key frame

        def admit(frame: RelayFrame, relay: RelayTrack = relay, own: Any = relay.admit) -> Any:
            asked.append(relay)
            return own(frame)

        relay.admit = admit  # type: ignore[method-assign]
    payloads = [os.urandom(1000), os.urandom(20)]
    ntp = 0

    def send(key: bool) -> None:
        nonlocal ntp
        ntp += 1 << 32  # a second apart: every frame is also a check of the steady set
        group.send(RelayFrame(payloads, ntp >> 22, key, ntp), rig.forwarder.relays)

    try:
        send(True)  # the policy of each relay is asked, then it is steady
        assert len(asked) == 3
        assert set(group.steady) == set(rig.relays)
        send(False)
        send(False)
        assert len(asked) == 3  # not asked again
        for relay, sub in zip(rig.relays, subs, strict=True):
            assert len(sub.recv(6)) == 6
            assert relay.frames_forwarded == 3
            assert relay.keyframes_forwarded == 1
            assert relay.packets_forwarded == relay.packets_mmsg == 6
            assert relay.bytes_forwarded == 3 * 1020
        assert rig.forwarder.totals.packets_forwarded == 18
        # Upstream loss (Forwarder.on_gap): every relay waits for a key frame again.
        for relay in rig.relays:
            relay.gate.lost()
        group.gap()
        assert not group.steady
        send(False)  # asked, and dropped by every policy
        assert len(asked) == 6
        assert all(sub.nothing_more() for sub in subs)
        send(True)
        assert len(asked) == 9
        assert set(group.steady) == set(rig.relays)
        assert all(len(sub.recv(2)) == 2 for sub in subs)
        # A transport that closes is found by the next check: its relay asks its policy
        # again (which sends through asyncio, that drops it); the others stay steady.
        rig.transports[0].close()
        send(False)
        assert set(group.steady) == set(rig.relays[1:])
        assert rig.relays[0].frames_forwarded == 5  # counted up to its leaving
        send(False)
        assert asked[-1] is rig.relays[0]
        assert len(asked) == 10
        assert all(len(sub.recv(4)) == 4 for sub in subs[1:])
        # A frame for some relays only (RelayTrack.send): the steady ones left out leave
        # the set, counted up to now, and get nothing.
        one = rig.relays[1]
        ntp += 1 << 32
        group.send(RelayFrame(payloads, ntp >> 22, False, ntp), {one})
        assert set(group.steady) == {one}
        assert len(subs[1].recv(2)) == 2
        assert subs[2].nothing_more()
        assert rig.relays[2].frames_forwarded == 6
        assert one.frames_forwarded == 7
    finally:
        rig.close()
