"""The session server: REST API, signaling WebSocket, live rooms, durable store, tokens.

Never imports :mod:`e2ee.crypto` (the server cannot read media) nor :mod:`e2ee.client`.
"""

from __future__ import annotations

from e2ee.server.app import DEFAULT_DATA_DIR, HUB, create_app, run, serve

__all__ = ["DEFAULT_DATA_DIR", "HUB", "create_app", "run", "serve"]
