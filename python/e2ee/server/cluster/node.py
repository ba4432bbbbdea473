"""This process as one node of a cluster: the shared store, the node registry, placement
and the message bus (the other modules of this package) composed, with a start/stop
lifecycle, and the hooks the signaling and REST layers call
(:class:`e2ee.server.hub.ClusterHooks`).  docs/cluster.md says what is shared and what
happens on each failure.

* Placement at a WebSocket join (:meth:`ClusterNode.place`): the session is claimed
  atomically for the least-loaded live node; if that is this node it joins ``hosted``
  (the heartbeat keeps its owner key alive), otherwise the client is redirected.
* An owner that missed its heartbeat and refuses connections is declared dead on the
  spot (:mod:`~e2ee.server.cluster.liveness`), not after its key's expiry, and the
  session placed again.
* When the last connection of a session leaves this node, the claim is released
  (:meth:`ClusterNode.room_ended`), so the next join places it afresh.
* REST on a node that does not own the session forwards what needs the live room to the
  owner over the bus (:meth:`ClusterNode.forward`), request/reply.
* A conflict seen by the heartbeat (Redis came back without our claim and another node
  took the session) moves the clients: each gets ``redirect`` and close 4302, and
  reconnects through its entry URL to the new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import urllib.parse
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from e2ee.server.archiving import ArchiveService
from e2ee.server.cluster.archive_catalog import RedisArchiveCatalog
from e2ee.server.cluster.archives import ClusterArchives
from e2ee.server.cluster.bus import Bus
from e2ee.server.cluster.errors import ClusterUnavailable
from e2ee.server.cluster.liveness import Liveness
from e2ee.server.cluster.placement import Placement
from e2ee.server.cluster.redis_client import OUTAGE_ERRORS
from e2ee.server.cluster.redis_store import RedisStore
from e2ee.server.cluster.registry import NodeRegistry
from e2ee.server.errors import CLOSE_REDIRECT, ApiError
from e2ee.server.hub import Hub
from e2ee.server.rest import session_json

__all__ = ["ClusterConfig", "ClusterNode", "redacted"]

log = logging.getLogger(__name__)

#: Bus message kinds: a REST action for the owner of a session, and a deletion every
#: node hears (each forgets its cached record).
REST_KIND = "rest"
DELETED_KIND = "session_deleted"
#: Seconds a forwarded REST action may take on the owner before the caller gets 503.
FORWARD_TIMEOUT = 5.0
#: Seconds the start waits for the bus subscription (requests to this node need it).
BUS_READY_TIMEOUT = 5.0


@dataclass(frozen=True)
class ClusterConfig:
    """What ``e2ee serve --cluster URL --node-id NAME --public-url URL`` asks for.
    ``heartbeat``/``dead_after``: seconds between a node's heartbeats, and without one
    until it counts as dead (its sessions are then placed again)."""

    url: str
    node_id: str
    public_url: str
    heartbeat: float = 1.0
    dead_after: float = 3.0
    prefix: str = "e2ee:"


def redacted(url: str) -> str:
    """A Redis URL fit to print: without its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class ClusterNode:
    """One node: store, registry, placement and bus over one Redis connection pool."""

    def __init__(self, config: ClusterConfig, store: RedisStore) -> None:
        self.config = config
        self.node_id = config.node_id
        self.store = store
        self.registry = NodeRegistry(
            store.redis,
            config.node_id,
            config.public_url,
            load=self.load,
            heartbeat=config.heartbeat,
            dead_after=config.dead_after,
            prefix=config.prefix,
            on_lost=self._on_lost,
        )
        self.placement = Placement(store.redis, self.registry, prefix=config.prefix)
        self.bus = Bus(store.redis, config.node_id, prefix=config.prefix)
        self.liveness = Liveness(store.redis, self.registry)
        self._hub: Hub | None = None
        self._cpu_mark = (time.process_time(), time.monotonic())
        self._cpu_share = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    async def connect(cls, config: ClusterConfig) -> ClusterNode:
        """Connects to the cluster's Redis (:class:`ClusterUnavailable` if it does not
        answer)."""
        store = await RedisStore.connect(config.url, prefix=config.prefix)
        return cls(config, store)

    def describe(self) -> str:
        """Where the project is kept, for the banner (no password)."""
        return f"Redis at {redacted(self.config.url)}"

    def banner_line(self) -> str:
        return f"  Cluster:     node {self.node_id}, clients redirected to {self.config.public_url}"

    # -- lifecycle --------------------------------------------------------------------

    def attach(self, hub: Hub) -> None:
        self._hub = hub
        self.bus.handle(REST_KIND, self._rest)
        self.bus.handle(DELETED_KIND, self._on_deleted)

    async def start(self) -> None:
        """Joins the cluster: registered (one heartbeat) before the first join is
        served, then the heartbeat and the bus run."""
        await self.registry.beat()
        self.registry.start()
        self.liveness.start()
        self.bus.start()
        with contextlib.suppress(ClusterUnavailable):  # it keeps trying in the background
            await self.bus.ready(BUS_READY_TIMEOUT)

    async def stop(self) -> None:
        """Leaves the cluster: the node key goes (its sessions are placed elsewhere at
        once, not after ``dead_after``), and the bus stops."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
        with contextlib.suppress(Exception):
            await self.registry.stop()
        with contextlib.suppress(Exception):
            await self.bus.stop()
        await self.liveness.stop()

    def _spawn(self, aw: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(aw)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- archives (e2ee.server.cluster.archives) -------------------------------------

    def archive_catalog(self) -> RedisArchiveCatalog:
        """The shared archive records; this node's retention sweep sees only the
        archives it holds."""
        redis, prefix = self.store.redis, self.config.prefix
        return RedisArchiveCatalog(redis, prefix=prefix, node_id=self.node_id)

    def archives(self, service: ArchiveService) -> ClusterArchives:
        """Archives across nodes (after :meth:`attach`): start on the session's owner;
        stop, delete and download on the node holding the files."""
        if self._hub is None:
            raise RuntimeError("attach the hub first")
        return ClusterArchives(self.bus, self.placement, self.registry, self._hub, service)

    # -- load -------------------------------------------------------------------------

    def load(self) -> dict[str, float]:
        """What placement weighs: connections, published streams, forwarded streams
        (subscriptions) and this process's share of the machine's CPU since the last
        heartbeat."""
        rooms = list(self._hub.rooms.values()) if self._hub is not None else []
        cpu, wall = time.process_time(), time.monotonic()
        used, elapsed = cpu - self._cpu_mark[0], wall - self._cpu_mark[1]
        if elapsed > 0.1:
            self._cpu_share = round(used / (elapsed * (os.cpu_count() or 1)), 3)
            self._cpu_mark = (cpu, wall)
        return {
            "connections": sum(len(r.connections) for r in rooms),
            "streams": sum(len(r.streams) for r in rooms),
            "forwarded": sum(len(r.subscriptions) for r in rooms),
            "cpu": self._cpu_share,
        }

    # -- the hooks (e2ee.server.hub.ClusterHooks) --------------------------------------

    async def place(self, session_id: str) -> tuple[str, str] | None:
        owner = await self.placement.place(session_id)
        if owner.node_id != self.node_id and await self.liveness.confirm_dead(owner):
            owner = await self.placement.place(session_id)  # a killed owner: place again
        if owner.node_id == self.node_id:
            self.registry.hosted.add(session_id)
            return None
        return owner.node_id, owner.public_url

    def room_ended(self, session_id: str) -> None:
        hub = self._hub
        if hub is not None and session_id in hub.rooms:
            return  # a new room started meanwhile
        self.registry.hosted.discard(session_id)
        self._spawn(self._release(session_id))

    async def _release(self, session_id: str) -> None:
        try:
            if session_id not in self.registry.hosted:
                await self.placement.release(session_id)
        except Exception as exc:  # the claim expires on its own (dead_after)
            log.info("releasing session %s failed: %r", session_id, exc)

    async def forward(self, session_id: str, action: str, body: dict[str, Any]) -> Any:
        owner = await self.placement.owner(session_id)
        if owner is None or owner.node_id == self.node_id:
            return None
        # The owner's ApiError (404 unknown_connection...) comes back as the same error.
        return await self.bus.request(
            owner.node_id,
            REST_KIND,
            {"session_id": session_id, "action": action, **body},
            timeout=FORWARD_TIMEOUT,
        )

    async def deleted(self, session_id: str) -> None:
        owner = await self.placement.owner(session_id)
        if owner is not None and owner.node_id != self.node_id:
            # Request/reply: the DELETE answers once everyone in it is disconnected.
            await self.bus.request(
                owner.node_id, DELETED_KIND, {"session_id": session_id}, timeout=FORWARD_TIMEOUT
            )
        await self.bus.broadcast(DELETED_KIND, {"session_id": session_id}, include_self=False)

    def unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, (ClusterUnavailable, *OUTAGE_ERRORS))

    # -- the owner's side of the bus ---------------------------------------------------

    async def _rest(self, body: dict[str, Any]) -> dict[str, Any]:
        hub = self._hub
        session_id, action = str(body.get("session_id", "")), body.get("action")
        room = hub.rooms.get(session_id) if hub is not None else None
        if action == "describe":
            record = await hub.require_session(session_id) if hub is not None else None
            if record is None:
                raise ApiError("session_not_found", "no such session", 404)
            return {"session": session_json(record, room)}
        if action == "force_disconnect":
            if room is None:
                raise ApiError("unknown_connection", "no such connection in this session", 404)
            await room.force_disconnect(str(body.get("connection_id", "")))
        elif action == "force_unpublish":
            if room is None:
                raise ApiError("unknown_stream", "no such stream in this session", 404)
            await room.remove_stream(str(body.get("stream_id", "")), "force_unpublished")
        elif action == "disconnect_token":
            if room is not None:
                await room.disconnect_token(str(body.get("jti", "")))
        else:
            raise ApiError("bad_request", f"unknown cluster action {str(action)[:40]!r}")
        return {"ok": True}

    async def _on_deleted(self, body: dict[str, Any]) -> dict[str, Any]:
        hub = self._hub
        session_id = str(body.get("session_id", ""))
        if hub is not None and session_id:
            hub.forget(session_id, deleted=True)
            room = hub.rooms.get(session_id)
            if room is not None:
                await room.close_all("session_deleted")
        return {"ok": True}

    async def _on_lost(self, session_id: str, other_node: str) -> None:
        """The heartbeat found another node owning a session hosted here (Redis lost our
        claim, then another node took it; the registry has already dropped it from
        ``hosted``): each client gets ``redirect`` to the new owner and close 4302."""
        try:
            info = await self.registry.node(other_node)
        except Exception:
            info = None
        room = self._hub.rooms.get(session_id) if self._hub is not None else None
        if room is None or session_id in self.registry.hosted:
            return
        url = info.public_url if info is not None else ""
        for conn in list(room.connections.values()):
            conn.send({"type": "redirect", "url": url, "node_id": other_node})
            conn.close(CLOSE_REDIRECT, "session moved")
