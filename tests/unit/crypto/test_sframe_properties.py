"""Property and edge-case tests of the e2ee SFrame API and of the secret functions.

SFrame (``e2ee.crypto.sframe``):

* round trips for all 8 suites, plaintexts of 0 to 64 KiB, any metadata;
* every single-bit flip of header, ciphertext, tag or metadata is rejected with an
  ``SFrameError`` (and leaves the decryptor able to accept the genuine frame);
* every truncation of a frame is rejected with an ``SFrameError``, never a crash;
* header encode/decode over the whole u64 range, the 7/8 boundary and every byte-length
  boundary (2^8k - 1, 2^8k), truncated and non-minimal headers refused;
* byte-identical output to the independent reference :mod:`e2ee.tools.bench.baseline`;
* replay protection: duplicates refused, in-window reordering accepted, window 0 disables;
* ``encrypt_into``/``decrypt_into`` into bytearray and memoryview, buffers too small,
  overlapping buffers;
* ``str`` where bytes are expected is a ``TypeError``; counter exhaustion at 2^64 - 1.

Secrets (``e2ee.derive_secret_key``, ``secret_id``, ``new_kid``, ``kid_secret_id``):
length limits counted after NFC, NFC equivalence, cross-checks against ``hashlib`` and
``cryptography``'s HKDF, type and argument errors.
"""

from __future__ import annotations

import hashlib
import random
import unicodedata
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import example, given, settings
from hypothesis import strategies as st

import e2ee
from e2ee import errors
from e2ee.crypto import sframe
from e2ee.tools.bench import baseline

MAX_U64 = 2**64 - 1
ALL_SUITES = [sframe.CipherSuite(n) for n in range(1, 9)]
SUITE_ID = "suite{}".format
KEY = bytes(range(32))
ITERATIONS = 1000  # PBKDF2 rounds for the secret tests: enough to check, fast to run


suites = st.sampled_from(ALL_SUITES)
u64 = st.integers(min_value=0, max_value=MAX_U64)
# KIDs and CTRs around every header-length boundary, plus anything else in range.
BOUNDARIES = sorted(
    {0, 7, 8, MAX_U64} | {2 ** (8 * k) - 1 for k in range(1, 9)} | {2 ** (8 * k) for k in range(8)}
)
header_values = st.one_of(st.sampled_from(BOUNDARIES), u64)
base_keys = st.sampled_from([16, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
metadata_st = st.binary(max_size=64)
# st.binary rarely draws large values, so half the plaintexts get a uniform size instead.
plaintexts = st.one_of(
    st.binary(max_size=65536),
    st.integers(0, 65536).map(lambda n: random.Random(n).randbytes(n)),
)


def pair(
    suite: sframe.CipherSuite, kid: int = 5, ctr: int = 0, *, replay_window: int = 128
) -> tuple[Any, Any]:
    """An encryptor and a decryptor that share ``KEY`` under ``kid``."""
    dec = sframe.Decryptor(suite, replay_window=replay_window)
    dec.add_key(kid, KEY)
    return sframe.Encryptor(suite, KEY, kid, counter=ctr), dec


def expected_header_length(kid: int, ctr: int) -> int:
    def extra(v: int) -> int:
        return 0 if v < 8 else (v.bit_length() + 7) // 8

    return 1 + extra(kid) + extra(ctr)


# -- round trips -----------------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(suite=suites, plaintext=plaintexts, metadata=metadata_st)
@example(suite=sframe.CipherSuite(1), plaintext=b"", metadata=b"")
@example(suite=sframe.CipherSuite(6), plaintext=bytes(65536), metadata=b"\x00")
def test_round_trip(suite: sframe.CipherSuite, plaintext: bytes, metadata: bytes) -> None:
    enc, dec = pair(suite)
    frame = enc.encrypt(plaintext, metadata)
    assert len(frame) == enc.output_length(len(plaintext))
    assert len(frame) == 1 + len(plaintext) + suite.nt
    assert enc.counter == 1
    assert dec.decrypt(frame, metadata) == plaintext


@pytest.mark.parametrize("suite", ALL_SUITES, ids=SUITE_ID)
def test_round_trip_many_frames(suite: sframe.CipherSuite) -> None:
    enc, dec = pair(suite, kid=2**40 + 3)
    for i in range(300):
        frame = enc.encrypt(i.to_bytes(2, "big") * i, b"md")
        assert dec.decrypt(frame, b"md") == i.to_bytes(2, "big") * i
    assert enc.counter == 300


# -- tampering -------------------------------------------------------------------------------


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=40, deadline=None)
@given(
    suite=suites,
    kid=header_values,
    ctr=header_values,
    plaintext=st.binary(max_size=40),
    metadata=st.binary(min_size=1, max_size=12),
)
def test_every_bit_flip_is_rejected(
    suite: sframe.CipherSuite, kid: int, ctr: int, plaintext: bytes, metadata: bytes
) -> None:
    enc, dec = pair(suite, kid=kid, ctr=ctr)
    frame = enc.encrypt(plaintext, metadata)
    for bit in range(len(frame) * 8):
        with pytest.raises(errors.SFrameError):
            dec.decrypt(flip(frame, bit), metadata)
    for bit in range(len(metadata) * 8):
        with pytest.raises(errors.AuthenticationFailed):
            dec.decrypt(frame, flip(metadata, bit))
    # Rejected frames must not have consumed the genuine frame's CTR.
    assert dec.decrypt(frame, metadata) == plaintext


@pytest.mark.parametrize("suite", ALL_SUITES, ids=SUITE_ID)
def test_tampered_tag_and_ciphertext_are_authentication_failures(
    suite: sframe.CipherSuite,
) -> None:
    enc, dec = pair(suite)
    frame = enc.encrypt(b"some media payload", b"")
    for index in (1, len(frame) // 2, len(frame) - suite.nt, len(frame) - 1):
        with pytest.raises(errors.AuthenticationFailed):
            dec.decrypt(flip(frame, index * 8), b"")


def test_unknown_kid_reports_the_kid() -> None:
    enc = sframe.Encryptor(sframe.CipherSuite(6), KEY, 1234)
    dec = sframe.Decryptor(sframe.CipherSuite(6))
    dec.add_key(99, KEY)
    with pytest.raises(errors.UnknownKeyId) as info:
        dec.decrypt(enc.encrypt(b"x"))
    assert info.value.kid == 1234


def test_removed_key_is_unknown() -> None:
    enc, dec = pair(sframe.CipherSuite(1), kid=77)
    frame = enc.encrypt(b"x")
    dec.remove_key(77)
    with pytest.raises(errors.UnknownKeyId):
        dec.decrypt(frame)
    with pytest.raises(errors.UnknownKeyId) as info:
        dec.remove_key(77)
    assert info.value.kid == 77


def test_wrong_key_is_authentication_failure() -> None:
    enc = sframe.Encryptor(sframe.CipherSuite(6), KEY, 3)
    dec = sframe.Decryptor(sframe.CipherSuite(6))
    dec.add_key(3, KEY[::-1])
    with pytest.raises(errors.AuthenticationFailed):
        dec.decrypt(enc.encrypt(b"hello"))


def test_other_suite_is_authentication_failure() -> None:
    enc = sframe.Encryptor(sframe.CipherSuite(1), KEY, 3)
    dec = sframe.Decryptor(sframe.CipherSuite(6))
    dec.add_key(3, KEY)
    with pytest.raises(errors.SFrameError):
        dec.decrypt(enc.encrypt(b"hello, a frame long enough for any tag"))


@settings(max_examples=40, deadline=None)
@given(suite=suites, kid=header_values, ctr=header_values, plaintext=st.binary(max_size=48))
def test_every_truncation_is_rejected(
    suite: sframe.CipherSuite, kid: int, ctr: int, plaintext: bytes
) -> None:
    enc, dec = pair(suite, kid=kid, ctr=ctr)
    frame = enc.encrypt(plaintext, b"m")
    header_len = expected_header_length(kid, ctr)
    for length in range(len(frame)):
        with pytest.raises(errors.SFrameError) as info:
            dec.decrypt(frame[:length], b"m")
        if length < header_len:
            assert isinstance(info.value, errors.MalformedHeader)
        elif length < header_len + suite.nt:
            assert isinstance(info.value, errors.InvalidLength)
    assert dec.decrypt(frame, b"m") == plaintext


# -- header ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", BOUNDARIES)
def test_header_boundaries(value: int) -> None:
    for kid, ctr in ((value, 0), (0, value), (value, value)):
        encoded = sframe.encode_header(kid, ctr)
        assert len(encoded) == expected_header_length(kid, ctr)
        assert encoded == baseline.encode_header(kid, ctr)
        assert sframe.decode_header(encoded) == (kid, ctr, len(encoded))


@settings(max_examples=500)
@given(kid=header_values, ctr=header_values, trailer=st.binary(max_size=16))
def test_header_round_trip(kid: int, ctr: int, trailer: bytes) -> None:
    encoded = sframe.encode_header(kid, ctr)
    assert encoded == baseline.encode_header(kid, ctr)
    assert len(encoded) == expected_header_length(kid, ctr)
    assert sframe.decode_header(encoded + trailer) == (kid, ctr, len(encoded))
    for length in range(len(encoded)):
        with pytest.raises(errors.MalformedHeader):
            sframe.decode_header(encoded[:length])


def non_minimal(kid: int, ctr: int, kid_len: int, ctr_len: int) -> bytes:
    """A header holding ``kid``/``ctr`` in ``kid_len``/``ctr_len`` extension bytes."""
    config = (0x08 | (kid_len - 1)) << 4 | 0x08 | (ctr_len - 1)
    return bytes([config]) + kid.to_bytes(kid_len, "big") + ctr.to_bytes(ctr_len, "big")


@pytest.mark.parametrize(
    "data",
    [b"\x80\x05", b"\x08\x00", b"\x80\x07", b"\x90\x00\xff", b"\x09\x00\x08", b"\x87" + bytes(8)],
    ids=lambda b: b.hex(),
)
def test_decode_header_rejects_non_minimal_examples(data: bytes) -> None:
    with pytest.raises(errors.MalformedHeader):
        sframe.decode_header(data)


@settings(max_examples=300)
@given(kid=u64, ctr=u64, data=st.data())
def test_decode_header_rejects_non_minimal(kid: int, ctr: int, data: st.DataObject) -> None:
    kid_min = max(1, (kid.bit_length() + 7) // 8)
    ctr_min = max(1, (ctr.bit_length() + 7) // 8)
    kid_len = data.draw(st.integers(kid_min, 8), label="kid_len")
    ctr_len = data.draw(st.integers(ctr_min, 8), label="ctr_len")
    encoded = non_minimal(kid, ctr, kid_len, ctr_len)
    if encoded == sframe.encode_header(kid, ctr):
        assert sframe.decode_header(encoded) == (kid, ctr, len(encoded))
    else:
        with pytest.raises(errors.MalformedHeader):
            sframe.decode_header(encoded)


def test_encode_header_out_of_range() -> None:
    for kid, ctr in ((-1, 0), (0, -1), (2**64, 0), (0, 2**64)):
        with pytest.raises((OverflowError, ValueError)):
            sframe.encode_header(kid, ctr)


# -- cross-check against the independent baseline --------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    suite=suites,
    base_key=base_keys,
    kid=header_values,
    ctr=header_values,
    plaintext=st.binary(max_size=2048),
    metadata=metadata_st,
)
def test_matches_baseline(
    suite: sframe.CipherSuite,
    base_key: bytes,
    kid: int,
    ctr: int,
    plaintext: bytes,
    metadata: bytes,
) -> None:
    assert sframe.derive_key_salt(suite, base_key, kid) == baseline.derive_key_salt(
        int(suite), base_key, kid
    )
    frame = sframe.Encryptor(suite, base_key, kid, counter=ctr).encrypt(plaintext, metadata)
    reference = baseline.BaselineEncryptor(int(suite), base_key, kid, counter=ctr)
    assert frame == reference.encrypt(plaintext, metadata)

    dec = sframe.Decryptor(suite)
    dec.add_key(kid, base_key)
    assert dec.decrypt(frame, metadata) == plaintext
    ref_dec = baseline.BaselineDecryptor(int(suite))
    ref_dec.add_key(kid, base_key)
    assert ref_dec.decrypt(frame, metadata) == plaintext


# -- replay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL_SUITES, ids=SUITE_ID)
def test_replayed_frame_is_refused(suite: sframe.CipherSuite) -> None:
    enc, dec = pair(suite, kid=42, ctr=1000)
    frame = enc.encrypt(b"once")
    assert dec.decrypt(frame) == b"once"
    with pytest.raises(errors.ReplayedFrame) as info:
        dec.decrypt(frame)
    assert (info.value.kid, info.value.ctr) == (42, 1000)


@settings(max_examples=50, deadline=None)
@given(order=st.permutations(list(range(64))))
def test_in_window_reordering_is_accepted(order: list[int]) -> None:
    enc, dec = pair(sframe.CipherSuite(6))
    frames = [enc.encrypt(i.to_bytes(1, "big")) for i in range(64)]
    for i in order:
        assert dec.decrypt(frames[i]) == i.to_bytes(1, "big")
    for i in order:
        with pytest.raises(errors.ReplayedFrame):
            dec.decrypt(frames[i])


def test_frame_far_behind_the_window_is_refused() -> None:
    enc, dec = pair(sframe.CipherSuite(6))
    old = enc.encrypt(b"old")
    skipped = sframe.Encryptor(sframe.CipherSuite(6), KEY, 5, counter=1000)
    assert dec.decrypt(skipped.encrypt(b"new")) == b"new"
    with pytest.raises(errors.ReplayedFrame) as info:
        dec.decrypt(old)
    assert (info.value.kid, info.value.ctr) == (5, 0)


def test_replay_window_is_per_kid() -> None:
    suite = sframe.CipherSuite(6)
    dec = sframe.Decryptor(suite)
    dec.add_key(1, KEY)
    dec.add_key(2, KEY)
    one = sframe.Encryptor(suite, KEY, 1).encrypt(b"a")
    two = sframe.Encryptor(suite, KEY, 2).encrypt(b"b")
    assert dec.decrypt(one) == b"a"
    assert dec.decrypt(two) == b"b"


@pytest.mark.parametrize("suite", ALL_SUITES, ids=SUITE_ID)
def test_replay_window_zero_disables_protection(suite: sframe.CipherSuite) -> None:
    enc, dec = pair(suite, replay_window=0)
    first, second = enc.encrypt(b"1"), enc.encrypt(b"2")
    for _ in range(3):
        assert dec.decrypt(second) == b"2"
        assert dec.decrypt(first) == b"1"


# -- encrypt_into / decrypt_into -------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL_SUITES, ids=SUITE_ID)
@pytest.mark.parametrize("kind", ["bytearray", "memoryview"])
def test_into_buffers(suite: sframe.CipherSuite, kind: str) -> None:
    plaintext, metadata = b"p" * 1200, b"\x90\x00\x00"
    enc, dec = pair(suite)
    reference = sframe.Encryptor(suite, KEY, 5).encrypt(plaintext, metadata)

    backing = bytearray(enc.output_length(len(plaintext)) + 10)
    out = backing if kind == "bytearray" else memoryview(backing)[3:]
    written = enc.encrypt_into(plaintext, out, metadata)
    assert written == len(reference)
    assert bytes(out[:written]) == reference
    assert enc.counter == 1

    plain_out = bytearray(len(plaintext) + 4)
    target = plain_out if kind == "bytearray" else memoryview(plain_out)[2:]
    frame = bytes(out[:written])
    assert dec.decrypt_into(frame, target, metadata) == len(plaintext)
    assert bytes(target[: len(plaintext)]) == plaintext


@pytest.mark.parametrize("suite", ALL_SUITES, ids=SUITE_ID)
def test_encrypt_into_too_small_keeps_the_counter(suite: sframe.CipherSuite) -> None:
    enc, _ = pair(suite, ctr=9)
    needed = enc.output_length(100)
    for size in (0, 1, needed - 1):
        with pytest.raises(errors.InvalidLength):
            enc.encrypt_into(bytes(100), bytearray(size))
        assert enc.counter == 9
    assert enc.encrypt_into(bytes(100), bytearray(needed)) == needed
    assert enc.counter == 10


@pytest.mark.parametrize("suite", ALL_SUITES, ids=SUITE_ID)
def test_decrypt_into_too_small(suite: sframe.CipherSuite) -> None:
    enc, dec = pair(suite)
    frame = enc.encrypt(bytes(100))
    with pytest.raises(errors.InvalidLength):
        dec.decrypt_into(frame, bytearray(99))
    # The refused call must not have used up the frame's CTR.
    out = bytearray(100)
    assert dec.decrypt_into(frame, out) == 100
    assert out == bytes(100)


def test_into_refuses_overlapping_buffers() -> None:
    suite = sframe.CipherSuite(6)
    enc, dec = pair(suite)
    backing = bytearray(200)
    view = memoryview(backing)
    overlapping = [
        lambda: enc.encrypt_into(view[:50], view[10:], b""),
        lambda: enc.encrypt_into(b"x" * 50, view[:100], view[90:95]),
    ]
    for call in overlapping:
        with pytest.raises(ValueError, match="overlap"):  # large enough: not a length error
            call()
    assert enc.counter == 0

    frame = enc.encrypt(b"y" * 50)
    backing[: len(frame)] = frame
    with pytest.raises(ValueError, match="overlap"):
        dec.decrypt_into(view[: len(frame)], view[: len(frame)])
    assert dec.decrypt(frame) == b"y" * 50


# -- argument types --------------------------------------------------------------------------


def test_str_arguments_are_type_errors() -> None:
    suite = sframe.CipherSuite(6)
    enc, dec = pair(suite)
    frame = enc.encrypt(b"x")
    calls = [
        lambda: sframe.Encryptor(suite, "key material", 1),
        lambda: sframe.derive_key_salt(suite, "key material", 1),
        lambda: sframe.decode_header("\x00"),
        lambda: enc.encrypt("text"),
        lambda: enc.encrypt(b"x", "metadata"),
        lambda: enc.encrypt_into("text", bytearray(64)),
        lambda: enc.encrypt_into(b"x", bytearray(64), "metadata"),
        lambda: dec.add_key(9, "key material"),
        lambda: dec.decrypt(frame.decode("latin-1")),
        lambda: dec.decrypt(frame, "metadata"),
        lambda: dec.decrypt_into(frame.decode("latin-1"), bytearray(64)),
        lambda: dec.decrypt_into(frame, bytearray(64), "metadata"),
    ]
    for call in calls:
        with pytest.raises(TypeError):
            call()
    assert enc.counter == 1
    assert dec.decrypt(frame) == b"x"


def test_unsupported_cipher_suite() -> None:
    for number in (0, 9, 0xFFFF, -1, 2**40):
        # The message names the number given, whatever its size.
        with pytest.raises(errors.UnsupportedCipherSuite, match=f"suite {number} "):
            sframe.Encryptor(number, KEY, 1)
        with pytest.raises(errors.UnsupportedCipherSuite, match=f"suite {number} "):
            sframe.Decryptor(number)


# -- counter exhaustion ----------------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL_SUITES, ids=SUITE_ID)
def test_counter_exhaustion(suite: sframe.CipherSuite) -> None:
    enc, dec = pair(suite, kid=11, ctr=MAX_U64)
    frame = enc.encrypt(b"last")
    assert sframe.decode_header(frame)[:2] == (11, MAX_U64)
    assert dec.decrypt(frame) == b"last"
    for _ in range(2):
        with pytest.raises(errors.CounterExhausted):
            enc.encrypt(b"one too many")
        with pytest.raises(errors.CounterExhausted):
            enc.encrypt_into(b"one too many", bytearray(64))


# -- secrets ---------------------------------------------------------------------------------


def reference_secret_key(secret: str, session_id: str, iterations: int) -> bytes:
    password = unicodedata.normalize("NFC", secret).encode()
    salt = b"e2ee v1 session " + session_id.encode()
    return hashlib.pbkdf2_hmac("sha256", password, salt, iterations, 32)


def reference_secret_id(secret_key: bytes) -> int:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=2, salt=b"", info=b"e2ee v1 secret id")
    return int.from_bytes(hkdf.derive(secret_key), "big")


@pytest.mark.parametrize("secret", ["a" * 7, "a" * 257, "", "e\u0301" * 7], ids=repr)
def test_secret_length_out_of_range(secret: str) -> None:
    with pytest.raises(errors.InvalidEncryptionSecret):
        e2ee.derive_secret_key(secret, "session", iterations=ITERATIONS)


@pytest.mark.parametrize("secret", ["a" * 8, "a" * 256, "\U0001f512" * 8, "e\u0301" * 256])
def test_secret_length_in_range(secret: str) -> None:
    key = e2ee.derive_secret_key(secret, "session", iterations=ITERATIONS)
    assert key == reference_secret_key(secret, "session", ITERATIONS)


def test_nfc_equivalent_secrets_give_one_key() -> None:
    composed = "caf\u00e9 secret \u00c5ngstr\u00f6m"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    one = e2ee.derive_secret_key(composed, "room-1", iterations=ITERATIONS)
    two = e2ee.derive_secret_key(decomposed, "room-1", iterations=ITERATIONS)
    assert one == two


@settings(max_examples=30, deadline=None)
@given(
    secret=st.text(min_size=8, max_size=40).filter(
        lambda s: 8 <= len(unicodedata.normalize("NFC", s)) <= 256
    ),
    session_id=st.text(min_size=1, max_size=30),
    iterations=st.integers(1, 2000),
)
def test_secret_key_matches_hashlib(secret: str, session_id: str, iterations: int) -> None:
    key = e2ee.derive_secret_key(secret, session_id, iterations=iterations)
    assert isinstance(key, bytes)
    assert key == reference_secret_key(secret, session_id, iterations)


def test_session_id_salts_the_key() -> None:
    one = e2ee.derive_secret_key("same secret", "session-a", iterations=ITERATIONS)
    two = e2ee.derive_secret_key("same secret", "session-b", iterations=ITERATIONS)
    assert one != two


@settings(max_examples=100)
@given(secret_key=st.binary(min_size=32, max_size=32))
def test_secret_id_matches_cryptography_hkdf(secret_key: bytes) -> None:
    assert e2ee.secret_id(secret_key) == reference_secret_id(secret_key)


def test_secret_id_of_a_derived_key() -> None:
    key = e2ee.derive_secret_key("correct horse battery", "s1", iterations=ITERATIONS)
    assert 0 <= e2ee.secret_id(key) <= 0xFFFF
    assert e2ee.secret_id(bytearray(key)) == e2ee.secret_id(memoryview(key))
    assert e2ee.secret_id(key) == reference_secret_id(key)


@pytest.mark.parametrize("secret", [b"bytes secret", 12345678, None, bytearray(b"12345678")])
def test_non_str_secret_is_invalid_secret(secret: object) -> None:
    with pytest.raises(errors.InvalidEncryptionSecret, match="must be a str"):
        e2ee.derive_secret_key(secret, "session", iterations=ITERATIONS)  # type: ignore[arg-type]


def test_zero_iterations_is_value_error() -> None:
    with pytest.raises(ValueError, match="iterations"):
        e2ee.derive_secret_key("long enough secret", "session", iterations=0)


@settings(max_examples=200)
@given(secret_id=st.integers(0, 0xFFFF))
def test_new_kid_carries_the_secret_id(secret_id: int) -> None:
    kid = e2ee.new_kid(secret_id)
    assert 0 <= kid <= MAX_U64
    assert kid >> 48 == secret_id
    assert e2ee.kid_secret_id(kid) == secret_id


def test_new_kid_is_random() -> None:
    kids = {e2ee.new_kid(0x1234) for _ in range(64)}
    assert len(kids) == 64
