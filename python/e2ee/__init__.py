"""e2ee: end-to-end encrypted media through a router that cannot read it.

The SFrame core (:mod:`e2ee.sframe`) and the key schedule below run in Rust.  A shared
encryption secret becomes keys like this::

    key = e2ee.derive_secret_key(secret, session_id, iterations=600_000)
    kid = e2ee.new_kid(e2ee.secret_id(key))      # one per (track, secret)
    enc = e2ee.sframe.Encryptor(e2ee.sframe.CipherSuite.AES_256_CTR_HMAC_SHA512_80, key, kid)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Errors are plain Python and always loaded.  Everything else loads on first use (PEP 562),
# so that a process which only routes media (e2ee.sfu, e2ee.server) never loads the
# crypto core or any key handling.
from e2ee import errors
from e2ee.errors import (
    DecryptionInternalError,
    E2eeError,
    EncryptionInternalError,
    EncryptionSecretMismatch,
    EncryptionSecretMissing,
    InvalidEncryptionSecret,
)

if TYPE_CHECKING:
    from e2ee import sframe
    from e2ee.crypto import (
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
    from e2ee.crypto.frames import DecryptorEvent, FrameDecryptor, FrameEncryptor
    from e2ee.crypto.keyring import KeyRing

_LAZY = {
    **{
        name: "e2ee.crypto"
        for name in (
            "BACKEND",
            "MAX_SECRET_CHARS",
            "MIN_SECRET_CHARS",
            "__version__",
            "cpu_features",
            "derive_secret_key",
            "kid_secret_id",
            "new_kid",
            "normalize_secret",
            "secret_id",
            "self_test",
        )
    },
    "DecryptorEvent": "e2ee.crypto.frames",
    "FrameDecryptor": "e2ee.crypto.frames",
    "FrameEncryptor": "e2ee.crypto.frames",
    "KeyRing": "e2ee.crypto.keyring",
}


def __getattr__(name: str) -> Any:
    if name == "sframe":
        value: Any = importlib.import_module("e2ee.sframe")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'e2ee' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
