"""The errors of the Python client (besides those of :mod:`e2ee.errors`)."""

from __future__ import annotations

from e2ee.errors import E2eeError

__all__ = ["E2eeRequired", "Redirected", "SessionError"]


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


class Redirected(SessionError):
    """Cluster mode (docs/cluster.md): the node does not own the session and names the
    one that does (the server's ``redirect`` message, then close 4302).  The session
    follows it on its own; an application sees it only past
    :data:`e2ee.client.redirect.MAX_REDIRECTS` in a row (then ``code`` is
    ``too_many_redirects``).  ``url`` is the owner's base URL, ``node_id`` its name."""

    CODE = "redirect"

    def __init__(self, url: str, node_id: str, code: str = CODE) -> None:
        super().__init__(code, f"the session is on node {node_id!r} at {url!r}")
        self.url = url
        self.node_id = node_id
