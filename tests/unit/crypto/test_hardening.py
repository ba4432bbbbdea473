"""No participant can take a session or the library down (issue item 11).

* Any secret that is not UTF-8 text (a lone surrogate, a non-str) is
  ``InvalidEncryptionSecret``, from every entry point, without echoing the secret.
* Impossible lengths are ``InvalidLength``, never a wrapped-around number.
* Empty and short base keys, and secret keys of the wrong length, are refused.
* One Encryptor, Decryptor, FrameSender or FrameReceiver can be shared between threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import e2ee
from e2ee import KeyRing, _core
from e2ee.crypto import sframe
from e2ee.errors import InvalidEncryptionSecret, InvalidLength, ReplayedFrame

SUITES = list(sframe.CipherSuite)
BASE_KEY = bytes(range(16))
SECRET_KEY = bytes(range(32))


def ring() -> KeyRing:
    return KeyRing("session-1", kdf_iterations=1000, grace_period=10.0)


# -- 1. secrets that are not text ---------------------------------------------------------

SURROGATE = "abcdefgh\ud800"
BAD_SECRETS: list[object] = [
    SURROGATE,
    "\udfff" * 10,
    "secret \udc80 with a lone low surrogate",
    b"bytes secret",
    12345678,
    None,
    ["a" * 8],
]


def _run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


ENTRY_POINTS: dict[str, Callable[[object], object]] = {
    "normalize_secret": e2ee.normalize_secret,  # type: ignore[dict-item]
    "derive_secret_key": lambda s: e2ee.derive_secret_key(s, "session", iterations=1),  # type: ignore[arg-type]
    "set_secret": lambda s: ring().set_secret(s),  # type: ignore[arg-type]
    "accept_secret": lambda s: ring().accept_secret(s),  # type: ignore[arg-type]
    "set_secret_async": lambda s: _run(ring().set_secret_async(s)),  # type: ignore[arg-type]
    "accept_secret_async": lambda s: _run(ring().accept_secret_async(s)),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("secret", BAD_SECRETS, ids=repr)
def test_bad_secrets_are_invalid_encryption_secret(entry: str, secret: object) -> None:
    with pytest.raises(InvalidEncryptionSecret) as info:
        ENTRY_POINTS[entry](secret)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "must be a str" in message or "surrogate" in message
    if isinstance(secret, str):
        assert secret not in message
        assert "abcdefgh" not in message


def test_a_bad_secret_leaves_the_ring_unchanged() -> None:
    r = ring()
    r.set_secret("the first secret")
    before = (r.version, r.secret_id)
    for secret in BAD_SECRETS:
        with pytest.raises(InvalidEncryptionSecret):
            r.set_secret(secret)  # type: ignore[arg-type]
        with pytest.raises(InvalidEncryptionSecret):
            r.accept_secret(secret)  # type: ignore[arg-type]
    assert (r.version, r.secret_id) == before


def test_a_session_id_that_is_not_text_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        e2ee.derive_secret_key("a good secret", "s\ud800", iterations=1)


def test_surrogate_pairs_written_properly_are_fine() -> None:
    # A real astral character (not a lone surrogate) is valid text.
    assert e2ee.normalize_secret("\U0001f512" * 8) == "\U0001f512" * 8


# -- 2. impossible lengths ----------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("n", [2**64 - 1, 2**64 - 17, 2**63, 16 * (2**32 - 1) + 1])
def test_output_length_refuses_impossible_lengths(suite: sframe.CipherSuite, n: int) -> None:
    enc = sframe.Encryptor(suite, BASE_KEY, 1)
    with pytest.raises(InvalidLength):
        enc.output_length(n)


@pytest.mark.parametrize("suite", SUITES)
def test_output_length_of_real_lengths(suite: sframe.CipherSuite) -> None:
    enc = sframe.Encryptor(suite, BASE_KEY, 1)
    header = len(sframe.encode_header(1, 0))
    for n in (0, 1, 1000, 16 * (2**32 - 1)):
        assert enc.output_length(n) == header + n + suite.nt
    assert len(enc.encrypt(bytes(1000))) == header + 1000 + suite.nt


def test_output_length_out_of_range_is_overflow() -> None:
    enc = sframe.Encryptor(SUITES[0], BASE_KEY, 1)
    with pytest.raises(OverflowError):
        enc.output_length(2**64)
    with pytest.raises(OverflowError):
        enc.output_length(-1)


# -- 3. empty and short keys --------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("key", [b"", b"\x00", bytes(15), bytearray(), memoryview(b"")])
def test_short_base_keys_are_refused(suite: sframe.CipherSuite, key: bytes) -> None:
    with pytest.raises(InvalidLength, match="at least 16 bytes"):
        sframe.Encryptor(suite, key, 1)
    dec = sframe.Decryptor(suite)
    with pytest.raises(InvalidLength, match="at least 16 bytes"):
        dec.add_key(1, key)
    assert len(dec) == 0
    with pytest.raises(InvalidLength, match="at least 16 bytes"):
        sframe.derive_key_salt(suite, key, 1)


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("n", [16, 32, 64, 100])
def test_base_keys_of_16_bytes_or_more_work(suite: sframe.CipherSuite, n: int) -> None:
    key = bytes(range(n))
    dec = sframe.Decryptor(suite)
    dec.add_key(5, key)
    assert dec.decrypt(sframe.Encryptor(suite, key, 5).encrypt(b"hi")) == b"hi"
    assert len(sframe.derive_key_salt(suite, key, 5)[0]) == suite.nk


@pytest.mark.parametrize("key", [b"", bytes(16), bytes(31), bytes(33)])
def test_media_secret_keys_must_be_32_bytes(key: bytes) -> None:
    tx = _core.FrameSender(SUITES[0], "opus")
    with pytest.raises(InvalidLength, match="32 bytes"):
        tx.set_key(key, 1)
    rx = _core.FrameReceiver(SUITES[0], "opus")
    with pytest.raises(InvalidLength, match="32 bytes"):
        rx.set_secrets([(SECRET_KEY, None), (key, None)])
    with pytest.raises(InvalidLength, match="32 bytes"):
        _core.secret_id(key)


# -- 4. one object, many threads ----------------------------------------------------------

THREADS = 6
PER_THREAD = 60
# Small frames take the fast path with the GIL held; large ones release it while the
# object's lock is held, which is where a PyO3 borrow flag used to fail.
SIZES = [10, 300, 5000, 40_000]


def _hammer(work: Callable[[int], None]) -> list[Exception]:
    errors: list[Exception] = []
    barrier = threading.Barrier(THREADS)

    def run(t: int) -> None:
        barrier.wait()
        try:
            work(t)
        except Exception as e:  # reported by the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


def _payload(t: int, i: int) -> bytes:
    n = SIZES[(t + i) % len(SIZES)]
    return bytes([t, i % 256]) * (n // 2)


@pytest.mark.parametrize("suite", [SUITES[0], SUITES[4]])
def test_shared_encryptor_and_decryptor(suite: sframe.CipherSuite) -> None:
    enc = sframe.Encryptor(suite, BASE_KEY, 77)
    frames: list[tuple[bytes, bytes]] = []
    lock = threading.Lock()

    def encrypt(t: int) -> None:
        out = bytearray(50_000)
        for i in range(PER_THREAD):
            pt = _payload(t, i)
            if i % 2:
                wire = enc.encrypt(pt, metadata=b"md")
            else:
                wire = bytes(out[: enc.encrypt_into(pt, out, metadata=b"md")])
            _ = enc.counter, repr(enc), enc.output_length(len(pt))
            with lock:
                frames.append((wire, pt))

    assert _hammer(encrypt) == []
    total = THREADS * PER_THREAD
    assert enc.counter == total
    assert sorted(sframe.decode_header(w)[1] for w, _ in frames) == list(range(total))

    # Replay protection off: frames arrive in any order across threads.
    dec = sframe.Decryptor(suite, replay_window=0)
    dec.add_key(77, BASE_KEY)

    def decrypt(t: int) -> None:
        out = bytearray(50_000)
        for wire, pt in frames[t::THREADS]:
            if len(pt) % 2:
                assert dec.decrypt(wire, b"md") == pt
            else:
                assert out[: dec.decrypt_into(wire, out, b"md")] == pt
            assert 77 in dec
            assert 77 in dec.kids()
            assert 1 <= len(dec) <= 1 + THREADS
            dec.add_key(1000 + t, BASE_KEY)  # writers too
            dec.remove_key(1000 + t)

    assert _hammer(decrypt) == []
    assert dec.kids() == [77]


def test_shared_decryptor_accepts_each_frame_once() -> None:
    suite = SUITES[0]
    enc = sframe.Encryptor(suite, BASE_KEY, 9)
    frames = [enc.encrypt(bytes(8000 if i % 2 else 20)) for i in range(100)]
    dec = sframe.Decryptor(suite, replay_window=128)
    dec.add_key(9, BASE_KEY)
    accepted = [0] * len(frames)
    lock = threading.Lock()

    def decrypt(t: int) -> None:
        for i, wire in enumerate(frames):
            try:
                dec.decrypt(wire)
            except ReplayedFrame:
                continue
            with lock:
                accepted[i] += 1

    assert _hammer(decrypt) == []
    assert accepted == [1] * len(frames)


def test_shared_frame_sender_and_receiver() -> None:
    suite = SUITES[5]
    kid = _core.new_kid(_core.secret_id(SECRET_KEY))
    tx = _core.FrameSender(suite, "opus")
    tx.set_key(SECRET_KEY, kid)
    frames: list[tuple[bytes, bytes]] = []
    lock = threading.Lock()

    def send(t: int) -> None:
        out = bytearray(50_000)
        for i in range(PER_THREAD):
            frame = b"\xfc" + _payload(t, i)
            wire = tx.encrypt(frame) if i % 2 else bytes(out[: tx.encrypt_into(frame, out)])
            assert tx.kid == kid
            assert tx.codec == "opus"
            with lock:
                frames.append((wire, frame))

    assert _hammer(send) == []
    assert len({w for w, _ in frames}) == THREADS * PER_THREAD

    rx = _core.FrameReceiver(suite, "opus", replay_window=0)
    rx.set_secrets([(SECRET_KEY, None)])

    def receive(t: int) -> None:
        out = bytearray(50_000)
        for wire, frame in frames[t::THREADS]:
            if len(frame) % 2:
                assert rx.decrypt(wire) == frame
            else:
                assert out[: rx.decrypt_into(wire, out)] == frame
            _ = rx.stats(), rx.kids(), rx.last_kid, rx.last_ctr
            rx.set_secrets([(SECRET_KEY, None)])

    assert _hammer(receive) == []
    assert rx.stats()[0] == THREADS * PER_THREAD


@pytest.mark.parametrize("session_id", ["s\ud800", "\udfff", "ok \udc80 then more"])
def test_a_keyring_session_id_with_a_lone_surrogate_is_the_documented_value_error(
    session_id: str,
) -> None:
    # Not Python's UnicodeEncodeError from encoding it: the message derive_secret_key
    # gives for the same session id.
    with pytest.raises(ValueError, match="lone surrogate") as caught:
        KeyRing(session_id, kdf_iterations=1000)
    assert not isinstance(caught.value, UnicodeError)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
