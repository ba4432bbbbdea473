"""The session server: REST API, signaling WebSocket, live rooms, durable store, tokens.

Never imports :mod:`e2ee.crypto` or :mod:`e2ee.transform` (the server cannot read media),
:mod:`e2ee.client` nor :mod:`e2ee.tools`.
"""

from __future__ import annotations

from e2ee.server.app import DEFAULT_DATA_DIR, HUB, create_app, run, serve

__all__ = ["DEFAULT_DATA_DIR", "HUB", "create_app", "run", "serve"]
