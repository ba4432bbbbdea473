"""How the cluster reports that Redis (or a peer node) cannot be reached.

:class:`ClusterUnavailable` is what a caller sees: an :class:`~e2ee.server.errors.ApiError`
with code ``cluster_unavailable`` (HTTP 503), so REST and signaling answer it with the usual
error envelope and a new join fails with one clear line while calls in progress go on.

:class:`RedisHealth` keeps the log readable through an outage: Redis going away makes every
heartbeat, bus read and store call fail, many times a second across components.  One
WARNING says when the outage starts, one INFO when Redis answers again, and nothing in
between (no traceback storm).  All the cluster objects sharing a Redis client share one
:class:`RedisHealth` (:func:`health_of`), so an outage is one WARNING per node, not one
per component.

This module does not import ``redis``: the error can be named by code that runs without
the optional dependency.
"""

from __future__ import annotations

import logging
import time
import weakref

from e2ee.server.errors import ApiError

__all__ = ["CODE", "ClusterUnavailable", "RedisHealth", "health_of"]

log = logging.getLogger("e2ee.server.cluster")

#: The error code clients see.
CODE = "cluster_unavailable"


class ClusterUnavailable(ApiError):
    """The cluster cannot do this now: Redis is unreachable, no node is live, or a peer
    node did not answer in time.  ``code`` is ``"cluster_unavailable"``, ``status`` 503."""

    def __init__(self, message: str = "the cluster is unavailable (Redis unreachable)") -> None:
        super().__init__(CODE, message, status=503)


class RedisHealth:
    """Whether Redis answered last time, logged on changes only.

    ``failed(exc, doing)`` after a Redis error: the first one of an outage logs a WARNING
    (what failed and why, one line, no traceback); ``ok()`` after a success: the first one
    after an outage logs an INFO with the outage's length.
    """

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger
        self.down_since: float | None = None
        #: Outages seen (tests and metrics read it).
        self.outages = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException, doing: str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.outages += 1
            self._log.warning(
                "cluster: Redis unavailable (%s: %s: %s); existing calls continue, "
                "new placements fail until it is back",
                doing,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )

    def ok(self) -> None:
        if self.down_since is not None:
            lasted = time.monotonic() - self.down_since
            self.down_since = None
            self._log.info("cluster: Redis is reachable again (after %.1f s)", lasted)


# Keyed by the client object: the store, registry, placement and bus built on one client
# log one outage once.  Weak, so a closed client does not keep its entry alive.
_HEALTH: weakref.WeakKeyDictionary[object, RedisHealth] = weakref.WeakKeyDictionary()


def health_of(client: object) -> RedisHealth:
    """The :class:`RedisHealth` shared by everything using the Redis client ``client``."""
    health = _HEALTH.get(client)
    if health is None:
        health = _HEALTH[client] = RedisHealth()
    return health
