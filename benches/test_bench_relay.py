"""Benchmarks: what the router spends per forwarded packet on its egress, side by side.

Group ``relay-frame-{kind}-{profile}``: one frame (a 1 Mbit/s VP8 delta frame in 4
packets, or one Opus packet) relayed to one subscriber, with SRTP profile ``aes128cm``
(AES-128-CM + HMAC-SHA1-80, RFC 3711) or ``aes256gcm`` (AEAD_AES_256_GCM, RFC 7714: what
aiortc peers negotiate):

* ``e2ee-rust``: :meth:`e2ee.sfu.egress.RelayTrack.send`, the router's path, with its
  Rust SRTP sender (e2ee._srtp: the frame's packets built and protected in one call),
  then ``sendto`` per packet;
* ``e2ee-rust-mmsg``: the same on a real asyncio datagram transport (the router's kind):
  the frame built, protected and written in one Rust call, one ``sendmmsg(2)``;
* ``e2ee``: the same path protecting with aiortc's libsrtp session (pylibsrtp), packet by
  packet: the router's fallback, and its path before e2ee._srtp;
* ``aiortc``: what aiortc's sender does for the same packets (``RtpPacket`` with
  ``abs-send-time`` and ``mid``, ``serialize``, SRTP protect, ``sendto``), the router's
  egress before packet relay.

All protect with real keys (the Rust sender and libsrtp with the same ones) and write to
a real UDP socket on loopback; the receiving socket is drained between rounds.
``e2ee bench router`` measures the whole router (ICE, DTLS, ingress, RTCP).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiortc import clock
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from pylibsrtp import Policy, Session
from pytest_benchmark.fixture import BenchmarkFixture

from e2ee import _srtp
from e2ee.rtc import compat, srtp
from e2ee.sfu.egress import RelayTrack
from e2ee.sfu.egress_fanout import FanoutGroup
from e2ee.sfu.frames import RelayFrame, Totals
from e2ee.sfu.policy import FrameGate

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
AST = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
FRAMES = {
    # ~1 Mbit/s at 30 fps: 4,200-byte delta frames in 4 packets; 20 ms Opus at 32 kbit/s.
    "video": [bytes([0x90 if i == 0 else 0x80, 0x80, 0x12]) + os.urandom(1050) for i in range(4)],
    "audio": [os.urandom(80)],
}


class _Socket:
    """A UDP socket on loopback as the relay's transport, and one it sends to."""

    def __init__(self) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setblocking(False)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.address = self.rx.getsockname()
        self.sendto = self.tx.sendto

    def get_write_buffer_size(self) -> int:
        return 0

    def drain(self) -> None:
        try:
            while True:
                self.rx.recv(2048)
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


PROFILES = {  # name: (DTLS-SRTP name, libsrtp profile, key + salt bytes)
    "aes128cm": ("SRTP_AES128_CM_SHA1_80", Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16 + 14),
    "aes256gcm": ("SRTP_AEAD_AES_256_GCM", Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32 + 12),
}


def _session(profile: str, key: bytes) -> Session:
    _, libsrtp, _ = PROFILES[profile]
    return Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=libsrtp))


def _parameters(kind: str) -> RTCRtpSendParameters:
    codec = (
        RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
        if kind == "video"
        else RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, payloadType=111)
    )
    return RTCRtpSendParameters(
        codecs=[codec],
        headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=1, uri=MID),
            RTCRtpHeaderExtensionParameters(id=3, uri=AST),
        ],
        muxId="0",
    )


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("kind", ["video", "audio"])
@pytest.mark.parametrize("path", ["e2ee-rust-mmsg", "e2ee-rust", "e2ee", "aiortc"])
def test_relay_frame(
    benchmark: BenchmarkFixture,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    path: str,
    profile: str,
) -> None:
    benchmark.group = f"relay-frame-{kind}-{profile}"
    payloads = FRAMES[kind]
    sock = _Socket()
    name, _, key_len = PROFILES[profile]
    key = os.urandom(key_len)
    session = _session(profile, key)
    op: Callable[[], Any]
    loop = asyncio.new_event_loop()
    transport: Any = sock
    if path == "e2ee-rust-mmsg":
        transport, _ = loop.run_until_complete(
            loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        )
    if path.startswith("e2ee"):
        forwarder = SimpleNamespace(
            kind=kind, video=kind == "video", totals=Totals(), track_id="t", relays=set()
        )
        relay = RelayTrack(forwarder, "bench", 256)  # type: ignore[arg-type]
        relay._configure(_parameters(kind))
        relay._sender = SimpleNamespace()  # type: ignore[assignment]
        relay.gate = FrameGate(256, False)  # no key frame wait: measure the send path
        monkeypatch.setattr(
            compat, "rtp_path", lambda s: (session.protect, transport, sock.address)
        )
        split = len(key) - (14 if profile == "aes128cm" else 12)
        rust = _srtp.SrtpSender(name, key[:split], key[split:]) if "rust" in path else None
        monkeypatch.setattr(srtp, "rust_sender", lambda s, protect: rust)
        monkeypatch.setattr(compat, "note_rtp_sent", lambda *a: None)
        frame = RelayFrame(payloads, 3000, False, 1 << 40)
        op = lambda: relay.send(frame)  # noqa: E731
    else:
        extensions = HeaderExtensionsMap()
        extensions.configure(_parameters(kind))
        state = {"seq": 0}

        def aiortc_send() -> None:
            # rtcrtpsender.py:377-401, per packet
            seq = state["seq"]
            for i, payload in enumerate(payloads):
                packet = RtpPacket(payload_type=97, sequence_number=seq, timestamp=3000)
                packet.ssrc = 1234
                packet.payload = payload
                packet.marker = int(i == len(payloads) - 1)
                packet.extensions.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
                packet.extensions.mid = "0"
                sock.sendto(session.protect(packet.serialize(extensions)), sock.address)
                seq = (seq + 1) & 0xFFFF
            state["seq"] = seq

        op = aiortc_send
    try:
        benchmark.pedantic(op, rounds=3000, warmup_rounds=20, setup=sock.drain)
    finally:
        sock.close()
        if transport is not sock:
            transport.close()
            loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    if path.startswith("e2ee"):
        stats = relay.stats()
        backend = "rust" if "rust" in path else "libsrtp"
        assert stats["srtp_backend"] == backend, stats  # the path measured is the one named
        mmsg = stats["packets_rust"] if path == "e2ee-rust-mmsg" else 0
        assert stats["packets_mmsg"] == mmsg, stats


# -- one frame to many subscribers -----------------------------------------------------

FANOUT_SUBSCRIBERS = 50


class _Subscribers:
    """``n`` subscribers on loopback: per subscriber a receiving socket, the router's
    asyncio datagram transport towards it and its SRTP keys (AEAD_AES_256_GCM)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.rx: list[socket.socket] = []
        self.transports: list[Any] = []
        self.senders: list[Any] = []
        for _ in range(n):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            rx.bind(("127.0.0.1", 0))
            rx.setblocking(False)
            self.rx.append(rx)
            transport, _ = loop.run_until_complete(
                loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
            )
            self.transports.append(transport)
            self.senders.append(
                _srtp.SrtpSender(PROFILES["aes256gcm"][0], os.urandom(32), os.urandom(12))
            )

    def drain(self) -> None:
        for rx in self.rx:
            try:
                while True:
                    rx.recv(2048)
            except BlockingIOError:
                pass

    def close(self) -> None:
        for rx in self.rx:
            rx.close()
        for transport in self.transports:
            transport.close()


def _per_relay_send(relays: list[dict[str, Any]], frame: RelayFrame) -> None:
    """The egress before the fan-out (RelayTrack.send -> _send_mmsg, 3a04bf5..this
    change), per subscriber: its policy, one Rust call that builds, protects and writes
    the frame (``SrtpSender.send_frame``, one ``sendmmsg``), the packets kept for NACKs
    in Python, the counters."""
    for r in relays:
        gate: FrameGate = r["gate"]
        if gate.admit(frame.keyframe, 0) != 0:
            continue
        seq = r["seq"]
        timestamp = (frame.timestamp + r["ts_offset"]) & 0xFFFFFFFF
        packets, taken = r["rust"].send_frame(
            r["fd"], r["address"], 0x90, 97, seq, timestamp, r["ssrc"], r["ext"], frame.payloads
        )
        r["seq"] = (seq + len(packets)) & 0xFFFF
        history = r["history"]
        for data in packets:
            history[seq % 256] = (seq, data)
            seq = (seq + 1) & 0xFFFF
        r["packets"] += len(packets)
        r["mmsg"] += taken
        r["frames"] += 1
        r["bytes"] += frame.size


@pytest.mark.parametrize(
    "path", ["per-relay", "fanout-gso", "fanout-no-gso", "fanout-gso-policy-every-frame"]
)
def test_relay_frame_fanout(
    benchmark: BenchmarkFixture, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """One 4-packet video frame to FANOUT_SUBSCRIBERS subscribers: the per-subscriber Rust
    calls of before against one :class:`e2ee._srtp.Fanout` call (with and without GSO).
    The fan-out's relays are steady after the first frame (no Python per relay);
    ``...-policy-every-frame`` keeps them out of the steady set, so each relay's policy
    runs every frame, as before it.  ``extra_info["us_per_packet"]``: the median divided
    by the packets sent."""
    benchmark.group = f"relay-fanout-{FANOUT_SUBSCRIBERS}"
    loop = asyncio.new_event_loop()
    subs = _Subscribers(loop, FANOUT_SUBSCRIBERS)
    frame = RelayFrame(FRAMES["video"], 3000, False, 1 << 40)
    ext = b"\xbe\xde\x00\x01\x10\x30\x00\x00"
    op: Callable[[], Any]
    forwarder: Any = None
    if path == "per-relay":
        relays = [
            {
                "gate": FrameGate(256, False),
                "rust": sender,
                "fd": transport.get_extra_info("socket").fileno(),
                "address": rx.getsockname(),
                "seq": 0,
                "ts_offset": 7,
                "ssrc": 1000 + i,
                "ext": ext,
                "history": [None] * 256,
                "packets": 0,
                "mmsg": 0,
                "frames": 0,
                "bytes": 0,
            }
            for i, (sender, transport, rx) in enumerate(
                zip(subs.senders, subs.transports, subs.rx, strict=True)
            )
        ]
        op = lambda: _per_relay_send(relays, frame)  # noqa: E731
    else:
        forwarder = SimpleNamespace(
            kind="video", video=True, totals=Totals(), track_id="t", relays=set()
        )
        paths = {}
        for i, (sender, transport, rx) in enumerate(
            zip(subs.senders, subs.transports, subs.rx, strict=True)
        ):
            relay = RelayTrack(forwarder, f"s{i}", 256)
            relay._configure(_parameters("video"))
            relay._sender = SimpleNamespace(id=i)  # type: ignore[assignment]
            relay.gate = FrameGate(256, False)
            paths[i] = (None, transport, rx.getsockname(), sender)
            forwarder.relays.add(relay)
        monkeypatch.setattr(compat, "rtp_path", lambda s: paths[s.id][:3])
        monkeypatch.setattr(srtp, "rust_sender", lambda s, protect: paths[s.id][3])
        monkeypatch.setattr(compat, "note_rtp_sent", lambda *a: None)
        group = forwarder.fan_out
        group.fanout.gso = path.startswith("fanout-gso")
        if path.endswith("policy-every-frame"):
            monkeypatch.setattr(FanoutGroup, "_enter", lambda self, relay: None)
        op = lambda: group.send(frame, forwarder.relays)  # noqa: E731
    try:
        benchmark.pedantic(op, rounds=400, warmup_rounds=5, setup=subs.drain)
    finally:
        subs.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    packets = FANOUT_SUBSCRIBERS * len(frame.payloads)
    if benchmark.stats is not None:  # None under --benchmark-disable (CI's untimed pass)
        benchmark.extra_info["us_per_packet"] = round(benchmark.stats["median"] * 1e6 / packets, 3)
    if forwarder is not None:
        stats = [r.stats() for r in forwarder.relays]
        assert all(s["fanout"] and s["packets_mmsg"] == s["packets_forwarded"] for s in stats)
        assert all(s["gso"] is path.startswith("fanout-gso") for s in stats)
        assert len(forwarder.fan_out.steady) == (
            0 if path.endswith("policy-every-frame") else FANOUT_SUBSCRIBERS
        )
