"""``e2ee.sframe``, the documented name of :mod:`e2ee.crypto.sframe` (same objects)."""

from __future__ import annotations

from e2ee.crypto.sframe import (
    CipherSuite,
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
