"""Session parameters of the E2EE protocol (docs/protocol.md), as plain numbers.

Kept apart from :mod:`e2ee.crypto.keyring` so that the server and the router can name them
without loading the crypto core: a router process never imports ``e2ee._core``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_ITERATIONS", "DEFAULT_SUITE", "MAX_ITERATIONS"]

#: SFrame cipher suite 6, AES_256_CTR_HMAC_SHA512_80 (draft-barnes-sframe-iana-256).
DEFAULT_SUITE = 6
#: PBKDF2-HMAC-SHA256 iterations for the secret key (a session parameter).
DEFAULT_ITERATIONS = 600_000
#: The most iterations a client accepts, so that a hostile server cannot hang it.
MAX_ITERATIONS = 10_000_000
