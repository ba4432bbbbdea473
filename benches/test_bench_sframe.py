"""Benchmarks: e2ee's Rust SFrame core against the pure-``cryptography`` baseline.

Run with ``pytest benches --benchmark-only``.  For each of the 8 cipher suites and each
frame size (100 B, 1,200 B, 10 KB, 100 KB, 1 MB) it times one-frame ``encrypt`` and
``decrypt`` for both implementations; each pair lands in one benchmark group named
``suite{n}-{size}-{encrypt|decrypt}``, so the report compares them side by side.  The
``suite5-1MB-*`` groups also hold ``cryptography``'s ``AESGCM`` called directly with a
prepared key, nonce and AAD: the floor for suite 5, with no SFrame work at all.

Frames carry a realistic 8-byte KID (``secret_id << 48 | random48``) and 3 bytes of
metadata (a VP8 delta-frame header kept in clear).  The e2ee decryptor is created with
``replay_window=0`` so the same frame can be decrypted round after round; the replay check
it skips is a few integer operations.  Rounds are fixed (``benchmark.pedantic``) and kept
small so the whole file runs in well under a few minutes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pytest_benchmark.fixture import BenchmarkFixture

from e2ee.crypto import sframe
from e2ee.tools.bench import baseline

SIZES = {"100B": 100, "1200B": 1_200, "10KB": 10_000, "100KB": 100_000, "1MB": 1_000_000}
# (rounds, iterations per round): enough calls for a stable median, few enough to be quick.
ROUNDS = {100: (1000, 20), 1_200: (500, 10), 10_000: (200, 5), 100_000: (60, 1), 1_000_000: (20, 1)}
SUITES = range(1, 9)
IMPLEMENTATIONS = ["e2ee", "baseline"]

BASE_KEY = bytes(range(32))
KID = 0x1234 << 48 | 0x9ABCDEF01234
METADATA = b"\x91\x02\x00"

Operation = Callable[[bytes, bytes], bytes]


def encryptor(impl: str, suite: int) -> Operation:
    if impl == "e2ee":
        return sframe.Encryptor(sframe.CipherSuite(suite), BASE_KEY, KID).encrypt
    return baseline.BaselineEncryptor(suite, BASE_KEY, KID).encrypt


def decryptor(impl: str, suite: int) -> Operation:
    if impl == "e2ee":
        dec = sframe.Decryptor(sframe.CipherSuite(suite), replay_window=0)
    else:
        dec = baseline.BaselineDecryptor(suite)
    dec.add_key(KID, BASE_KEY)
    return dec.decrypt


def payload(size: int) -> bytes:
    return bytes(i & 0xFF for i in range(size))


def run(benchmark: BenchmarkFixture, group: str, op: Operation, data: bytes, size: int) -> bytes:
    benchmark.group = group
    benchmark.extra_info["bytes"] = size
    rounds, iterations = ROUNDS[size]
    return benchmark.pedantic(
        op, args=(data, METADATA), rounds=rounds, iterations=iterations, warmup_rounds=1
    )


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("suite", SUITES, ids="suite{}".format)
def test_encrypt(benchmark: BenchmarkFixture, suite: int, size: int, impl: str) -> None:
    plaintext = payload(size)
    label = next(k for k, v in SIZES.items() if v == size)
    frame = run(benchmark, f"suite{suite}-{label}-encrypt", encryptor(impl, suite), plaintext, size)
    check = baseline.BaselineDecryptor(suite)
    check.add_key(KID, BASE_KEY)
    assert check.decrypt(frame, METADATA) == plaintext


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("suite", SUITES, ids="suite{}".format)
def test_decrypt(benchmark: BenchmarkFixture, suite: int, size: int, impl: str) -> None:
    plaintext = payload(size)
    frame = baseline.BaselineEncryptor(suite, BASE_KEY, KID).encrypt(plaintext, METADATA)
    label = next(k for k, v in SIZES.items() if v == size)
    result = run(benchmark, f"suite{suite}-{label}-decrypt", decryptor(impl, suite), frame, size)
    assert result == plaintext


def _suite5_aesgcm() -> tuple[AESGCM, bytes, bytes]:
    """The AESGCM object, nonce and AAD that suite 5 uses for the first frame of ``KID``."""
    key, salt = baseline.derive_key_salt(5, BASE_KEY, KID)
    aad = baseline.encode_header(KID, 0) + METADATA
    return AESGCM(key), baseline.nonce_for(salt, 0), aad


def test_aesgcm_direct_encrypt(benchmark: BenchmarkFixture) -> None:
    aead, nonce, aad = _suite5_aesgcm()
    plaintext = payload(1_000_000)
    # Reusing one nonce is only acceptable because nothing here is ever sent.
    ct = run(
        benchmark,
        "suite5-1MB-encrypt",
        lambda pt, _: aead.encrypt(nonce, pt, aad),
        plaintext,
        1_000_000,
    )
    expected = baseline.BaselineEncryptor(5, BASE_KEY, KID).encrypt(plaintext, METADATA)
    assert expected.endswith(ct)


def test_aesgcm_direct_decrypt(benchmark: BenchmarkFixture) -> None:
    aead, nonce, aad = _suite5_aesgcm()
    plaintext = payload(1_000_000)
    ct = aead.encrypt(nonce, plaintext, aad)
    result = run(
        benchmark,
        "suite5-1MB-decrypt",
        lambda data, _: aead.decrypt(nonce, data, aad),
        ct,
        1_000_000,
    )
    assert result == plaintext
