"""The router's errors.

The session server maps them to signaling error codes by class name
(:mod:`e2ee.server.signaling`), so their names are part of the protocol.
"""

from __future__ import annotations

from e2ee.errors import E2eeError

__all__ = ["CodecNotAllowed", "RouterError", "UnknownStream", "UnknownSubscription"]


class RouterError(E2eeError):
    """Base class of the router's errors."""


class CodecNotAllowed(RouterError, ValueError):
    """An offer (or answer) has no VP8 for a video m-line / no Opus for an audio m-line."""


class UnknownStream(RouterError, KeyError):
    """No stream is published under this id."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "unknown stream"


class UnknownSubscription(RouterError, KeyError):
    """No subscription has this id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown subscription"
