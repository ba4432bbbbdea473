"""Which nodes are alive, how loaded they are, and the heartbeat that says so.

Each node writes ``node:<id>`` (its :class:`NodeInfo` as JSON) every ``heartbeat`` seconds
with a time to live of ``dead_after``: a node is live exactly while its key exists, so a
node that stops (crash, ``kill -9``, a partition from Redis, an event loop stalled for
longer than ``dead_after``) is dead ``dead_after`` seconds after its last heartbeat, with
no one having to notice.  The sorted set ``nodes`` indexes the ids (scored by the last
heartbeat's time) so that listing the nodes never scans the keyspace.

The same heartbeat refreshes the owner keys (``owner:<session>``) of the sessions this
node hosts (:attr:`NodeRegistry.hosted`) with the "set if absent or mine" script of
:mod:`~e2ee.server.cluster.ownership`: after a Redis restart that lost the keys, the owner
re-asserts them; if another node has taken a session meanwhile, the session is dropped
from :attr:`~NodeRegistry.hosted` and ``on_lost(session_id, other_node)`` is called, so the
server can send its clients to the new owner.  Node key, index and owner keys go in one
``MULTI`` (one round trip, seen together).

A Redis error in the heartbeat is logged once per outage (WARNING, then INFO on recovery)
and never raised: the node keeps serving the calls it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from e2ee.server.cluster.errors import health_of
from e2ee.server.cluster.ownership import refresh_script
from e2ee.server.cluster.redis_client import OUTAGE_ERRORS, guarded, text
from e2ee.server.cluster.redis_store import DEFAULT_PREFIX

__all__ = ["DEAD_AFTER", "HEARTBEAT", "NodeInfo", "NodeRegistry", "check_node_id"]

log = logging.getLogger("e2ee.server.cluster")

#: Seconds between heartbeats, and without one after which a node is dead.
HEARTBEAT = 1.0
DEAD_AFTER = 3.0

#: Index entries older than this (seconds) are dropped: nodes gone for good.
_INDEX_KEEP = 3600.0

_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_node_id(node_id: str) -> str:
    """``node_id`` if it is 1-64 letters, digits, ``.``, ``_``, ``-`` (it is part of Redis
    keys and channel names), else ``ValueError``."""
    if not _NODE_ID.fullmatch(node_id):
        raise ValueError(f"invalid node id {node_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return node_id


@dataclass(frozen=True)
class NodeInfo:
    """A live node as its last heartbeat described it.  ``load`` holds numbers such as
    ``connections``, ``streams``, ``forwarded``, ``cpu``; ``updated_at`` is Unix time."""

    node_id: str
    public_url: str
    load: Mapping[str, float] = field(default_factory=dict)
    updated_at: float = 0.0

    @property
    def connections(self) -> float:
        return float(self.load.get("connections", 0))

    @property
    def streams(self) -> float:
        return float(self.load.get("streams", 0))

    def to_json(self, instance: str = "") -> str:
        fields: dict[str, Any] = {
            "node_id": self.node_id,
            "public_url": self.public_url,
            "load": dict(self.load),
            "updated_at": self.updated_at,
        }
        if instance:
            fields["instance"] = instance
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> NodeInfo:
        fields = json.loads(raw)
        load = {str(k): float(v) for k, v in dict(fields.get("load") or {}).items()}
        return cls(
            node_id=str(fields["node_id"]),
            public_url=str(fields["public_url"]),
            load=load,
            updated_at=float(fields.get("updated_at", 0.0)),
        )


OnLost = Callable[[str, str], object]


class NodeRegistry:
    """This node's heartbeat, and the list of live nodes.

    ``load()`` is called at each heartbeat for the numbers to publish (it must be quick
    and must not block).  ``start()`` begins the heartbeat (the first one at once;
    ``await beat()`` to be registered before serving); ``await stop()`` ends it and
    deletes this node's key, so the others see it gone at once rather than after
    ``dead_after``.  ``on_lost`` (also settable as an attribute) may be a plain function or
    a coroutine function.
    """

    def __init__(
        self,
        redis: Redis,
        node_id: str,
        public_url: str,
        *,
        load: Callable[[], Mapping[str, float]],
        heartbeat: float = HEARTBEAT,
        dead_after: float = DEAD_AFTER,
        prefix: str = DEFAULT_PREFIX,
        on_lost: OnLost | None = None,
    ) -> None:
        if not 0 < heartbeat < dead_after:
            raise ValueError("need 0 < heartbeat < dead_after")
        self.redis = redis
        self.node_id = check_node_id(node_id)
        self.public_url = public_url
        self.load = load
        self.heartbeat = heartbeat
        self.dead_after = dead_after
        self.prefix = prefix
        self.on_lost = on_lost
        #: Session ids whose owner key this node keeps alive (see Placement.place).
        self.hosted: set[str] = set()
        #: Heartbeats Redis accepted (tests wait on it).
        self.beats = 0
        self._instance = secrets.token_hex(8)
        self._refresh = refresh_script(redis)
        self._task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Task[Any]] = set()
        self._load_failed = False
        self._warned_twin = False

    @property
    def ttl_ms(self) -> int:
        return max(int(self.dead_after * 1000), 1)

    def key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}nodes"

    def owner_key(self, session_id: str) -> str:
        return f"{self.prefix}owner:{session_id}"

    # -- heartbeat -----------------------------------------------------------------------

    def start(self) -> None:
        """Starts the heartbeat task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"e2ee-cluster-heartbeat-{self.node_id}"
            )

    async def _run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.heartbeat)

    def _read_load(self) -> dict[str, float]:
        try:
            return {k: float(v) for k, v in self.load().items()}
        except Exception:
            if not self._load_failed:  # a bug in the caller: say it once, keep beating
                self._load_failed = True
                log.exception("cluster: the load callback failed; publishing no load")
            return {}

    async def beat(self) -> bool:
        """One heartbeat now: this node's key, the index, the owner keys of
        :attr:`hosted`.  ``False`` if Redis did not take it (logged once per outage)."""
        now = time.time()
        info = NodeInfo(self.node_id, self.public_url, self._read_load(), now)
        hosted = sorted(self.hosted)
        health = health_of(self.redis)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(
                    self.key(self.node_id), info.to_json(self._instance), px=self.ttl_ms, get=True
                )
                pipe.zadd(f"{self.prefix}nodes", {self.node_id: now})
                pipe.zremrangebyscore(f"{self.prefix}nodes", "-inf", now - _INDEX_KEEP)
                if hosted:
                    keys = [self.owner_key(s) for s in hosted]
                    await self._refresh(keys, [self.node_id, self.ttl_ms], client=pipe)
                results = await pipe.execute()
        except OUTAGE_ERRORS as exc:
            health.failed(exc, "heartbeat")
            return False
        health.ok()
        self.beats += 1
        self._check_twin(text(results[0]))
        if hosted:
            for session_id, other in zip(hosted, results[3], strict=True):
                holder = text(other)
                if holder and holder != self.node_id:
                    self._lost(session_id, holder)
        return True

    def _check_twin(self, previous: str | None) -> None:
        """Two processes started with one node id would overwrite each other's key and
        both claim its sessions: say so (once)."""
        if previous is None or self._warned_twin:
            return
        with contextlib.suppress(ValueError, TypeError):
            other = json.loads(previous).get("instance")
            if other and other != self._instance:
                self._warned_twin = True
                log.warning(
                    "cluster: another process heartbeats as node %r: node ids must be unique",
                    self.node_id,
                )

    def _lost(self, session_id: str, other: str) -> None:
        self.hosted.discard(session_id)
        log.warning(
            "cluster: session %s is owned by node %r now; this node lost it", session_id, other
        )
        callback = self.on_lost
        if callback is None:
            return
        try:
            result = callback(session_id, other)
        except Exception:
            log.exception("cluster: on_lost callback failed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._callbacks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Task[Any]) -> None:
        self._callbacks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cluster: on_lost callback failed", exc_info=task.exception())

    async def stop(self) -> None:
        """Ends the heartbeat and deletes this node's key (best effort if Redis is down)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pending in list(self._callbacks):
            pending.cancel()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.key(self.node_id))
                pipe.zrem(self._index, self.node_id)
                await pipe.execute()
        except OUTAGE_ERRORS as exc:
            health_of(self.redis).failed(exc, "node stop")

    # -- reading -------------------------------------------------------------------------

    async def live_nodes(self) -> list[NodeInfo]:
        """Every live node (this one included once it has beaten), by node id.  Raises
        :class:`~e2ee.server.cluster.errors.ClusterUnavailable` if Redis is down."""
        ids = await guarded(
            self.redis, "list nodes", self.redis.zrange(f"{self.prefix}nodes", 0, -1)
        )
        if not ids:
            return []
        names = sorted({str(text(i)) for i in ids})
        raws = await guarded(
            self.redis, "list nodes", self.redis.mget([self.key(n) for n in names])
        )
        return [NodeInfo.from_json(str(text(raw))) for raw in raws if raw is not None]

    async def node(self, node_id: str) -> NodeInfo | None:
        """The node ``node_id`` if it is live, else ``None``."""
        raw = await guarded(self.redis, "read node", self.redis.get(self.key(node_id)))
        found = text(raw)
        return None if found is None else NodeInfo.from_json(found)

    def __repr__(self) -> str:
        return f"NodeRegistry({self.node_id!r}, hosted={len(self.hosted)})"
