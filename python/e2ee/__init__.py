"""e2ee: end-to-end encrypted media through a router that cannot read it.

The SFrame core (:mod:`e2ee.sframe`) and the key schedule below run in Rust.  A shared
encryption secret becomes keys like this::

    key = e2ee.derive_secret_key(secret, session_id, iterations=600_000)
    kid = e2ee.new_kid(e2ee.secret_id(key))      # one per (track, secret)
    enc = e2ee.sframe.Encryptor(e2ee.sframe.CipherSuite.AES_256_CTR_HMAC_SHA512_80, key, kid)
"""

from __future__ import annotations

from e2ee import errors, sframe
from e2ee._core import (
    BACKEND,
    MAX_SECRET_CHARS,
    MIN_SECRET_CHARS,
    __version__,
    cpu_features,
    derive_secret_key,
    kid_secret_id,
    new_kid,
    normalize_secret,
    secret_id,
    self_test,
)
from e2ee.errors import (
    DecryptionInternalError,
    E2eeError,
    EncryptionInternalError,
    EncryptionSecretMismatch,
    EncryptionSecretMissing,
    InvalidEncryptionSecret,
)
from e2ee.frames import DecryptorEvent, FrameDecryptor, FrameEncryptor
from e2ee.keyring import KeyRing

__all__ = [
    "BACKEND",
    "MAX_SECRET_CHARS",
    "MIN_SECRET_CHARS",
    "DecryptionInternalError",
    "DecryptorEvent",
    "E2eeError",
    "EncryptionInternalError",
    "EncryptionSecretMismatch",
    "EncryptionSecretMissing",
    "FrameDecryptor",
    "FrameEncryptor",
    "InvalidEncryptionSecret",
    "KeyRing",
    "__version__",
    "cpu_features",
    "derive_secret_key",
    "errors",
    "kid_secret_id",
    "new_kid",
    "normalize_secret",
    "secret_id",
    "self_test",
    "sframe",
]
