"""The crypto facade: the only package that loads the Rust core (``e2ee._core``).

:mod:`~e2ee.crypto.sframe` names the SFrame primitives, :mod:`~e2ee.crypto.keyring` turns
the session's encryption secret into keys, :mod:`~e2ee.crypto.frames` encrypts and
decrypts one track's frames.  The router and the session server never import this
package (an import contract in ``pyproject.toml`` says so, and CI checks it).
"""

from __future__ import annotations

from e2ee._core import (
    BACKEND,
    MAX_SECRET_CHARS,
    MIN_SECRET_CHARS,
    __version__,
    backend_info,
    cpu_features,
    derive_secret_key,
    kid_secret_id,
    new_kid,
    normalize_secret,
    secret_id,
    self_test,
)

__all__ = [
    "BACKEND",
    "MAX_SECRET_CHARS",
    "MIN_SECRET_CHARS",
    "__version__",
    "backend_info",
    "cpu_features",
    "derive_secret_key",
    "kid_secret_id",
    "new_kid",
    "normalize_secret",
    "secret_id",
    "self_test",
]
