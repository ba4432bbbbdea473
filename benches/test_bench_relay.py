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
