"""What the session server tells a client that something failed: the error envelope
``{"type": "error", "code": ..., "message": ...}`` (REST and WebSocket) and the
WebSocket close codes of the signaling protocol."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CLOSE_BAD_REQUEST",
    "CLOSE_CLUSTER_UNAVAILABLE",
    "CLOSE_FORBIDDEN",
    "CLOSE_FORCE_DISCONNECTED",
    "CLOSE_GOING_AWAY",
    "CLOSE_NOT_FOUND",
    "CLOSE_PARTICIPANT_LIMIT",
    "CLOSE_RATE_LIMITED",
    "CLOSE_REDIRECT",
    "CLOSE_TOO_SLOW",
    "CLOSE_UNAUTHORIZED",
    "ApiError",
]

# WebSocket close codes of the signaling protocol (4000-4999 are for applications).
CLOSE_FORCE_DISCONNECTED = 4001
CLOSE_TOO_SLOW = 4008
CLOSE_RATE_LIMITED = 4029
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_PARTICIPANT_LIMIT = 4429
#: Cluster mode (docs/cluster.md): another node owns the session; the ``redirect``
#: message before it names that node's URL (the number echoes HTTP 302).
CLOSE_REDIRECT = 4302
#: Cluster mode: the shared state (Redis) is out of reach, so the session cannot be
#: placed; calls in progress are not affected (the number echoes HTTP 503).
CLOSE_CLUSTER_UNAVAILABLE = 4503
CLOSE_GOING_AWAY = 1001


class ApiError(Exception):
    """An error with a stable ``code`` that the client sees as
    ``{"type": "error", "code": ..., "message": ...}``.  ``status`` is the HTTP status on
    the REST API (and ignored on the WebSocket)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self, msg_id: object = None, *, with_id: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "error"}
        if with_id:
            out["id"] = msg_id
        out["code"] = self.code
        out["message"] = self.message
        return out
