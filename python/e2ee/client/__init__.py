"""The Python client: a participant in a session on an e2ee server."""

from __future__ import annotations

from e2ee.client.session import Publisher, Session, SessionError, Subscriber

__all__ = ["Publisher", "Session", "SessionError", "Subscriber"]
