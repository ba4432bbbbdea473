"""SFrame (RFC 9605) frame encryption, with the AES-256-CTR-HMAC-SHA512 suites of
draft-barnes-sframe-iana-256.

Everything here runs in the Rust core; this module only names it.  A frame is
``header || ciphertext || tag`` with ``metadata`` authenticated but not carried::

    enc = Encryptor(CipherSuite.AES_256_CTR_HMAC_SHA512_80, base_key, kid)
    wire = enc.encrypt(frame, metadata=clear_bytes)
    dec = Decryptor(CipherSuite.AES_256_CTR_HMAC_SHA512_80)
    dec.add_key(kid, base_key)
    frame = dec.decrypt(wire, metadata=clear_bytes)

Every bytes-like argument takes ``bytes``, ``bytearray``, ``memoryview`` or anything
else with the buffer protocol, without copying.

An ``Encryptor`` or ``Decryptor`` may be shared between threads: each call takes the
object's own lock (uncontended: one atomic operation), so every frame gets its own CTR
and a (KID, CTR) is accepted once, whichever thread decrypts it.  A ``base_key`` is at
least 16 bytes.
"""

from __future__ import annotations

import enum

from e2ee import _core
from e2ee._core import (
    Decryptor,
    Encryptor,
    aead_decrypt,
    aead_encrypt,
    decode_header,
    derive_key_salt,
    encode_header,
)

__all__ = [
    "CipherSuite",
    "Decryptor",
    "Encryptor",
    "aead_decrypt",
    "aead_encrypt",
    "decode_header",
    "derive_key_salt",
    "encode_header",
]


class CipherSuite(enum.IntEnum):
    """The SFrame cipher suites (IANA "SFrame Cipher Suites" registry)."""

    AES_128_CTR_HMAC_SHA256_80 = 1
    AES_128_CTR_HMAC_SHA256_64 = 2
    AES_128_CTR_HMAC_SHA256_32 = 3
    AES_128_GCM_SHA256_128 = 4
    AES_256_GCM_SHA512_128 = 5
    AES_256_CTR_HMAC_SHA512_80 = 6
    AES_256_CTR_HMAC_SHA512_64 = 7
    AES_256_CTR_HMAC_SHA512_32 = 8

    @property
    def nk(self) -> int:
        """AEAD key length in bytes (for CTR-HMAC: the AES key and the HMAC key)."""
        return _core.suite_params(self)[0]

    @property
    def nn(self) -> int:
        """Nonce length in bytes."""
        return _core.suite_params(self)[1]

    @property
    def nt(self) -> int:
        """Tag length in bytes."""
        return _core.suite_params(self)[2]

    @property
    def nh(self) -> int:
        """Output length of the suite's hash in bytes."""
        return _core.suite_params(self)[3]
