"""KID collisions: two senders that drew the same KID under one secret would repeat a
keystream.  A ring that authenticates a frame under one of its own sending KIDs, which it
did not send itself, moves that track to a fresh KID; receivers keep decrypting."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import e2ee
from e2ee import FrameDecryptor, FrameEncryptor, KeyRing
from e2ee.crypto.keyring import RECORDED_TAGS
from e2ee.errors import DecryptionInternalError
from support import FIXTURES

SECRET = "correct horse battery staple"

FORCED = 0x0000_C0FF_EE00_0001  # the 48 random bits both senders are made to draw


def forced_then_random(*low48: int) -> Callable[[int], int]:
    """A KID source that returns the given 48-bit values first, then real random KIDs."""
    queue: Iterator[int] = iter(low48)

    def source(secret_id: int) -> int:
        r = next(queue, None)
        return e2ee.new_kid(secret_id) if r is None else secret_id << 48 | r

    return source


class Participant:
    """One ring, one outgoing VP8 track, one decryptor for the other one's track.  Each
    participant sends its own picture (``tag`` in every frame), as real cameras do."""

    def __init__(self, source: Callable[[int], int], tag: int) -> None:
        self.ring = KeyRing("session-1", kdf_iterations=1000, kid_source=source)
        self.ring.set_secret(SECRET)
        self.enc = FrameEncryptor(self.ring, "vp8")
        self.dec = FrameDecryptor(self.ring, "vp8")
        self.tag = tag
        self.collisions: list[int] = []
        self.ring.add_collision_listener(self.collisions.append)

    def frame(self, i: int) -> bytes:
        base = FRAMES[i % len(FRAMES)]
        return base + bytes([self.tag, i & 0xFF])

    def send(self, i: int) -> bytes:
        return self.enc.encrypt(self.frame(i))


FRAMES = [p.read_bytes() for p in sorted(FIXTURES.glob("vp8_*.bin"))]


def pair() -> tuple[Participant, Participant]:
    return (
        Participant(forced_then_random(FORCED), tag=0xA),
        Participant(forced_then_random(FORCED), tag=0xB),
    )


def test_a_forced_collision_is_found_and_the_sender_moves_to_a_fresh_kid() -> None:
    a, b = pair()
    kid = a.enc.kid
    assert kid is not None
    assert kid == b.enc.kid  # the collision: same secret, same KID
    assert a.ring.sending_kids == {kid}

    wire_a = a.send(0)  # both sent their first frame under (KID, CTR 0)
    wire_b = b.send(0)
    assert a.dec.decrypt(wire_b) == b.frame(0)  # A authenticates B's frame on its own KID
    assert a.collisions == [kid]
    assert a.ring.collided_kids == {kid}
    assert a.enc.kid == kid  # a plain read: the move happens at A's next frame
    wire_a = a.send(1)
    assert a.enc.kid not in (None, kid)
    assert e2ee.kid_secret_id(a.enc.kid) == a.ring.secret_id
    assert a.ring.sending_kids == {a.enc.kid}

    # B keeps decrypting A: a new KID under a held secret is simply admitted.  B never
    # authenticated a frame of A's on the shared KID, so B keeps it; they no longer share.
    assert b.dec.decrypt(wire_a) == a.frame(1)
    assert b.collisions == []
    for i in range(2, 50):
        assert b.dec.decrypt(a.send(i)) == a.frame(i)
        assert a.dec.decrypt(b.send(i - 1)) == b.frame(i - 1)
        assert a.enc.kid != b.enc.kid
    assert a.collisions == [kid]
    assert b.enc.kid == kid


def test_both_sides_finding_the_collision_both_move_and_never_share_again() -> None:
    a, b = pair()
    kid = a.enc.kid
    wire_a, wire_b = a.send(0), b.send(0)
    assert a.dec.decrypt(wire_b) == b.frame(0)
    assert b.dec.decrypt(wire_a) == a.frame(0)
    assert a.collisions == b.collisions == [kid]
    for i in range(1, 50):
        wire_a, wire_b = a.send(i), b.send(i)
        assert kid not in (a.enc.kid, b.enc.kid)
        assert a.enc.kid != b.enc.kid
        assert b.dec.decrypt(wire_a) == a.frame(i)
        assert a.dec.decrypt(wire_b) == b.frame(i)
    assert a.collisions == b.collisions == [kid]
    assert a.dec.stats["frames_ok"] == b.dec.stats["frames_ok"] == 50


def test_the_sender_that_started_later_finds_it_from_any_frame() -> None:
    # A has sent far more than the tags it records; B starts now.  B sees CTRs it has not
    # used yet, so the frame cannot be its own.
    a, b = pair()
    for i in range(RECORDED_TAGS + 50):
        wire_a = a.send(i)
    kid = b.enc.kid
    b.send(0)
    assert b.dec.decrypt(wire_a) == a.frame(RECORDED_TAGS + 49)
    assert b.collisions == [kid]
    b.send(1)
    assert b.enc.kid != a.enc.kid


def test_the_collided_kid_is_never_drawn_again() -> None:
    # A's source would hand out the collided KID again: the ring refuses it.
    a = Participant(forced_then_random(FORCED, FORCED, FORCED), tag=0xA)
    b = Participant(forced_then_random(FORCED), tag=0xB)
    kid = a.enc.kid
    a.dec.decrypt(b.send(0))
    a.send(0)
    assert a.enc.kid not in (None, kid)


def test_an_unauthenticated_frame_on_an_own_kid_changes_nothing() -> None:
    a, b = pair()
    kid = a.enc.kid
    wire = bytearray(b.send(0))
    wire[-1] ^= 1  # the KID is A's, but the frame is forged
    with pytest.raises(DecryptionInternalError):
        a.dec.decrypt(bytes(wire))
    assert a.collisions == []
    assert a.ring.collided_kids == frozenset()
    a.send(0)
    assert a.enc.kid == kid


def test_own_frames_coming_back_are_no_collision() -> None:
    # A loopback (one ring encrypting and decrypting, as benchmarks do) or a router
    # echoing a client's frames back to it: copies of its own frames, old and new.
    a = Participant(forced_then_random(), tag=0xA)
    kid = a.enc.kid
    wires = [a.send(i) for i in range(RECORDED_TAGS + 10)]
    for i in (0, 1, RECORDED_TAGS - 1, RECORDED_TAGS + 5, RECORDED_TAGS + 9):
        assert a.dec.decrypt(wires[i]) == a.frame(i)
    for i in range(5):
        assert a.dec.decrypt(a.send(RECORDED_TAGS + 10 + i)) == a.frame(RECORDED_TAGS + 10 + i)
    assert a.collisions == []
    assert a.enc.kid == kid


def test_only_the_owning_track_moves() -> None:
    a, b = pair()
    audio = FrameEncryptor(a.ring, "opus")  # A's second track, on a random KID
    audio_kid = audio.kid
    assert a.ring.sending_kids == {a.enc.kid, audio_kid}
    a.send(0)
    a.dec.decrypt(b.send(0))
    audio.encrypt(b"\xfc" + bytes(20))
    a.send(1)
    assert audio.kid == audio_kid
    assert a.enc.kid != b.enc.kid
    assert a.ring.sending_kids == {a.enc.kid, audio_kid}


def test_a_kid_of_an_old_secret_is_no_collision() -> None:
    # Own KIDs count only under the current secret: after a change, a frame under the
    # old KID (still within its grace period) is another sender's old frame, not a
    # second sender on a KID this ring sends under.
    a, b = pair()
    a.ring.set_secret("a brand new secret")
    assert a.ring.sending_kids == frozenset()
    a.dec.decrypt(b.send(0))
    assert a.collisions == []
