"""Telling a dead node from a late one, faster than its key's expiry.

A node killed outright (``kill -9``, a crash) stops heartbeating, but its ``node:`` key
lives on for up to ``dead_after`` seconds (3 s by default), and until then placement keeps
its sessions on it: every client that lost it is redirected back to it, is refused, and
tries again.  That wait was most of the time from a kill to media flowing again
(``e2ee bench cluster``).

So a node about to redirect a client to an owner whose last heartbeat is late (older
than :data:`STALE_BEATS` heartbeats) asks the owner itself: ``GET /healthz`` at its public
URL, the address clients use.  Only a refused or unreachable connection counts as dead: a
process that is gone leaves no listening socket, while one that is alive but stalled (a
long pause, an overloaded machine) still has the kernel complete the TCP handshake, so a
timeout proves nothing and the key is left to expire on its own.  A dead owner's key is
deleted by a script that checks, inside Redis, that no heartbeat came meanwhile, and the
session is placed again at once.
"""

from __future__ import annotations

import logging
import time

import aiohttp
from redis.asyncio import Redis

from e2ee.server.cluster.redis_client import guarded
from e2ee.server.cluster.registry import NodeInfo, NodeRegistry

__all__ = ["PROBE_TIMEOUT", "STALE_BEATS", "Liveness"]

log = logging.getLogger(__name__)

#: A heartbeat older than this many heartbeat intervals is late: worth a probe.
STALE_BEATS = 1.25
#: Seconds a probe waits for the connection and the answer.
PROBE_TIMEOUT = 0.5

# Delete a node's key only if its heartbeat is still the one we judged (updated_at not
# newer): a node that beat again after our probe stays.
_BURY = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, info = pcall(cjson.decode, raw)
if not ok or type(info) ~= 'table' then return 0 end
local at = tonumber(info['updated_at'])
if at == nil or at > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""


class Liveness:
    """Probes late owners (see the module docs); :meth:`start`/:meth:`stop` own the HTTP
    client.  ``dead`` counts the nodes it found dead."""

    def __init__(
        self, redis: Redis, registry: NodeRegistry, *, timeout: float = PROBE_TIMEOUT
    ) -> None:
        self.redis = redis
        self.registry = registry
        self.timeout = timeout
        self.dead = 0
        self._bury = redis.register_script(_BURY)
        self._http: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def late(self, node: NodeInfo, now: float | None = None) -> bool:
        """Whether ``node`` missed a heartbeat."""
        now = time.time() if now is None else now
        return now - node.updated_at > STALE_BEATS * self.registry.heartbeat

    async def answers(self, node: NodeInfo) -> bool | None:
        """``True``: its ``/healthz`` answered; ``False``: nothing listens at its public
        URL (refused, unreachable); ``None``: no answer in time, which proves nothing."""
        if self._http is None:
            return None
        url = node.public_url.rstrip("/") + "/healthz"
        try:
            async with self._http.get(url, allow_redirects=False) as response:
                return response.status < 500
        except aiohttp.ClientConnectorError:
            return False
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def confirm_dead(self, node: NodeInfo) -> bool:
        """``True`` if ``node`` was late, did not answer and its key is now gone, so
        placement may move its sessions; ``False`` otherwise (leave it to its expiry)."""
        if node.node_id == self.registry.node_id or not self.late(node):
            return False
        if await self.answers(node) is not False:
            return False
        buried = await guarded(
            self.redis,
            "declaring a node dead",
            self._bury(keys=[self.registry.key(node.node_id)], args=[repr(node.updated_at)]),
        )
        if int(buried or 0) != 1:
            return False
        self.dead += 1
        log.warning(
            "cluster: node %s (%s) missed its heartbeat and refuses connections: "
            "declared dead, its sessions are placed again",
            node.node_id,
            node.public_url,
        )
        return True
