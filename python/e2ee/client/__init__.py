"""The Python client: a participant in a session on an e2ee server."""

from __future__ import annotations

from e2ee.client.errors import E2eeRequired, SessionError
from e2ee.client.reconnect import ReconnectPolicy
from e2ee.client.session import Publisher, Session, Subscriber
from e2ee.wire.params import SessionPolicy

__all__ = [
    "E2eeRequired",
    "Publisher",
    "ReconnectPolicy",
    "Session",
    "SessionError",
    "SessionPolicy",
    "Subscriber",
]
