"""The router's egress (e2ee.sfu.egress.RelayTrack.send) with each SRTP profile forced:
frames relayed through the Rust sender (e2ee._srtp) to a real UDP socket on loopback are
unprotected by libsrtp's receiving session (pylibsrtp, as an aiortc subscriber does) and
parse to the packets the router means to send: consecutive sequence numbers across a
wrap, the marker on each frame's last packet, the ``mid`` and ``abs-send-time``
extensions, the publisher's payloads unchanged.  The same through aiortc's libsrtp
session when there is no Rust sender.  The real-peers test is
tests/integration/test_router_srtp.py."""

from __future__ import annotations

import os
import socket
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
from e2ee.sfu.egress import RelayTrack
from e2ee.sfu.frames import RelayFrame, Totals
from e2ee.sfu.policy import FrameGate

LIBSRTP = {
    "SRTP_AEAD_AES_256_GCM": (Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12),
    "SRTP_AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
    "SRTP_AES128_CM_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
}
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


class _Socket:
    """A loopback UDP pair: the relay sends with ``sendto``, the test reads ``rx``."""

    def __init__(self) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.settimeout(5)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.address = self.rx.getsockname()
        self.sendto = self.tx.sendto

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


def relay_with(
    monkeypatch: pytest.MonkeyPatch, name: str, rust: bool
) -> tuple[RelayTrack, _Socket, Session]:
    profile, key_len, salt_len = LIBSRTP[name]
    key, salt = os.urandom(key_len), os.urandom(salt_len)
    tx = Session(Policy(key=key + salt, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    rx = Session(Policy(key=key + salt, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
    sock = _Socket()
    forwarder = SimpleNamespace(
        kind="video", video=True, totals=Totals(), track_id="t", relays=set()
    )
    relay = RelayTrack(forwarder, "sub", 256)  # type: ignore[arg-type]
    relay._configure(PARAMETERS)
    relay._sender = SimpleNamespace()  # type: ignore[assignment]
    relay.media_ssrc = 0x5EED_0001
    relay.next_seq = 65_533  # the second frame wraps
    relay.gate = FrameGate(256, False)
    monkeypatch.setattr(compat, "rtp_path", lambda s: (tx.protect, sock, sock.address))
    monkeypatch.setattr(compat, "note_rtp_sent", lambda *a: None)
    sender = _srtp.SrtpSender(name, key, salt) if rust else None
    monkeypatch.setattr(srtp, "rust_sender", lambda s, protect: sender)
    return relay, sock, rx


@pytest.mark.parametrize("rust", [True, False], ids=["rust", "libsrtp"])
@pytest.mark.parametrize("name", sorted(LIBSRTP))
def test_relayed_frames_unprotect_and_parse(
    monkeypatch: pytest.MonkeyPatch, name: str, rust: bool
) -> None:
    relay, sock, rx = relay_with(monkeypatch, name, rust)
    extensions = HeaderExtensionsMap()
    extensions.configure(PARAMETERS)
    frames = [[os.urandom(n) for n in sizes] for sizes in ((1100, 1100, 7), (900, 900, 900, 3))]
    sent, wire = [], []
    try:
        for i, payloads in enumerate(frames):
            frame = RelayFrame(payloads, 1000 * i, False, (i + 1) << 32)
            relay.send(frame)
            for j, payload in enumerate(payloads):
                wire.append(sock.rx.recv(2048))
                packet = RtpPacket.parse(rx.unprotect(wire[-1]), extensions)
                assert packet.payload == payload
                assert packet.marker == (j == len(payloads) - 1)
                assert packet.payload_type == 97
                assert packet.ssrc == 0x5EED_0001
                assert packet.extensions.mid == "7"
                assert packet.extensions.abs_send_time == frame.abs_send_time
                sent.append(packet.sequence_number)
    finally:
        sock.close()
    assert sent == [(65_533 + k) & 0xFFFF for k in range(7)]
    stats = relay.stats()
    assert stats["srtp_backend"] == ("rust" if rust else "libsrtp")
    assert stats["srtp_profile"] == (name if rust else None)
    assert (stats["packets_rust"], stats["packets_libsrtp"]) == ((7, 0) if rust else (0, 7))
    # NACKs are answered with the packets exactly as first protected.
    assert relay.sent_packet(65_534) == wire[1]


def test_a_refused_frame_is_never_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    relay, sock, _ = relay_with(monkeypatch, "SRTP_AEAD_AES_256_GCM", True)
    try:
        relay.send(RelayFrame([b"one"], 0, False, 1 << 32))
        assert sock.rx.recv(2048)
        relay.next_seq = 65_533  # a bug that would reuse an SRTP index
        relay.send(RelayFrame([b"two"], 1, False, 2 << 32))
        sock.rx.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.rx.recv(2048)
    finally:
        sock.close()
    assert relay.packets_rust == 1
    assert relay.frames_forwarded == 1
    assert relay.path is None  # the relay stopped; the next frame resolves it again


def test_the_facade_logs_why_a_transport_has_no_rust_sender(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Dtls:
        state = "connected"

    dtls: Any = Dtls()
    sender: Any = SimpleNamespace(transport=dtls)
    monkeypatch.setattr(compat, "srtp_tx_keying", lambda d: ("SRTP_NULL_SHA1_80", b"k", b"s"))
    caplog.set_level("INFO", logger="e2ee.rtc.srtp")
    for _ in range(3):
        assert srtp.rust_sender(sender, lambda p: p) is None
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "router: SRTP by aiortc's libsrtp on this transport: "
        "SRTP profile SRTP_NULL_SHA1_80 is not implemented in e2ee._srtp"
    ]


def test_the_facade_refuses_keys_that_disagree_with_aiortc(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Dtls:
        state = "connected"

    name = "SRTP_AEAD_AES_128_GCM"
    profile, key_len, salt_len = LIBSRTP[name]
    key, salt = os.urandom(key_len), os.urandom(salt_len)
    aiortc_tx = Session(
        Policy(key=key + salt, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    )
    caplog.set_level("INFO", logger="e2ee.rtc.srtp")
    good: Any = SimpleNamespace(transport=Dtls())
    monkeypatch.setattr(compat, "srtp_tx_keying", lambda d: (name, key, salt))
    assert srtp.rust_sender(good, aiortc_tx.protect) is not None
    bad: Any = SimpleNamespace(transport=Dtls())
    monkeypatch.setattr(compat, "srtp_tx_keying", lambda d: (name, key[::-1], salt))
    assert srtp.rust_sender(bad, aiortc_tx.protect) is None
    assert "do not match aiortc's SRTP session" in caplog.text
    # Not connected yet: no verdict, nothing cached or logged.
    waiting: Any = SimpleNamespace(transport=SimpleNamespace(state="connecting"))
    assert srtp.rust_sender(waiting, aiortc_tx.protect) is None
    assert len(caplog.records) == 1
