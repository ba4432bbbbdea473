"""Session parameters of the E2EE protocol (docs/protocol.md), and the floors a client
holds a server to.

Kept apart from :mod:`e2ee.crypto.keyring` so that the server and the router can name them
without loading the crypto core: a router process never imports ``e2ee._core``.

The server picks a session's cipher suite and PBKDF2 iteration count, and the server is
part of the threat model.  The client decides: it checks what the server asked against
its own :class:`SessionPolicy` before deriving any key, and refuses a session that would
make guessing the secret cheap or forging a frame likely.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from e2ee.errors import WeakSessionParameters

__all__ = [
    "DEFAULT_ITERATIONS",
    "DEFAULT_SUITE",
    "E2EE_SUITES",
    "MAX_ITERATIONS",
    "MIN_ITERATIONS",
    "SUITE_NAMES",
    "SessionPolicy",
]

#: SFrame cipher suite 6, AES_256_CTR_HMAC_SHA512_80 (draft-barnes-sframe-iana-256).
DEFAULT_SUITE = 6
#: PBKDF2-HMAC-SHA256 iterations for the secret key (a session parameter).
DEFAULT_ITERATIONS = 600_000
#: The most iterations a client accepts, so that a hostile server cannot hang it.
MAX_ITERATIONS = 10_000_000
#: The fewest iterations a client accepts by default, so that a hostile server cannot make
#: guessing the secret cheap.  (The core itself accepts 1 and up, for tests.)
MIN_ITERATIONS = 100_000

#: The IANA names of the SFrame cipher suites (RFC 9605 §4.5, draft-barnes-sframe-iana-256).
SUITE_NAMES: dict[int, str] = {
    1: "AES_128_CTR_HMAC_SHA256_80",
    2: "AES_128_CTR_HMAC_SHA256_64",
    3: "AES_128_CTR_HMAC_SHA256_32",
    4: "AES_128_GCM_SHA256_128",
    5: "AES_256_GCM_SHA512_128",
    6: "AES_256_CTR_HMAC_SHA512_80",
    7: "AES_256_CTR_HMAC_SHA512_64",
    8: "AES_256_CTR_HMAC_SHA512_32",
}
#: The suites a client accepts for an E2EE session by default: AES-256 with an 80-bit or
#: 128-bit tag.  No 32-bit or 64-bit tags for video: at 30 frames a second a router gets
#: enough forgery attempts to land one.
E2EE_SUITES: frozenset[int] = frozenset({5, 6})


def _suite(n: int) -> str:
    name = SUITE_NAMES.get(n)
    return f"{n} ({name})" if name else str(n)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """What a client accepts from a server: cipher suites and PBKDF2 iteration counts.

    The defaults are the floors: iterations from :data:`MIN_ITERATIONS` to
    :data:`MAX_ITERATIONS`, suites 5 and 6.  ``pin_suite`` and ``pin_iterations``
    demand exactly one value.  A test or an application may lower ``min_iterations``
    explicitly (``SessionPolicy(min_iterations=1_000)``); nothing lowers it implicitly.
    """

    min_iterations: int = MIN_ITERATIONS
    suites: frozenset[int] = E2EE_SUITES
    pin_suite: int | None = None
    pin_iterations: int | None = None
    max_iterations: int = MAX_ITERATIONS

    def __post_init__(self) -> None:
        suites: Iterable[int] = self.suites
        if not isinstance(suites, frozenset):
            object.__setattr__(self, "suites", frozenset(suites))
        if not all(_is_int(s) and s in SUITE_NAMES for s in self.suites) or not self.suites:
            raise ValueError(f"suites must be a non-empty set of 1 to 8, not {self.suites!r}")
        for name in ("min_iterations", "max_iterations"):
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= MAX_ITERATIONS:
                raise ValueError(f"{name} must be an int from 1 to {MAX_ITERATIONS}")
        if self.min_iterations > self.max_iterations:
            raise ValueError("min_iterations must not exceed max_iterations")
        if self.pin_suite is not None and self.pin_suite not in self.suites:
            raise ValueError(f"pin_suite {self.pin_suite!r} is not one of the allowed suites")
        if self.pin_iterations is not None and not (
            _is_int(self.pin_iterations)
            and self.min_iterations <= self.pin_iterations <= self.max_iterations
        ):
            raise ValueError(
                f"pin_iterations must be from {self.min_iterations} to {self.max_iterations}"
            )

    def check(self, suite: int, kdf_iterations: int) -> None:
        """Raises :class:`~e2ee.errors.WeakSessionParameters` unless this policy allows a
        session with ``suite`` and ``kdf_iterations``.  The message names what was asked
        and what the policy allows; it never contains a secret."""
        problems: list[str] = []
        if not _is_int(suite):
            problems.append(f"suite {suite!r} is not an integer")
        elif self.pin_suite is not None and suite != self.pin_suite:
            problems.append(f"suite {_suite(suite)}, this client requires {_suite(self.pin_suite)}")
        elif suite not in self.suites:
            allowed = ", ".join(_suite(s) for s in sorted(self.suites))
            problems.append(f"suite {_suite(suite)}, this client allows {allowed}")
        if not _is_int(kdf_iterations):
            problems.append(f"kdf_iterations {kdf_iterations!r} is not an integer")
        elif self.pin_iterations is not None and kdf_iterations != self.pin_iterations:
            problems.append(
                f"{kdf_iterations} PBKDF2 iterations, this client requires {self.pin_iterations}"
            )
        elif not self.min_iterations <= kdf_iterations <= self.max_iterations:
            problems.append(
                f"{kdf_iterations} PBKDF2 iterations, this client allows "
                f"{self.min_iterations} to {self.max_iterations}"
            )
        if problems:
            raise WeakSessionParameters(
                "the server asked for " + "; ".join(problems),
                suite=suite,
                kdf_iterations=kdf_iterations,
            )
