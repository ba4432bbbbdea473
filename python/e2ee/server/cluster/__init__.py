"""Cluster mode: several ``e2ee serve`` nodes acting as one service through a shared Redis.

* :class:`RedisStore` (:mod:`.redis_store`): the durable state (credentials, API secrets,
  sessions, revoked tokens), the :class:`~e2ee.server.store.Store` of every node;
* :mod:`.archive_catalog` (the archive records) and :mod:`.archives` (archives started
  on the session's owner, stopped, deleted and downloaded through their holder);
* :class:`NodeRegistry`, :class:`NodeInfo` (:mod:`.registry`): heartbeats with load; a
  node is live while its key lives;
* :class:`Placement` (:mod:`.placement`): one owner node per session, claimed atomically
  (the scripts are in :mod:`.ownership`);
* :class:`Bus` (:mod:`.bus`): requests with replies and broadcasts between nodes;
* :class:`ClusterUnavailable` (:mod:`.errors`): Redis or a peer cannot be reached.

Only this package imports ``redis`` (the optional ``cluster`` extra), and only when a name
needing it is used (PEP 562): :mod:`.errors` and ``ClusterUnavailable`` load without it,
and nothing outside cluster mode imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from e2ee.server.cluster.errors import ClusterUnavailable, RedisHealth

if TYPE_CHECKING:
    from e2ee.server.cluster.bus import Bus
    from e2ee.server.cluster.placement import Placement
    from e2ee.server.cluster.redis_client import connect
    from e2ee.server.cluster.redis_store import RedisStore
    from e2ee.server.cluster.registry import NodeInfo, NodeRegistry

__all__ = [
    "Bus",
    "ClusterUnavailable",
    "NodeInfo",
    "NodeRegistry",
    "Placement",
    "RedisHealth",
    "RedisStore",
    "connect",
]

_LAZY = {
    "Bus": "bus",
    "Placement": "placement",
    "connect": "redis_client",
    "RedisStore": "redis_store",
    "NodeInfo": "registry",
    "NodeRegistry": "registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
