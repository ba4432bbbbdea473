"""The errors of the Python client (besides those of :mod:`e2ee.errors`)."""

from __future__ import annotations

from e2ee.errors import E2eeError

__all__ = ["E2eeRequired", "SessionError"]


class SessionError(E2eeError):
    """The server refused something, or the client refused the server; ``code`` is a
    stable error code (the server's, or one of the client's own such as
    ``not_connected``, ``protocol_error`` or ``e2ee_required``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class E2eeRequired(SessionError):
    """The application gave an encryption secret, and the server offered a session
    without end-to-end encryption (``e2ee`` off, a media mode other than ``routed``, or
    no valid suite and iteration count).  The client refuses it: nothing is published
    or subscribed, and the connection is closed.  ``code`` is ``"e2ee_required"``."""

    CODE = "e2ee_required"

    def __init__(self, message: str) -> None:
        super().__init__(self.CODE, message)
