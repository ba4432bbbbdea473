"""The libcrypto floor of ``e2ee bench crypto`` does exactly e2ee's work, byte for byte.

:mod:`e2ee.tools.bench.crypto_floor` drives the system's libcrypto through ctypes; the
benchmark holds e2ee to its speed, which is only fair if it computes the very same frames:
header, ciphertext and truncated tag, for every suite, size and counter width.  Its stub
twin must run the same Python doing no cryptography (its output is not the frame).
"""

from __future__ import annotations

import functools

import pytest

from e2ee.sframe import CipherSuite, Decryptor, Encryptor
from e2ee.tools.bench import crypto_floor

lib = crypto_floor.load()
pytestmark = pytest.mark.skipif(lib is None, reason=str(crypto_floor.unavailable_reason()))

BASE_KEY = bytes(range(7, 39))
KID = 0x1234
SIZES = (0, 1, 100, 1_200, 100_000, 1_000_000)
METADATA = b"\x31\x02\x00"


@functools.cache
def body(n: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


@pytest.mark.parametrize("suite", [int(s) for s in CipherSuite])
@pytest.mark.parametrize("counter", [0, 300, 2**40])  # 1-, 2- and 6-byte CTR fields
def test_floor_encrypts_exactly_like_e2ee(suite: int, counter: int) -> None:
    ours = Encryptor(CipherSuite(suite), BASE_KEY, KID, counter=counter)
    floor = crypto_floor.FloorEncryptor(suite, BASE_KEY, KID, counter=counter)
    try:
        for n in SIZES:
            want = ours.encrypt(body(n), METADATA)
            assert floor.encrypt(body(n), METADATA) == want, f"{n} B"
        # The same into a reused buffer larger than the frame, as the benchmark does.
        out = bytearray(1_000_100)
        for n in SIZES:
            want = ours.encrypt(body(n), METADATA)
            got = floor.encrypt_into(body(n), out, METADATA)
            assert bytes(out[:got]) == want, f"{n} B into a buffer"
    finally:
        floor.close()


@pytest.mark.parametrize("suite", [int(s) for s in CipherSuite])
def test_floor_decrypts_e2ee_frames_and_refuses_forgeries(suite: int) -> None:
    ours = Encryptor(CipherSuite(suite), BASE_KEY, KID)
    floor = crypto_floor.FloorDecryptor(suite)
    floor.add_key(KID, BASE_KEY)
    try:
        for n in SIZES:
            wire = ours.encrypt(body(n), METADATA)
            assert floor.decrypt(wire, METADATA) == body(n)
            forged = bytearray(wire)
            forged[-1] ^= 1
            with pytest.raises(ValueError, match="authenticate"):
                floor.decrypt(bytes(forged), METADATA)
            with pytest.raises(ValueError, match="authenticate"):
                floor.decrypt(wire, METADATA + b"x")
    finally:
        floor.close()


def test_e2ee_decrypts_floor_frames() -> None:
    floor = crypto_floor.FloorEncryptor(6, BASE_KEY, KID)
    ours = Decryptor(CipherSuite(6), replay_window=0)
    ours.add_key(KID, BASE_KEY)
    try:
        for n in SIZES:
            assert ours.decrypt(floor.encrypt(body(n), METADATA), METADATA) == body(n)
    finally:
        floor.close()


def test_the_stub_runs_the_same_code_without_cryptography() -> None:
    wire = Encryptor(CipherSuite(6), BASE_KEY, KID).encrypt(body(1_200), METADATA)
    enc = crypto_floor.FloorEncryptor(6, BASE_KEY, KID, stub=True)
    dec = crypto_floor.FloorDecryptor(6, stub=True)
    dec.add_key(KID, BASE_KEY)
    out = bytearray(2_000)
    try:
        n = enc.encrypt_into(body(1_200), out, METADATA)
        assert n == len(wire)
        assert bytes(out[:n]) != wire  # nothing was encrypted: the stubs did nothing
        assert enc.counter == 1
        assert dec.decrypt_into(wire, out, METADATA) == 1_200
    finally:
        enc.close()
        dec.close()


def test_library_is_described() -> None:
    assert lib is not None
    assert lib.version.startswith(("OpenSSL", "LibreSSL", "BoringSSL"))
    assert crypto_floor.unavailable_reason() is None
    assert set(lib.stubs) == set(lib.fn)


def test_output_buffer_must_be_writable() -> None:
    floor = crypto_floor.FloorEncryptor(6, BASE_KEY, KID)
    try:
        with pytest.raises(TypeError, match="writable"):
            floor.encrypt_into(b"abc", bytes(100))
        with pytest.raises(ValueError, match="too small"):
            floor.encrypt_into(b"abc", bytearray(5))
    finally:
        floor.close()
