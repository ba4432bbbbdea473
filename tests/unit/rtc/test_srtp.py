"""The router's Rust SRTP sender (e2ee._srtp) against libsrtp (pylibsrtp, what aiortc
uses): for each profile aiortc negotiates, the packets it protects are byte-equal to
libsrtp's for the same packets, across a sequence number wrap (the ROC, RFC 3711 §3.3.1),
and libsrtp's receiving session unprotects them.  The RFC vectors run in Rust
(rust/e2ee-srtp, tests/vectors/srtp.json)."""

from __future__ import annotations

import os
import struct

import pytest
from pylibsrtp import Policy, Session

from e2ee import _srtp

LIBSRTP = {
    "SRTP_AEAD_AES_256_GCM": (Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12),
    "SRTP_AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
    "SRTP_AES128_CM_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
}
EXT = b"\xbe\xde\x00\x02" + bytes([0x10, ord("1"), 0x32, 1, 2, 3, 0, 0])  # mid, abs-send-time


def keyed(name: str) -> tuple[_srtp.SrtpSender, Session, Session]:
    """A Rust sender, libsrtp's sender and libsrtp's receiver, all on one fresh key."""
    profile, key_len, salt_len = LIBSRTP[name]
    key, salt = os.urandom(key_len), os.urandom(salt_len)
    tx = Session(Policy(key=key + salt, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    rx = Session(Policy(key=key + salt, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
    return _srtp.SrtpSender(name, key, salt), tx, rx


def rtp(seq: int, ssrc: int, payload: bytes, *, marker: bool = False, csrcs: int = 0) -> bytes:
    b0 = 0x90 | csrcs
    header = struct.pack("!BBHII", b0, 96 | (0x80 if marker else 0), seq, 90_000 + seq, ssrc)
    return header + os.urandom(4 * csrcs) + EXT + payload


def test_the_profiles_are_those_aiortc_negotiates() -> None:
    from aiortc.rtcdtlstransport import SRTP_PROFILES

    assert {p.openssl_profile.decode() for p in SRTP_PROFILES} <= set(_srtp.PROFILES)
    assert set(_srtp.PROFILES) == set(LIBSRTP)


@pytest.mark.parametrize("name", sorted(LIBSRTP))
def test_protect_is_byte_equal_to_libsrtp_across_a_rollover(name: str) -> None:
    rust, tx, rx = keyed(name)
    assert rust.profile == name
    # Two SSRCs, each with its own ROC; payload sizes from 0 to a full MTU; CSRCs too.
    seqs = [*range(65_530, 65_536), *range(6)]
    for n, seq in enumerate(seqs):
        for ssrc, size in ((0x1234_5678, n * 97 % 1200), (0x0BAD_CAFE, 1)):
            packet = rtp(seq, ssrc, os.urandom(size), marker=n % 3 == 0, csrcs=n % 2)
            protected = rust.protect(packet)
            assert protected == tx.protect(packet), (name, seq, ssrc)
            assert len(protected) == len(packet) + rust.tag_len
            assert rx.unprotect(protected) == packet
    # libsrtp's own rule for the first packets: ROC stays 0 below 2^15, so 100 then
    # 65000 is a step forward (index 65000), not back into ROC -1.
    for seq in (100, 65_000, 65_001):
        packet = rtp(seq, 0x77, b"x" * 50)
        assert rust.protect(packet) == tx.protect(packet)


@pytest.mark.parametrize("name", sorted(LIBSRTP))
def test_protect_frame_builds_the_packets_libsrtp_would_protect(name: str) -> None:
    rust, tx, rx = keyed(name)
    payloads = [os.urandom(1100), bytearray(os.urandom(1100)), memoryview(os.urandom(300))]
    first = 65_534  # the frame wraps: 65534, 65535, 0
    out = rust.protect_frame(0x90, 97, first, 123_456, 0xCAFE_F00D, EXT, payloads)
    assert len(out) == 3
    for i, (payload, protected) in enumerate(zip(payloads, out, strict=True)):
        seq = (first + i) & 0xFFFF
        marker = 0x80 if i == 2 else 0
        plain = struct.pack("!BBHII", 0x90, 97 | marker, seq, 123_456, 0xCAFE_F00D)
        plain += EXT + bytes(payload)
        assert protected == tx.protect(plain)
        assert rx.unprotect(protected) == plain
    # Without an extension: X clear, header of 12 bytes.
    (plain_out,) = rust.protect_frame(0x80, 111, 1, 960, 0xCAFE_F00D, b"", [b"opus"])
    plain = struct.pack("!BBHII", 0x80, 111 | 0x80, 1, 960, 0xCAFE_F00D) + b"opus"
    assert plain_out == tx.protect(plain)
    assert rust.protect_frame(0x80, 111, 2, 960, 1, b"", []) == []


def test_an_index_is_never_used_twice() -> None:
    rust, _, _ = keyed("SRTP_AEAD_AES_256_GCM")
    packet = rtp(7, 1, b"payload")
    rust.protect(packet)
    with pytest.raises(ValueError, match="not above the last one protected"):
        rust.protect(packet)
    with pytest.raises(ValueError, match="not above"):
        rust.protect_frame(0x90, 96, 6, 0, 1, EXT, [b"older"])
    # Other SSRCs are independent; the refused calls changed nothing.
    assert rust.protect(rtp(7, 2, b"payload"))
    assert rust.protect(rtp(8, 1, b"payload"))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.protect(b"\x80\x60"), "shorter than the 12-byte fixed header"),
        (lambda s: s.protect(b"\x40" + bytes(11)), "version is not 2"),
        (lambda s: s.protect(b"\x90" + bytes(11) + b"\xbe\xde\x00\x09"), "longer than"),
        (lambda s: s.protect_frame(0x80, 128, 0, 0, 0, b"", [b""]), "payload_type"),
        (lambda s: s.protect_frame(0x80, 1, 65_536, 0, 0, b"", [b""]), "first_seq"),
        (lambda s: s.protect_frame(0x80, 1, -1, 0, 0, b"", [b""]), "first_seq"),
        (lambda s: s.protect_frame(0x80, 1, 0, 1 << 32, 0, b"", [b""]), "timestamp"),
        (lambda s: s.protect_frame(0x80, 1, 0, 0, 1 << 40, b"", [b""]), "ssrc"),
        (lambda s: s.protect_frame(0x90, 1, 0, 0, 0, b"", [b""]), "X bit"),
        (lambda s: s.protect_frame(0x80, 1, 0, 0, 0, EXT, [b""]), "X bit"),
        (lambda s: s.protect_frame(0x90, 1, 0, 0, 0, EXT[:-4], [b""]), "whole block"),
        (lambda s: s.protect_frame(0xA0, 1, 0, 0, 0, b"", [b""]), "no padding"),
        (lambda s: s.protect_frame(0x80, 1, 0, 0, 0, b"", [bytes(70_000)]), "UDP datagram"),
    ],
)
def test_bad_input_is_a_value_error(call: object, message: str) -> None:
    rust, _, _ = keyed("SRTP_AES128_CM_SHA1_80")
    with pytest.raises(ValueError, match=message):
        call(rust)  # type: ignore[operator]


def test_construction_errors() -> None:
    with pytest.raises(ValueError, match="unknown SRTP profile"):
        _srtp.SrtpSender("SRTP_NULL_NULL", bytes(16), bytes(14))
    with pytest.raises(ValueError, match="master key must be 32 bytes, got 16"):
        _srtp.SrtpSender("SRTP_AEAD_AES_256_GCM", bytes(16), bytes(12))
    with pytest.raises(ValueError, match="master salt must be 14 bytes, got 12"):
        _srtp.SrtpSender("SRTP_AES128_CM_SHA1_80", bytes(16), bytes(12))
    with pytest.raises(TypeError):
        _srtp.SrtpSender("SRTP_AES128_CM_SHA1_80", "not bytes", bytes(14))  # type: ignore[arg-type]
    sender = _srtp.SrtpSender("SRTP_AES128_CM_SHA1_80", bytes(16), bytes(14))
    assert "SRTP_AES128_CM_SHA1_80" in repr(sender)
    assert bytes(16).hex() not in repr(sender)
