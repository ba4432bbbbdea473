"""Per-connection rate limits of the signaling WebSocket: token buckets by message type.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a message
takes one token, and a message that finds its bucket empty is refused (``rate_limited``)
without being handled.  Refusals take from a ``strikes`` bucket of their own: a client that
keeps sending over its limits empties that too and is disconnected
(:data:`e2ee.server.errors.CLOSE_RATE_LIMITED`).  Each check is a few float operations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["LIMITS", "STRIKES", "Bucket", "Limit", "RateLimiter"]


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens a second
    burst: float  # bucket size


#: Message type -> limit; types not listed (including unparsable messages) share ``*``.
LIMITS: dict[str, Limit] = {
    "signal": Limit(20.0, 40.0),
    "publish": Limit(2.0, 10.0),
    "unpublish": Limit(2.0, 10.0),
    "subscribe": Limit(5.0, 20.0),
    "answer": Limit(5.0, 20.0),
    "unsubscribe": Limit(5.0, 20.0),
    "ping": Limit(10.0, 50.0),
    "*": Limit(10.0, 30.0),
}
#: Refused messages a connection may send before it is disconnected for flooding.
STRIKES = Limit(5.0, 50.0)


class Bucket:
    __slots__ = ("_at", "_tokens", "limit")

    def __init__(self, limit: Limit, now: float) -> None:
        self.limit = limit
        self._tokens = limit.burst
        self._at = now

    def take(self, now: float) -> bool:
        """Takes one token; ``False`` (and takes nothing) if the bucket is empty."""
        self._tokens = min(self.limit.burst, self._tokens + (now - self._at) * self.limit.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class RateLimiter:
    """The buckets of one connection."""

    def __init__(self) -> None:
        now = time.monotonic()
        self._buckets: dict[str, Bucket] = {}
        self._strikes = Bucket(STRIKES, now)

    def allow(self, kind: str) -> bool:
        """Whether a message of type ``kind`` may be handled now."""
        key = kind if kind in LIMITS else "*"
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(LIMITS[key], now)
        return bucket.take(now)

    def strike(self) -> bool:
        """Records a refused message; ``False`` once the client should be disconnected."""
        return self._strikes.take(time.monotonic())
