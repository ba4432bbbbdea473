"""The published SFrame vectors against the e2ee API (the Rust core through its binding).

Covers every case of ``tests/vectors/rfc9605.json`` and
``tests/vectors/draft-barnes-sframe-iana-256.json`` that the public API can reach:

* ``encode_header``/``decode_header`` on all 289 header encodings;
* ``derive_key_salt`` against ``sframe_key``/``sframe_salt`` for suites 1-8;
* the raw AES-CTR-HMAC AEAD cases of suites 1-3 and 6-8 (``aead_encrypt``/``aead_decrypt``);
* ``Encryptor``/``Decryptor`` (``encrypt``, ``encrypt_into``, ``decrypt``, ``decrypt_into``)
  on the full SFrame cases of suites 1-8, each fed bytes, bytearray and memoryview;
* the ``CipherSuite`` parameters (Nk, Nn, Nt, Nh) against RFC 9605 and the draft.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from e2ee import errors
from e2ee.crypto import sframe
from support import VECTORS

RFC = json.loads((VECTORS / "rfc9605.json").read_text())
IANA256 = json.loads((VECTORS / "draft-barnes-sframe-iana-256.json").read_text())

HEADER_CASES: list[dict[str, Any]] = RFC["header"]
AEAD_CASES: list[dict[str, Any]] = RFC["aes_ctr_hmac"] + IANA256["aes_256_ctr_hmac"]
SFRAME_CASES: list[dict[str, Any]] = RFC["sframe"] + IANA256["sframe_aes_256_ctr_hmac"]

Buffer = Callable[[bytes], Any]
BUFFERS: dict[str, Buffer] = {
    "bytes": bytes,
    "bytearray": bytearray,
    "memoryview": lambda b: memoryview(bytearray(b)),
}

# (Nk, Nn, Nt, Nh) of RFC 9605 §4.5 Table 2 and draft-barnes-sframe-iana-256.
SUITE_PARAMS = {
    "AES_128_CTR_HMAC_SHA256_80": (1, 48, 12, 10, 32),
    "AES_128_CTR_HMAC_SHA256_64": (2, 48, 12, 8, 32),
    "AES_128_CTR_HMAC_SHA256_32": (3, 48, 12, 4, 32),
    "AES_128_GCM_SHA256_128": (4, 16, 12, 16, 32),
    "AES_256_GCM_SHA512_128": (5, 32, 12, 16, 64),
    "AES_256_CTR_HMAC_SHA512_80": (6, 96, 12, 10, 64),
    "AES_256_CTR_HMAC_SHA512_64": (7, 96, 12, 8, 64),
    "AES_256_CTR_HMAC_SHA512_32": (8, 96, 12, 4, 64),
}


def h(hex_string: str) -> bytes:
    return bytes.fromhex(hex_string)


def writable(buffer: Buffer, size: int) -> Any:
    """A zeroed output buffer: ``buffer``'s type, or a bytearray where that is ``bytes``."""
    return bytearray(size) if buffer is bytes else buffer(bytes(size))


def test_vector_counts() -> None:
    assert len(HEADER_CASES) == 289
    assert sorted(c["cipher_suite"] for c in AEAD_CASES) == [1, 2, 3, 6, 7, 8]
    assert sorted(c["cipher_suite"] for c in SFRAME_CASES) == [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize(("name", "params"), SUITE_PARAMS.items())
def test_cipher_suite_parameters(name: str, params: tuple[int, int, int, int, int]) -> None:
    number, nk, nn, nt, nh = params
    suite = sframe.CipherSuite[name]
    assert suite == number
    assert sframe.CipherSuite(number) is suite
    assert (suite.nk, suite.nn, suite.nt, suite.nh) == (nk, nn, nt, nh)


def test_cipher_suite_has_exactly_eight_members() -> None:
    assert sorted(int(s) for s in sframe.CipherSuite) == list(range(1, 9))


@pytest.mark.parametrize("case", HEADER_CASES, ids=lambda c: f"{c['kid']}-{c['ctr']}")
def test_header_vector(case: dict[str, Any]) -> None:
    encoded = h(case["encoded"])
    assert sframe.encode_header(case["kid"], case["ctr"]) == encoded
    assert sframe.decode_header(encoded) == (case["kid"], case["ctr"], len(encoded))


@pytest.mark.parametrize("buffer", BUFFERS.values(), ids=BUFFERS.keys())
@pytest.mark.parametrize("case", HEADER_CASES[::16], ids=lambda c: f"{c['kid']}-{c['ctr']}")
def test_decode_header_buffer_types_and_trailing_bytes(
    case: dict[str, Any], buffer: Buffer
) -> None:
    encoded = h(case["encoded"])
    expected = (case["kid"], case["ctr"], len(encoded))
    assert sframe.decode_header(buffer(encoded + b"\xff" * 20)) == expected


@pytest.mark.parametrize("buffer", BUFFERS.values(), ids=BUFFERS.keys())
@pytest.mark.parametrize("case", AEAD_CASES, ids=lambda c: f"suite{c['cipher_suite']}")
def test_aead_vector(case: dict[str, Any], buffer: Buffer) -> None:
    suite, nonce = case["cipher_suite"], h(case["nonce"])
    key, aad = buffer(h(case["key"])), buffer(h(case["aad"]))
    assert sframe.aead_encrypt(suite, key, nonce, aad, buffer(h(case["pt"]))) == h(case["ct"])
    assert sframe.aead_decrypt(suite, key, nonce, aad, buffer(h(case["ct"]))) == h(case["pt"])


@pytest.mark.parametrize("case", AEAD_CASES, ids=lambda c: f"suite{c['cipher_suite']}")
def test_aead_vector_rejects_modified_tag(case: dict[str, Any]) -> None:
    ct = bytearray(h(case["ct"]))
    ct[-1] ^= 0x80
    with pytest.raises(errors.AuthenticationFailed):
        sframe.aead_decrypt(
            case["cipher_suite"], h(case["key"]), h(case["nonce"]), h(case["aad"]), ct
        )


@pytest.mark.parametrize("buffer", BUFFERS.values(), ids=BUFFERS.keys())
@pytest.mark.parametrize("case", SFRAME_CASES, ids=lambda c: f"suite{c['cipher_suite']}")
def test_derive_key_salt(case: dict[str, Any], buffer: Buffer) -> None:
    suite = sframe.CipherSuite(case["cipher_suite"])
    key, salt = sframe.derive_key_salt(suite, buffer(h(case["base_key"])), case["kid"])
    assert key == h(case["sframe_key"])
    assert salt == h(case["sframe_salt"])


@pytest.mark.parametrize("buffer", BUFFERS.values(), ids=BUFFERS.keys())
@pytest.mark.parametrize("case", SFRAME_CASES, ids=lambda c: f"suite{c['cipher_suite']}")
def test_encrypt(case: dict[str, Any], buffer: Buffer) -> None:
    suite = sframe.CipherSuite(case["cipher_suite"])
    kid, ctr = case["kid"], case["ctr"]
    enc = sframe.Encryptor(suite, buffer(h(case["base_key"])), kid, counter=ctr)
    assert (enc.suite, enc.kid, enc.counter) == (suite, kid, ctr)
    assert enc.output_length(len(h(case["pt"]))) == len(h(case["ct"]))

    frame = enc.encrypt(buffer(h(case["pt"])), buffer(h(case["metadata"])))
    assert frame == h(case["ct"])
    assert enc.counter == ctr + 1


@pytest.mark.parametrize("buffer", BUFFERS.values(), ids=BUFFERS.keys())
@pytest.mark.parametrize("case", SFRAME_CASES, ids=lambda c: f"suite{c['cipher_suite']}")
def test_encrypt_into(case: dict[str, Any], buffer: Buffer) -> None:
    suite = sframe.CipherSuite(case["cipher_suite"])
    expected = h(case["ct"])
    enc = sframe.Encryptor(suite, h(case["base_key"]), case["kid"], counter=case["ctr"])
    out = writable(buffer, len(expected) + 7)
    written = enc.encrypt_into(buffer(h(case["pt"])), out, metadata=buffer(h(case["metadata"])))
    assert written == len(expected)
    assert bytes(out[:written]) == expected
    assert bytes(out[written:]) == bytes(7)
    assert enc.counter == case["ctr"] + 1


@pytest.mark.parametrize("buffer", BUFFERS.values(), ids=BUFFERS.keys())
@pytest.mark.parametrize("case", SFRAME_CASES, ids=lambda c: f"suite{c['cipher_suite']}")
def test_decrypt(case: dict[str, Any], buffer: Buffer) -> None:
    dec = sframe.Decryptor(sframe.CipherSuite(case["cipher_suite"]))
    dec.add_key(case["kid"], buffer(h(case["base_key"])))
    plaintext = dec.decrypt(buffer(h(case["ct"])), buffer(h(case["metadata"])))
    assert plaintext == h(case["pt"])


@pytest.mark.parametrize("buffer", BUFFERS.values(), ids=BUFFERS.keys())
@pytest.mark.parametrize("case", SFRAME_CASES, ids=lambda c: f"suite{c['cipher_suite']}")
def test_decrypt_into(case: dict[str, Any], buffer: Buffer) -> None:
    expected = h(case["pt"])
    dec = sframe.Decryptor(sframe.CipherSuite(case["cipher_suite"]))
    dec.add_key(case["kid"], h(case["base_key"]))
    out = writable(buffer, len(expected) + 5)
    written = dec.decrypt_into(buffer(h(case["ct"])), out, metadata=buffer(h(case["metadata"])))
    assert written == len(expected)
    assert bytes(out[:written]) == expected
    assert bytes(out[written:]) == bytes(5)
