"""SFrame (RFC 9605) in plain Python on top of `cryptography`: the independent reference.

This is the implementation a Python user would write without e2ee, and it serves two
purposes: the benchmarks compare e2ee against it, and the tests cross-check e2ee's output
against it byte for byte.  It must therefore never import e2ee.

It covers all eight cipher suites: RFC 9605 suites 1 to 5 and the AES-256-CTR-HMAC-SHA512
suites 6 to 8 of draft-barnes-sframe-iana-256:

* §4.3   header encoding (config byte, then the minimal big-endian KID and CTR);
* §4.4.2 key schedule (HKDF-Extract with an empty salt, then two HKDF-Expand labels);
* §4.4.3 nonce (``sframe_salt XOR CTR``) and AAD (``header || metadata``);
* §4.5.1 AES-CTR + truncated HMAC for suites 1-3 and 6-8, AES-GCM for suites 4 and 5.

As a user would, it builds the CTR cipher and the HMAC objects anew for every frame; only
the ``AESGCM`` object is created once per key.  There is no replay protection.

Errors: :class:`MalformedHeaderError` (a ``ValueError``) for a header that is truncated
or not minimal, ``KeyError`` for an unknown KID, ``ValueError`` for a frame too short to
hold a tag, and ``cryptography.exceptions.InvalidTag`` when a frame does not authenticate.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import constant_time, hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

__all__ = [
    "SUITES",
    "BaselineDecryptor",
    "BaselineEncryptor",
    "MalformedHeaderError",
    "Suite",
    "aead_decrypt",
    "aead_encrypt",
    "decode_header",
    "derive_key_salt",
    "encode_header",
    "nonce_for",
]

MAX_U64 = 2**64 - 1
_KEY_LABEL = b"SFrame 1.0 Secret key "
_SALT_LABEL = b"SFrame 1.0 Secret salt "


@dataclass(frozen=True)
class Suite:
    """The parameters of one SFrame cipher suite (RFC 9605 §4.5, Table 2)."""

    number: int
    hash_name: str  # "sha256" or "sha512": the HKDF hash, and the HMAC hash of CTR suites
    nk: int  # AEAD key length
    nn: int  # nonce length
    nt: int  # tag length
    nh: int  # hash output length
    nka: int | None = None  # AES key length of the CTR+HMAC suites; None for AES-GCM

    @property
    def is_gcm(self) -> bool:
        return self.nka is None

    def hash(self) -> hashes.HashAlgorithm:
        return hashes.SHA256() if self.hash_name == "sha256" else hashes.SHA512()


SUITES: dict[int, Suite] = {
    1: Suite(1, "sha256", nk=48, nn=12, nt=10, nh=32, nka=16),
    2: Suite(2, "sha256", nk=48, nn=12, nt=8, nh=32, nka=16),
    3: Suite(3, "sha256", nk=48, nn=12, nt=4, nh=32, nka=16),
    4: Suite(4, "sha256", nk=16, nn=12, nt=16, nh=32),
    5: Suite(5, "sha512", nk=32, nn=12, nt=16, nh=64),
    6: Suite(6, "sha512", nk=96, nn=12, nt=10, nh=64, nka=32),
    7: Suite(7, "sha512", nk=96, nn=12, nt=8, nh=64, nka=32),
    8: Suite(8, "sha512", nk=96, nn=12, nt=4, nh=64, nka=32),
}


class MalformedHeaderError(ValueError):
    """The bytes do not start with a valid, minimally encoded SFrame header."""


def _suite(suite: int) -> Suite:
    try:
        return SUITES[int(suite)]
    except KeyError:
        raise ValueError(f"unsupported cipher suite {suite!r}") from None


# -- §4.3 header --------------------------------------------------------------------------


def _min_len(value: int) -> int:
    """Bytes needed to write ``value`` big-endian (at least 1)."""
    return max(1, (value.bit_length() + 7) // 8)


def encode_header(kid: int, ctr: int) -> bytes:
    """Encode an SFrame header: values below 8 sit in the config byte, others follow it."""
    config = 0
    extra = b""
    for value, shift in ((kid, 4), (ctr, 0)):
        if not 0 <= value <= MAX_U64:
            raise ValueError(f"KID and CTR must fit in 64 bits, got {value}")
        if value < 8:
            config |= value << shift
        else:
            length = _min_len(value)
            config |= (0x08 | (length - 1)) << shift
            extra += value.to_bytes(length, "big")
    return bytes([config]) + extra


def decode_header(data: bytes) -> tuple[int, int, int]:
    """Parse the header at the start of ``data``; return ``(kid, ctr, header_length)``."""
    if not data:
        raise MalformedHeaderError("empty frame")
    config = data[0]
    offset = 1
    values = []
    for nibble in (config >> 4, config & 0x0F):
        if not nibble & 0x08:
            values.append(nibble)
            continue
        length = (nibble & 0x07) + 1
        field = data[offset : offset + length]
        if len(field) != length:
            raise MalformedHeaderError("truncated header")
        value = int.from_bytes(field, "big")
        if value < 8 or _min_len(value) != length:
            raise MalformedHeaderError("header value is not minimally encoded")
        values.append(value)
        offset += length
    return values[0], values[1], offset


# -- §4.4.2 key schedule, §4.4.3 nonce ----------------------------------------------------


def derive_key_salt(suite: int, base_key: bytes, kid: int) -> tuple[bytes, bytes]:
    """Return ``(sframe_key, sframe_salt)`` for ``base_key`` and ``kid``."""
    params = _suite(suite)
    secret = HKDF.extract(params.hash(), b"", bytes(base_key))
    suffix = kid.to_bytes(8, "big") + params.number.to_bytes(2, "big")
    key = HKDFExpand(params.hash(), params.nk, _KEY_LABEL + suffix).derive(secret)
    salt = HKDFExpand(params.hash(), params.nn, _SALT_LABEL + suffix).derive(secret)
    return key, salt


def nonce_for(salt: bytes, ctr: int) -> bytes:
    """The per-frame nonce: ``sframe_salt XOR CTR`` (CTR right-aligned, big-endian)."""
    ctr_bytes = ctr.to_bytes(len(salt), "big")
    return bytes(s ^ c for s, c in zip(salt, ctr_bytes, strict=True))


# -- §4.5.1 AES-CTR-HMAC, and AES-GCM -----------------------------------------------------


def _ctr_hmac_tag(params: Suite, auth_key: bytes, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
    mac = hmac.HMAC(auth_key, params.hash())
    mac.update(len(aad).to_bytes(8, "big"))
    mac.update(len(ct).to_bytes(8, "big"))
    mac.update(params.nt.to_bytes(8, "big"))
    mac.update(nonce)
    mac.update(aad)
    mac.update(ct)
    return mac.finalize()[: params.nt]


def _aes_ctr(enc_key: bytes, nonce: bytes, data: bytes) -> bytes:
    ctx = Cipher(algorithms.AES(enc_key), modes.CTR(nonce + b"\x00" * 4)).encryptor()
    return ctx.update(data) + ctx.finalize()


def aead_encrypt(suite: int, key: bytes, nonce: bytes, aad: bytes, pt: bytes) -> bytes:
    """AEAD.Encrypt of RFC 9605 §4.5: ciphertext || tag."""
    params = _suite(suite)
    if params.is_gcm:
        return AESGCM(key).encrypt(nonce, pt, aad)
    assert params.nka is not None
    enc_key, auth_key = key[: params.nka], key[params.nka :]
    ct = _aes_ctr(enc_key, nonce, pt)
    return ct + _ctr_hmac_tag(params, auth_key, nonce, aad, ct)


def aead_decrypt(suite: int, key: bytes, nonce: bytes, aad: bytes, ct_tag: bytes) -> bytes:
    """AEAD.Decrypt of RFC 9605 §4.5; raises ``InvalidTag`` if the tag does not match."""
    params = _suite(suite)
    if len(ct_tag) < params.nt:
        raise ValueError("ciphertext shorter than the tag")
    if params.is_gcm:
        return AESGCM(key).decrypt(nonce, ct_tag, aad)
    assert params.nka is not None
    enc_key, auth_key = key[: params.nka], key[params.nka :]
    ct, tag = ct_tag[: -params.nt], ct_tag[-params.nt :]
    if not constant_time.bytes_eq(_ctr_hmac_tag(params, auth_key, nonce, aad, ct), tag):
        raise InvalidTag
    return _aes_ctr(enc_key, nonce, ct)


# -- §4.4.3 frame encryption ----------------------------------------------------------------


class _KeyState:
    """The derived key of one KID; the AESGCM object is built once, CTR objects per frame."""

    def __init__(self, params: Suite, base_key: bytes, kid: int) -> None:
        self.params = params
        self.key, self.salt = derive_key_salt(params.number, base_key, kid)
        self.gcm = AESGCM(self.key) if params.is_gcm else None
        if params.nka is not None:
            self.enc_key, self.auth_key = self.key[: params.nka], self.key[params.nka :]

    def seal(self, nonce: bytes, aad: bytes, pt: bytes) -> bytes:
        if self.gcm is not None:
            return self.gcm.encrypt(nonce, pt, aad)
        ct = _aes_ctr(self.enc_key, nonce, pt)
        return ct + _ctr_hmac_tag(self.params, self.auth_key, nonce, aad, ct)

    def open(self, nonce: bytes, aad: bytes, ct_tag: bytes) -> bytes:
        if self.gcm is not None:
            return self.gcm.decrypt(nonce, ct_tag, aad)
        nt = self.params.nt
        ct, tag = ct_tag[:-nt], ct_tag[-nt:]
        expected = _ctr_hmac_tag(self.params, self.auth_key, nonce, aad, ct)
        if not constant_time.bytes_eq(expected, tag):
            raise InvalidTag
        return _aes_ctr(self.enc_key, nonce, ct)


class BaselineEncryptor:
    """Encrypts the frames of one KID: ``header || ciphertext || tag``, CTR += 1 each."""

    def __init__(self, suite: int, base_key: bytes, kid: int, counter: int = 0) -> None:
        if not 0 <= kid <= MAX_U64 or not 0 <= counter <= MAX_U64:
            raise ValueError("KID and counter must fit in 64 bits")
        self.suite = _suite(suite)
        self.kid = kid
        self.counter: int | None = counter  # None once CTR 2^64-1 has been used
        self._state = _KeyState(self.suite, bytes(base_key), kid)

    def encrypt(self, plaintext: bytes, metadata: bytes = b"") -> bytes:
        if self.counter is None:
            raise OverflowError("counter exhausted for this KID")
        ctr = self.counter
        header = encode_header(self.kid, ctr)
        nonce = nonce_for(self._state.salt, ctr)
        frame = header + self._state.seal(nonce, header + bytes(metadata), bytes(plaintext))
        self.counter = ctr + 1 if ctr < MAX_U64 else None
        return frame


class BaselineDecryptor:
    """Decrypts frames of any registered KID (no replay protection)."""

    def __init__(self, suite: int) -> None:
        self.suite = _suite(suite)
        self._keys: dict[int, _KeyState] = {}

    def add_key(self, kid: int, base_key: bytes) -> None:
        self._keys[kid] = _KeyState(self.suite, bytes(base_key), kid)

    def remove_key(self, kid: int) -> None:
        del self._keys[kid]

    def decrypt(self, data: bytes, metadata: bytes = b"") -> bytes:
        data = bytes(data)
        kid, ctr, header_len = decode_header(data)
        state = self._keys[kid]  # KeyError for an unknown KID
        if len(data) - header_len < self.suite.nt:
            raise ValueError("frame shorter than its tag")
        aad = data[:header_len] + bytes(metadata)
        return state.open(nonce_for(state.salt, ctr), aad, data[header_len:])
