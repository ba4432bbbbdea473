"""The Redis client the cluster shares, and how its errors become :class:`ClusterUnavailable`.

One client (one connection pool) per node: the store, the registry, the placement and the
bus all use it.  Its timeouts are short and its retry is a single immediate one, because a
node must notice quickly that Redis is gone (a join then fails with a clear error instead
of hanging) and must not pile up retries on a dead server; the one retry is for the stale
pooled connection that a Redis restart leaves behind, which fails once and reconnects.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from e2ee.server.cluster.errors import ClusterUnavailable, health_of

__all__ = [
    "CONNECT_TIMEOUT",
    "OUTAGE_ERRORS",
    "SOCKET_TIMEOUT",
    "connect",
    "guarded",
    "text",
]

T = TypeVar("T")

#: Seconds to wait for a Redis reply, and for a TCP connection to Redis.
SOCKET_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0

#: The errors that mean "Redis cannot serve us now": unreachable, timing out, loading its
#: data after a restart (``BusyLoadingError``), or refusing writes (``OOM``, ``MISCONF``,
#: ``READONLY`` are ``ResponseError`` replies).  A bug in a script would also land here;
#: the one WARNING per outage names the error, so it does not go unnoticed.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    RedisError,
    OSError,  # includes the built-in TimeoutError
)


def connect(
    url: str,
    *,
    socket_timeout: float = SOCKET_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> Redis:
    """A client of ``url`` (``redis://HOST:PORT/DB``) decoding replies as UTF-8 text.
    Connects lazily: a Redis that is down now is not an error until it is used."""
    client: Redis = Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 1),
        client_name="e2ee",
    )
    return client


async def guarded(client: Redis, doing: str, op: Awaitable[T]) -> T:
    """Awaits ``op`` (a call on ``client``); a Redis outage becomes
    :class:`ClusterUnavailable` and is logged once per outage (see
    :class:`~e2ee.server.cluster.errors.RedisHealth`)."""
    health = health_of(client)
    try:
        result = await op
    except OUTAGE_ERRORS as exc:
        health.failed(exc, doing)
        raise ClusterUnavailable(
            f"the cluster is unavailable: Redis did not answer ({doing})"
        ) from None
    health.ok()
    return result


def text(value: object) -> str | None:
    """A reply as text (the client decodes; bytes only if a caller passed its own client)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
