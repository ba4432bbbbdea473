"""Checks the pure-Python reference `e2ee.tools.bench.baseline` against every published vector.

Covers all of ``tests/vectors/rfc9605.json`` (289 header encodings, the AES-CTR-HMAC AEAD
cases, the full SFrame cases of suites 1-5 with every intermediate value) and of
``tests/vectors/draft-barnes-sframe-iana-256.json`` (the same for suites 6-8), plus a few
negative cases of its own.  The baseline never calls e2ee (it only lives in the package so
``e2ee bench crypto`` can run it): it is the independent reference the e2ee tests compare
against, so it has to be right on its own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from e2ee.tools.bench import baseline
from support import VECTORS

RFC = json.loads((VECTORS / "rfc9605.json").read_text())
IANA256 = json.loads((VECTORS / "draft-barnes-sframe-iana-256.json").read_text())

HEADER_CASES: list[dict[str, Any]] = RFC["header"]
AEAD_CASES: list[dict[str, Any]] = RFC["aes_ctr_hmac"] + IANA256["aes_256_ctr_hmac"]
SFRAME_CASES: list[dict[str, Any]] = RFC["sframe"] + IANA256["sframe_aes_256_ctr_hmac"]


def h(hex_string: str) -> bytes:
    return bytes.fromhex(hex_string)


def case_id(case: dict[str, Any]) -> str:
    return f"suite{case['cipher_suite']}"


def test_vector_counts() -> None:
    assert len(HEADER_CASES) == 289
    assert sorted(c["cipher_suite"] for c in AEAD_CASES) == [1, 2, 3, 6, 7, 8]
    assert sorted(c["cipher_suite"] for c in SFRAME_CASES) == [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("case", HEADER_CASES, ids=lambda c: f"{c['kid']}-{c['ctr']}")
def test_header_vector(case: dict[str, Any]) -> None:
    encoded = h(case["encoded"])
    assert baseline.encode_header(case["kid"], case["ctr"]) == encoded
    assert baseline.decode_header(encoded) == (case["kid"], case["ctr"], len(encoded))
    assert baseline.decode_header(encoded + b"\xff\x00") == (
        case["kid"],
        case["ctr"],
        len(encoded),
    )


@pytest.mark.parametrize("case", AEAD_CASES, ids=case_id)
def test_aead_vector(case: dict[str, Any]) -> None:
    suite = baseline.SUITES[case["cipher_suite"]]
    key = h(case["key"])
    assert len(key) == suite.nk
    assert suite.nka is not None
    assert key[: suite.nka] == h(case["enc_key"])
    assert key[suite.nka :] == h(case["auth_key"])
    args = (suite.number, key, h(case["nonce"]), h(case["aad"]))
    assert baseline.aead_encrypt(*args, h(case["pt"])) == h(case["ct"])
    assert baseline.aead_decrypt(*args, h(case["ct"])) == h(case["pt"])


@pytest.mark.parametrize("case", AEAD_CASES, ids=case_id)
def test_aead_vector_rejects_modified_tag(case: dict[str, Any]) -> None:
    ct = bytearray(h(case["ct"]))
    ct[-1] ^= 0x01
    with pytest.raises(InvalidTag):
        baseline.aead_decrypt(
            case["cipher_suite"], h(case["key"]), h(case["nonce"]), h(case["aad"]), bytes(ct)
        )


@pytest.mark.parametrize("case", SFRAME_CASES, ids=case_id)
def test_sframe_intermediates(case: dict[str, Any]) -> None:
    suite, kid, ctr = case["cipher_suite"], case["kid"], case["ctr"]
    key, salt = baseline.derive_key_salt(suite, h(case["base_key"]), kid)
    assert key == h(case["sframe_key"])
    assert salt == h(case["sframe_salt"])
    nonce = baseline.nonce_for(salt, ctr)
    assert nonce == h(case["nonce"])
    header = baseline.encode_header(kid, ctr)
    assert header + h(case["metadata"]) == h(case["aad"])
    ct_tag = baseline.aead_encrypt(suite, key, nonce, h(case["aad"]), h(case["pt"]))
    assert header + ct_tag == h(case["ct"])


@pytest.mark.parametrize("case", SFRAME_CASES, ids=case_id)
def test_sframe_encrypt_decrypt(case: dict[str, Any]) -> None:
    suite, kid, ctr = case["cipher_suite"], case["kid"], case["ctr"]
    enc = baseline.BaselineEncryptor(suite, h(case["base_key"]), kid, counter=ctr)
    assert enc.encrypt(h(case["pt"]), h(case["metadata"])) == h(case["ct"])
    assert enc.counter == ctr + 1

    dec = baseline.BaselineDecryptor(suite)
    dec.add_key(kid, h(case["base_key"]))
    assert dec.decrypt(h(case["ct"]), h(case["metadata"])) == h(case["pt"])


@pytest.mark.parametrize("case", SFRAME_CASES, ids=case_id)
def test_sframe_rejects_other_metadata(case: dict[str, Any]) -> None:
    dec = baseline.BaselineDecryptor(case["cipher_suite"])
    dec.add_key(case["kid"], h(case["base_key"]))
    with pytest.raises(InvalidTag):
        dec.decrypt(h(case["ct"]), h(case["metadata"]) + b"\x00")


@pytest.mark.parametrize("suite", sorted(baseline.SUITES))
def test_round_trip_empty_plaintext_and_metadata(suite: int) -> None:
    enc = baseline.BaselineEncryptor(suite, b"k" * 16, kid=7)
    frame = enc.encrypt(b"")
    assert len(frame) == 1 + baseline.SUITES[suite].nt
    dec = baseline.BaselineDecryptor(suite)
    dec.add_key(7, b"k" * 16)
    assert dec.decrypt(frame) == b""


@pytest.mark.parametrize(
    ("value", "length"),
    [(7, 0), (8, 1), (2**8 - 1, 1), (2**8, 2), (2**56 - 1, 7), (2**56, 8), (2**64 - 1, 8)],
)
def test_header_lengths(value: int, length: int) -> None:
    assert len(baseline.encode_header(value, value)) == 1 + 2 * length


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",
        b"\x08",
        b"\x88\x08",
        b"\x80\x05",
        b"\x08\x07",
        b"\x90\x00\xff",
        b"\x87" + bytes(8),
    ],
    ids=repr,
)
def test_header_rejects_truncated_and_non_minimal(data: bytes) -> None:
    with pytest.raises(baseline.MalformedHeaderError):
        baseline.decode_header(data)


def test_counter_exhaustion() -> None:
    enc = baseline.BaselineEncryptor(1, b"k" * 16, kid=1, counter=2**64 - 1)
    frame = enc.encrypt(b"last")
    assert baseline.decode_header(frame)[1] == 2**64 - 1
    with pytest.raises(OverflowError):
        enc.encrypt(b"one too many")


def test_unknown_kid() -> None:
    frame = baseline.BaselineEncryptor(1, b"k" * 16, kid=9).encrypt(b"x")
    with pytest.raises(KeyError):
        baseline.BaselineDecryptor(1).decrypt(frame)
