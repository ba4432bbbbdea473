"""Where a session lives: one node at a time, chosen at its first join, atomically.

:meth:`Placement.place` answers "which node carries this session?": the live owner if there
is one, else the least-loaded live node (fewest connections, then fewest streams, ties by
node id), made the owner by the claim script of :mod:`~e2ee.server.cluster.ownership`.
The script re-checks in Redis, alone, that no live node owns the session already, so any
number of nodes placing the same session at once agree on one owner.

Load figures come from the heartbeats and so lag by up to one heartbeat: a burst of new
sessions would all land on the node that looked emptiest.  Each :class:`Placement`
therefore counts the sessions it has just placed on a node as one more connection each
until that node's next heartbeat reports its real load.

A claim made for another node lasts ``claim_ttl`` seconds (default 10) so that the client
sent there finds it still placed; the owner's heartbeat then keeps it (with ``dead_after``)
while the owner hosts the session.  An owner that dies loses its sessions at once to the
next claim: the claim checks the owner's ``node:`` key, not the owner key's age.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from e2ee.server.cluster.errors import ClusterUnavailable
from e2ee.server.cluster.ownership import claim_script, release_script
from e2ee.server.cluster.redis_client import guarded, text
from e2ee.server.cluster.redis_store import DEFAULT_PREFIX
from e2ee.server.cluster.registry import NodeInfo, NodeRegistry

__all__ = ["CLAIM_TTL", "Placement", "least_loaded"]

#: Seconds a claim made for a node lasts before that node hosts (and refreshes) it.
CLAIM_TTL = 10.0

# A node that dies between our reading the live list and the claim makes the claim fail;
# we read again.  Three rounds: nodes do not die that fast unless the cluster is failing.
_ATTEMPTS = 3


def least_loaded(nodes: list[NodeInfo], pending: dict[str, int] | None = None) -> NodeInfo:
    """The node to place a new session on: fewest connections (plus ``pending`` recent
    placements not yet in its load), then fewest streams, then the smallest node id."""
    extra = pending or {}
    return min(nodes, key=lambda n: (n.connections + extra.get(n.node_id, 0), n.streams, n.node_id))


class Placement:
    """Placement of sessions on the nodes of :attr:`registry`.

    Methods raise :class:`~e2ee.server.cluster.errors.ClusterUnavailable` when Redis is
    down (and :meth:`place` also when no node is live).  A session placed on this node is
    added to ``registry.hosted`` so that the heartbeat keeps it; :meth:`release` takes it
    out.
    """

    def __init__(
        self,
        redis: Redis,
        registry: NodeRegistry,
        *,
        prefix: str = DEFAULT_PREFIX,
        claim_ttl: float = CLAIM_TTL,
    ) -> None:
        self.redis = redis
        self.registry = registry
        self.prefix = prefix
        self.claim_ttl = max(claim_ttl, registry.dead_after)
        self._claim = claim_script(redis)
        self._release = release_script(redis)
        # node id -> times (Unix) of the placements this object made there.
        self._recent: dict[str, list[float]] = {}

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}owner:{session_id}"

    async def owner(self, session_id: str) -> NodeInfo | None:
        """The live node owning ``session_id``, or ``None`` (unplaced, or owner dead)."""
        raw = await guarded(self.redis, "read owner", self.redis.get(self._key(session_id)))
        node_id = text(raw)
        if node_id is None:
            return None
        return await self.registry.node(node_id)

    async def place(self, session_id: str) -> NodeInfo:
        """The node that carries ``session_id``: its live owner, or the least-loaded live
        node, which becomes the owner (atomically: every concurrent caller gets the same
        node)."""
        for _ in range(_ATTEMPTS):
            current = await self.owner(session_id)
            if current is not None:
                return self._placed(session_id, current)
            nodes = await self.registry.live_nodes()
            if not nodes:
                raise ClusterUnavailable("the cluster is unavailable: no live node")
            chosen = least_loaded(nodes, self._pending(nodes))
            args: list[str | int] = [
                self.prefix,
                chosen.node_id,
                max(int(self.claim_ttl * 1000), 1),
            ]
            got = await guarded(
                self.redis, "place session", self._claim([self._key(session_id)], args)
            )
            winner = text(got) if got else None
            if winner is None:
                continue  # the chosen node died meanwhile: read the live nodes again
            if winner == chosen.node_id:
                self._recent.setdefault(winner, []).append(time.time())
                return self._placed(session_id, chosen)
            # Another caller placed it first, on a node we may not have listed.
            info = next((n for n in nodes if n.node_id == winner), None)
            if info is None:
                info = await self.registry.node(winner)
            if info is not None:
                return self._placed(session_id, info)
        raise ClusterUnavailable("the cluster is unavailable: nodes keep failing during placement")

    def _placed(self, session_id: str, node: NodeInfo) -> NodeInfo:
        if node.node_id == self.registry.node_id:
            self.registry.hosted.add(session_id)
        return node

    def _pending(self, nodes: list[NodeInfo]) -> dict[str, int]:
        """Per node, the placements made since its last heartbeat (not in its load yet)."""
        out: dict[str, int] = {}
        for node in nodes:
            times = self._recent.get(node.node_id)
            if not times:
                continue
            times[:] = [t for t in times if t > node.updated_at]
            if times:
                out[node.node_id] = len(times)
            else:
                del self._recent[node.node_id]
        live = {n.node_id for n in nodes}
        for gone in [n for n in self._recent if n not in live]:
            del self._recent[gone]
        return out

    async def release(self, session_id: str) -> bool:
        """This node no longer hosts ``session_id`` (its last participant left): the owner
        key goes if it is still ours (``True``), so the next join places it afresh."""
        self.registry.hosted.discard(session_id)
        deleted = await guarded(
            self.redis,
            "release session",
            self._release([self._key(session_id)], [self.registry.node_id]),
        )
        return bool(deleted)

    def __repr__(self) -> str:
        return f"Placement(node={self.registry.node_id!r})"
