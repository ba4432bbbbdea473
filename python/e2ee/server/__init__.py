"""The session server: REST API, signaling WebSocket, live rooms, durable store, tokens.

Never imports :mod:`e2ee.crypto` or :mod:`e2ee.transform` (the server cannot read media),
:mod:`e2ee.client` nor :mod:`e2ee.tools`.

The names below load :mod:`e2ee.server.app` (aiohttp, aiortc) on first use (PEP 562), so
importing a light module such as :mod:`e2ee.server.store` or :mod:`e2ee.server.tokens`
(the CLI's ``credentials`` and ``token`` commands do) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from e2ee.server.app import DEFAULT_DATA_DIR, HUB, create_app, run, serve

__all__ = ["DEFAULT_DATA_DIR", "HUB", "create_app", "run", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from e2ee.server import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
