"""The media router as the session server sees it: the :class:`MediaRouter` protocol,
the factory that makes one per session, and how its failures reach the client.

The default factory imports :mod:`e2ee.sfu.router` (and so aiortc) only when a session
first publishes or subscribes: a server without aiortc still starts, serves the REST API
and relays signaling, and answers media requests with ``not_implemented``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from e2ee.server.errors import ApiError
from e2ee.server.store import SessionRecord

__all__ = [
    "MediaRouter",
    "RouterFactory",
    "default_router_factory",
    "media_error",
    "preload_router",
]

log = logging.getLogger(__name__)


class MediaRouter(Protocol):
    """The part of :class:`e2ee.sfu.router.Router` the server uses."""

    async def publish(self, stream_id: str, offer: Any) -> Any: ...
    async def subscribe(self, subscription_id: str, stream_id: str) -> Any: ...
    async def accept_answer(self, subscription_id: str, answer: Any) -> None: ...
    async def unsubscribe(self, subscription_id: str) -> None: ...
    async def unpublish(self, stream_id: str) -> None: ...
    def subscriber_count(self, stream_id: str) -> int: ...
    def stats(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...


#: Makes the media router of one session.
RouterFactory = Callable[[SessionRecord], MediaRouter]


def default_router_factory(rtc_configuration: Any = None) -> RouterFactory:
    """Routers from :mod:`e2ee.sfu.router`, E2EE mode as the session says."""

    def make(record: SessionRecord) -> MediaRouter:
        try:
            from e2ee.sfu.router import Router
        except ImportError as exc:
            log.warning("media router unavailable: %s", exc)
            raise ApiError(
                "not_implemented", "the media router is not available on this server", 501
            ) from None
        router: MediaRouter = Router(e2ee=record.e2ee, rtc_configuration=rtc_configuration)
        return router

    return make


def preload_router() -> bool:
    """Import the media router now (aiortc, PyAV): a server about to serve calls will
    load it at the first one anyway, and loaded before ``gc.freeze()`` its modules are
    out of the garbage collector's sight for good (:func:`e2ee.server.app.serve`).
    ``False`` when it cannot be imported (the first call then says why)."""
    try:
        import e2ee.sfu.router  # noqa: F401
    except ImportError:
        return False
    return True


def media_error(exc: Exception, what: str) -> ApiError:
    """Maps a router exception to a client error.  Matched by class name so the server
    does not import aiortc (through e2ee.sfu.router) until media is used."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = str(exc)[:300]
    if names & {"CodecNotAllowed", "UnsupportedCodec"}:
        return ApiError("codec_not_allowed", text or "codec not allowed in this session")
    if "UnknownStream" in names:
        return ApiError("unknown_stream", "no such stream in this session")
    if "UnknownSubscription" in names:
        return ApiError("unknown_subscription", "no such subscription on this connection")
    if "InvalidSdp" in names or isinstance(exc, AssertionError):
        # Malformed SDP (aiortc's parser asserts on some): the client's fault, no traceback.
        return ApiError("bad_request", f"the {what} was refused: {text or 'malformed SDP'}")
    if isinstance(exc, ValueError):
        return ApiError("bad_request", f"the {what} was refused: {text or 'invalid SDP'}")
    log.error("media router failed during %s", what, exc_info=exc)
    return ApiError("media_error", f"the media router failed during {what}", 500)
