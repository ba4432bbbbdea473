"""FrameEncryptor / FrameDecryptor: codec framing, states, events, counters, and
everything that must be dropped (tampered, truncated, replayed, not an SFrame)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import e2ee
from e2ee import DecryptorEvent, FrameDecryptor, FrameEncryptor, KeyRing
from e2ee.crypto.frames import MISMATCH_THRESHOLD
from e2ee.crypto.sframe import decode_header
from e2ee.errors import (
    DecryptionInternalError,
    EncryptionInternalError,
    EncryptionSecretMismatch,
    EncryptionSecretMissing,
    UnsupportedCodec,
)
from e2ee.wire import codecs
from support import FIXTURES

SECRET = "correct horse battery staple"


def ring(secret: str | None = SECRET, grace: float = 10.0) -> KeyRing:
    r = KeyRing("session-1", kdf_iterations=1000, grace_period=grace)
    if secret is not None:
        r.set_secret(secret)
    return r


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def vp8_frames() -> list[bytes]:
    return [fixture(p.name) for p in sorted(FIXTURES.glob("vp8_*.bin"))]


def opus_frames() -> list[bytes]:
    return [fixture(p.name) for p in sorted(FIXTURES.glob("opus_*.bin"))]


def collect(dec: FrameDecryptor) -> list[DecryptorEvent]:
    events: list[DecryptorEvent] = []
    dec.add_listener(events.append)
    return events


@pytest.mark.parametrize(("codec", "frames"), [("vp8", vp8_frames), ("opus", opus_frames)])
def test_real_frames_round_trip_with_the_codec_header_in_clear(
    codec: str, frames: Callable[[], list[bytes]]
) -> None:
    sent, received = ring(), ring()
    enc, dec = FrameEncryptor(sent, codec), FrameDecryptor(received, codec)
    originals = frames()
    assert originals
    for frame in originals:
        wire = enc.encrypt(frame)
        n = codecs.clear_prefix_length(codec, frame)
        assert wire[:n] == frame[:n]
        assert frame[n:] not in wire
        assert dec.decrypt(wire) == frame
    assert dec.stats["frames_ok"] == len(originals)
    assert dec.state == "ok"


def test_unsupported_codecs_are_refused() -> None:
    with pytest.raises(UnsupportedCodec):
        FrameEncryptor(ring(), "h264")
    with pytest.raises(UnsupportedCodec):
        FrameDecryptor(ring(), "video/H264")


def test_no_secret_no_frames() -> None:
    enc = FrameEncryptor(ring(None), "opus")
    with pytest.raises(EncryptionSecretMissing):
        enc.encrypt(b"\xfc" + bytes(50))
    wire = FrameEncryptor(ring(), "opus").encrypt(b"\xfc" + bytes(50))
    dec = FrameDecryptor(ring(None), "opus")
    with pytest.raises(EncryptionSecretMissing):
        dec.decrypt(wire)
    assert dec.stats["frames_missing"] == 1
    assert dec.state == "missing"


def test_frames_too_short_for_their_codec_are_never_sent() -> None:
    enc = FrameEncryptor(ring(), "vp8")
    for frame in (b"", b"\x00" * 9, b"\x01\x00"):
        with pytest.raises(EncryptionInternalError):
            enc.encrypt(frame)


def test_mismatch_then_match_events() -> None:
    sender = ring("the publisher's secret")
    receiver = ring("another secret entirely")
    enc, dec = FrameEncryptor(sender, "vp8"), FrameDecryptor(receiver, "vp8")
    events = collect(dec)
    frames = vp8_frames()
    assert len(frames) > MISMATCH_THRESHOLD
    for i, frame in enumerate(frames):
        with pytest.raises(EncryptionSecretMismatch) as info:
            dec.decrypt(enc.encrypt(frame))
        assert info.value.kid == enc.kid
        # Every frame is dropped and counted; the event waits for a run of them.
        assert dec.stats["frames_mismatched"] == i + 1
        assert len(events) == (i + 1 >= MISMATCH_THRESHOLD)
    assert [e.type for e in events] == ["encryption_secret_mismatch"]
    assert events[0].kid == enc.kid
    assert events[0].stats["frames_mismatched"] == MISMATCH_THRESHOLD
    receiver.set_secret("the publisher's secret")
    for frame in frames:
        assert dec.decrypt(enc.encrypt(frame)) == frame
    assert [e.type for e in events] == ["encryption_secret_mismatch", "encryption_secret_match"]
    assert dec.stats["frames_mismatched"] == len(frames)


def test_sender_secret_change_with_and_without_grace() -> None:
    sender = ring("the old secret")
    both = ring("the old secret")
    old_only = ring("the old secret")
    enc = FrameEncryptor(sender, "opus")
    dec_both, dec_old = FrameDecryptor(both, "opus"), FrameDecryptor(old_only, "opus")
    frame = b"\xfc" + bytes(range(80))
    for dec in (dec_both, dec_old):
        assert dec.decrypt(enc.encrypt(frame)) == frame
    both.set_secret("the new secret")  # the old one stays for its grace period
    old_kid = enc.kid
    assert dec_both.decrypt(enc.encrypt(frame)) == frame
    sender.set_secret("the new secret")
    assert enc.kid == old_kid  # reading the KID never re-keys: only encrypt does
    wire = enc.encrypt(frame)
    assert enc.kid != old_kid
    assert dec_both.decrypt(wire) == frame
    with pytest.raises(EncryptionSecretMismatch):
        dec_old.decrypt(wire)


def test_strict_receiver_refuses_the_old_secret_at_once() -> None:
    sender, receiver = ring("the old secret"), ring("the old secret", grace=0.0)
    enc, dec = FrameEncryptor(sender, "opus"), FrameDecryptor(receiver, "opus")
    receiver.set_secret("the new secret")
    with pytest.raises(EncryptionSecretMismatch):
        dec.decrypt(enc.encrypt(b"\xfc" + bytes(40)))


def _tampered(wire: bytes, index: int) -> bytes:
    b = bytearray(wire)
    b[index] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize(
    ("what", "mutate"),
    [
        ("clear byte", lambda w: _tampered(w, 5)),
        ("key-frame flag", lambda w: _tampered(w, 0)),
        ("SFrame header", lambda w: _tampered(w, 10)),
        ("ciphertext", lambda w: _tampered(w, 40)),
        ("tag", lambda w: _tampered(w, len(w) - 1)),
        ("truncated", lambda w: w[:-1]),
        ("truncated to the header", lambda w: w[:12]),
        ("not an SFrame", lambda w: w[:10] + bytes(len(w) - 10)),
        ("empty", lambda w: b""),
    ],
)
def test_damaged_frames_are_dropped_and_counted(
    what: str, mutate: Callable[[bytes], bytes]
) -> None:
    enc, dec = FrameEncryptor(ring(), "vp8"), FrameDecryptor(ring(), "vp8")
    key_frame = vp8_frames()[0]
    assert codecs.is_vp8_keyframe(key_frame)
    wire = enc.encrypt(key_frame)
    with pytest.raises((DecryptionInternalError, EncryptionSecretMismatch)):
        dec.decrypt(mutate(wire))
    stats = dec.stats
    assert stats["frames_ok"] == 0
    assert stats["frames_failed"] + stats["frames_mismatched"] == 1, what
    # The genuine frame still decrypts: a failure never burns its CTR.
    assert dec.decrypt(wire) == key_frame


def test_replayed_frames_are_never_returned_twice() -> None:
    enc, dec = FrameEncryptor(ring(), "opus"), FrameDecryptor(ring(), "opus")
    events = collect(dec)
    wires = [enc.encrypt(bytes([0xFC, i]) + bytes(30)) for i in range(5)]
    for w in reversed(wires):  # reordering within the window is fine
        dec.decrypt(w)
    for w in wires:
        with pytest.raises(DecryptionInternalError) as info:
            dec.decrypt(w)
        assert info.value.reason == "replayed"
    assert dec.stats["frames_replayed"] == 5
    errors = [e for e in events if e.type == "decryption_error"]
    assert len(errors) == 1  # rate-limited to one a second
    assert errors[0].stats["frames_replayed"] >= 1


def test_decryption_error_reasons() -> None:
    enc, dec = FrameEncryptor(ring(), "opus"), FrameDecryptor(ring(), "opus")
    wire = enc.encrypt(b"\xfc" + bytes(30))
    with pytest.raises(DecryptionInternalError) as info:
        dec.decrypt(_tampered(wire, len(wire) - 1))
    assert info.value.reason == "authentication"
    with pytest.raises(DecryptionInternalError) as info:
        dec.decrypt(b"")
    assert info.value.reason == "malformed"


def test_each_track_gets_its_own_kid() -> None:
    r = ring()
    a, b = FrameEncryptor(r, "vp8"), FrameEncryptor(r, "opus")
    assert a.kid != b.kid
    assert a.kid is not None
    assert e2ee.kid_secret_id(a.kid) == r.secret_id


def test_injected_mismatched_frames_below_the_threshold_raise_no_event() -> None:
    # A router injecting one or two frames under an unknown secret id, between genuine
    # frames, never raises encryption_secret_mismatch; the frames are dropped and counted.
    enc, dec = FrameEncryptor(ring(), "opus"), FrameDecryptor(ring(), "opus")
    stranger = FrameEncryptor(ring("a secret nobody holds"), "opus")
    events = collect(dec)
    frame = b"\xfc" + bytes(40)
    for _ in range(5):
        for _ in range(MISMATCH_THRESHOLD - 1):
            with pytest.raises(EncryptionSecretMismatch):
                dec.decrypt(stranger.encrypt(frame))
        assert dec.decrypt(enc.encrypt(frame)) == frame  # a good frame ends the run
    assert events == []
    assert dec.stats["frames_mismatched"] == 5 * (MISMATCH_THRESHOLD - 1)
    assert dec.state == "ok"


@pytest.mark.parametrize("threshold", [1, 2, 5])
def test_mismatch_threshold_is_a_parameter(threshold: int) -> None:
    stranger = FrameEncryptor(ring("a secret nobody holds"), "opus")
    dec = FrameDecryptor(ring(), "opus", mismatch_threshold=threshold)
    events = collect(dec)
    for i in range(threshold + 2):
        with pytest.raises(EncryptionSecretMismatch):
            dec.decrypt(stranger.encrypt(b"\xfc" + bytes(20)))
        assert len(events) == (i + 1 >= threshold)
    assert dec.state == "mismatch"


@pytest.mark.parametrize("threshold", [0, -1, 1.5, True])
def test_bad_mismatch_thresholds_are_refused(threshold: object) -> None:
    with pytest.raises(ValueError, match="mismatch_threshold"):
        FrameDecryptor(ring(), "opus", mismatch_threshold=threshold)  # type: ignore[arg-type]


def test_failures_other_than_mismatch_do_not_end_a_mismatch_run() -> None:
    enc, dec = FrameEncryptor(ring(), "opus"), FrameDecryptor(ring(), "opus")
    stranger = FrameEncryptor(ring("a secret nobody holds"), "opus")
    events = collect(dec)
    for _ in range(MISMATCH_THRESHOLD):
        with pytest.raises(EncryptionSecretMismatch):
            dec.decrypt(stranger.encrypt(b"\xfc" + bytes(20)))
        with pytest.raises(DecryptionInternalError):
            dec.decrypt(_tampered(enc.encrypt(b"\xfc" + bytes(20)), -1))
    assert [e.type for e in events if e.type != "decryption_error"] == [
        "encryption_secret_mismatch"
    ]


def test_reading_the_kid_never_rekeys() -> None:
    r = ring()
    enc = FrameEncryptor(r, "opus")
    first = enc.kid
    assert first is not None
    r.set_secret("a brand new secret")
    for _ in range(3):
        assert enc.kid == first
    assert r.sending_kids == frozenset()  # the old KID is not one under the new secret
    assert enc.prepare() not in (None, first)
    assert enc.kid == enc.prepare()
    assert r.sending_kids == {enc.kid}
    wire = enc.encrypt(b"\xfc" + bytes(10))
    assert decode_header(wire[1:])[0] == enc.kid


def test_planned_change_with_accept_secret_sees_no_mismatch() -> None:
    # Three participants, each with one ring, one outgoing VP8 track and a decryptor for
    # each other participant's track.  The sequence documented on KeyRing.accept_secret:
    # everyone accepts the new secret, then everyone sets it, one at a time, with real
    # frames flowing both ways after every single step.  With the strictest threshold,
    # not one frame may be a mismatch.
    names = ("alice", "bob", "carol")
    rings = {n: ring("the old secret") for n in names}
    encs = {n: FrameEncryptor(rings[n], "vp8") for n in names}
    decs = {
        (me, them): FrameDecryptor(rings[me], "vp8", mismatch_threshold=1)
        for me in names
        for them in names
        if me != them
    }
    events = {pair: collect(dec) for pair, dec in decs.items()}
    frames = vp8_frames()
    sent = 0

    def exchange() -> None:
        nonlocal sent
        for them, enc in encs.items():
            frame = frames[sent % len(frames)]
            wire = enc.encrypt(frame)
            for (me, sender), dec in decs.items():
                if sender == them:
                    assert dec.decrypt(wire) == frame, (me, them)
        sent += 1

    exchange()
    old_kids = {n: encs[n].kid for n in names}
    for n in names:
        rings[n].accept_secret("the new secret")
        exchange()
        exchange()
        assert encs[n].kid == old_kids[n]  # accepting never changes what is sent
    for n in names:
        rings[n].set_secret("the new secret")
        exchange()
        exchange()
        assert encs[n].kid != old_kids[n]
        assert e2ee.kid_secret_id(encs[n].kid) == rings[n].secret_id
    for pair, dec in decs.items():
        assert dec.stats["frames_mismatched"] == 0, pair
        assert dec.stats["frames_ok"] == sent, pair
        assert events[pair] == [], pair
