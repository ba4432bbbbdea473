"""What the client accepts from a server's hello.  Pure: no I/O, no keys.

The server is part of the threat model (docs/protocol.md §1): it picks whether a session
is end-to-end encrypted, its cipher suite and its PBKDF2 iteration count.  The client
decides.  When the application gave an encryption secret, E2EE is required: a hello that
turns it off, routes media any other way, or names no valid parameters is refused
(:class:`~e2ee.client.errors.E2eeRequired`), and the parameters are held to the
application's :class:`~e2ee.wire.params.SessionPolicy`
(:class:`~e2ee.errors.WeakSessionParameters`).  Only a client given no secret joins a
session without E2EE.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from e2ee.client.errors import E2eeRequired, SessionError
from e2ee.errors import EncryptionSecretMissing
from e2ee.wire.params import SessionPolicy

__all__ = ["E2eeParams", "check_hello"]

#: The only media mode an E2EE session has: through the server's router (a relayed
#: session has no router and no E2EE, docs/protocol.md §9).
E2EE_MEDIA_MODE = "routed"


@dataclass(frozen=True, slots=True)
class E2eeParams:
    """The session parameters the client derives keys with, after they passed its policy."""

    suite: int
    kdf_iterations: int


def check_hello(
    session: Mapping[str, Any], *, secret_given: bool, policy: SessionPolicy
) -> E2eeParams | None:
    """Checks the ``session`` object of a server's hello against what the client wants.

    Returns the E2EE parameters to derive keys with, or ``None`` for a session without
    E2EE, which only a client given no secret (``secret_given`` false) joins.  Raises
    :class:`~e2ee.client.errors.E2eeRequired` when a secret was given and the server
    offers no valid E2EE session; :class:`~e2ee.errors.WeakSessionParameters` when its
    suite or iteration count fails ``policy``; :class:`~e2ee.errors.EncryptionSecretMissing`
    for an E2EE session without a secret; :class:`~e2ee.client.errors.SessionError`
    (``protocol_error``) when ``e2ee`` is not a boolean.
    """
    e2ee = session.get("e2ee")
    media_mode = session.get("media_mode")
    suite = session.get("suite")
    iterations = session.get("kdf_iterations")
    if not secret_given:
        if e2ee is True:
            raise EncryptionSecretMissing(
                "this session is end-to-end encrypted: set an encryption secret to connect"
            )
        if e2ee is not False:
            raise SessionError("protocol_error", f"the server's hello has e2ee={e2ee!r}")
        return None
    if e2ee is not True:
        raise E2eeRequired(
            f"the server offered an unencrypted session (e2ee={e2ee!r}); this client was "
            "given an encryption secret and refuses to join without end-to-end encryption"
        )
    if media_mode != E2EE_MEDIA_MODE:
        raise E2eeRequired(
            f"the server offered a session with media_mode={media_mode!r}, which has no "
            "end-to-end encryption; this client was given an encryption secret and refuses "
            f"to join anything but an end-to-end encrypted {E2EE_MEDIA_MODE!r} session"
        )
    if not (
        isinstance(suite, int)
        and isinstance(iterations, int)
        and not isinstance(suite, bool)
        and not isinstance(iterations, bool)
    ):
        raise E2eeRequired(
            f"the server offered an end-to-end encrypted session without valid parameters "
            f"(suite={suite!r}, kdf_iterations={iterations!r}); this client refuses it"
        )
    policy.check(suite, iterations)
    return E2eeParams(suite, iterations)
