"""Messages between nodes over Redis pub/sub: requests with replies, and broadcasts.

A REST call on node A that acts on a session hosted by node B (force-disconnect,
force-unpublish, the participant count) becomes ``bus.request("B", kind, body)``: it is
published on B's request channel ``bus:<B>`` with a request id and A's id; B runs the
handler registered for ``kind`` and publishes the result on A's reply channel
``reply:<A>``, where A matches it to the waiting request by id.  ``broadcast`` publishes on
``bus:all`` to every node (this one too, unless ``include_self=False``).

Pub/sub delivers only to who listens now and keeps nothing (at most once): that suits
commands about live state, which only matters to a node that is up.  Durable state is in
the store, not on the bus.  So the failure modes are simple and all surface as
:class:`~e2ee.server.cluster.errors.ClusterUnavailable`: no one listening on B's channel
(``PUBLISH`` reports zero receivers: B is dead or cut off, fail at once), no reply within
``timeout`` (B stalled, or the reply was lost in a Redis restart), Redis down.

Messages are JSON: ``{"t": "req", "id", "from", "kind", "body"}``, ``{"t": "rep", "id",
"ok", "body" | "code", "message", "status"}``, ``{"t": "cast", "from", "kind", "body",
"self"}``.  An :class:`~e2ee.server.errors.ApiError` raised by B's handler is raised again
on A with the same code, message and status.

The subscriber reconnects by itself after a Redis outage (logged once, see
:class:`~e2ee.server.cluster.errors.RedisHealth`), with a backoff capped at one second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from e2ee.server.cluster.errors import ClusterUnavailable, health_of
from e2ee.server.cluster.redis_client import OUTAGE_ERRORS, guarded
from e2ee.server.cluster.redis_store import DEFAULT_PREFIX
from e2ee.server.cluster.registry import check_node_id
from e2ee.server.errors import ApiError

__all__ = ["REQUEST_TIMEOUT", "Bus", "Handler"]

log = logging.getLogger("e2ee.server.cluster")

#: Seconds a request waits for its reply unless told otherwise.
REQUEST_TIMEOUT = 2.0

#: What a handler is: the request body in, the reply body out (``None``: ``{}``).
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]

_POLL = 1.0  # seconds a read waits for a message before looping (to notice stop())
_BACKOFF_MAX = 1.0


class Bus:
    """This node's end of the bus.  ``start()`` subscribes (in a task; ``await ready()``
    waits for it), ``handle()`` registers handlers (before or after start),
    ``await stop()`` unsubscribes and fails the requests still waiting."""

    def __init__(self, redis: Redis, node_id: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.node_id = check_node_id(node_id)
        self.prefix = prefix
        self._handlers: dict[str, Handler] = {}
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._channels = (self.request_channel(node_id), self._reply_channel(node_id), self._all)

    def request_channel(self, node_id: str) -> str:
        return f"{self.prefix}bus:{node_id}"

    def _reply_channel(self, node_id: str) -> str:
        return f"{self.prefix}reply:{node_id}"

    @property
    def _all(self) -> str:
        return f"{self.prefix}bus:all"

    def handle(self, kind: str, fn: Handler) -> None:
        """Runs ``fn(body)`` for each request or broadcast of ``kind`` (one task each)."""
        self._handlers[kind] = fn

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Starts the subscriber task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"e2ee-cluster-bus-{self.node_id}"
            )

    async def ready(self, timeout: float | None = None) -> None:
        """Waits until this node is subscribed (and so can be reached and get replies);
        :class:`ClusterUnavailable` after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise ClusterUnavailable(
                "the cluster is unavailable: not subscribed to the Redis bus"
            ) from None

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ready.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ClusterUnavailable("the cluster bus stopped"))
        self._pending.clear()
        for pending in list(self._tasks):
            pending.cancel()

    async def _run(self) -> None:
        backoff, failing = 0.05, False
        while True:
            pubsub: PubSub | None = None
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(*self._channels)
                confirmed = 0
                while True:
                    msg = await pubsub.get_message(timeout=_POLL)
                    if msg is None:
                        continue
                    if msg.get("type") == "subscribe":
                        confirmed += 1
                        if confirmed >= len(self._channels):
                            self._ready.set()
                            failing = False
                            health_of(self.redis).ok()
                            backoff = 0.05
                    elif msg.get("type") == "message":
                        self._dispatch(msg.get("data"))
            except OUTAGE_ERRORS as exc:
                self._ready.clear()
                health_of(self.redis).failed(exc, "bus subscription")
            except Exception:  # a bug: say it (once until it works), keep resubscribing
                self._ready.clear()
                if not failing:
                    log.exception("cluster: the bus subscriber failed; resubscribing")
                failing = True
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    # -- receiving -----------------------------------------------------------------------

    def _dispatch(self, data: object) -> None:
        try:
            msg = json.loads(data if isinstance(data, str | bytes) else "")
            kind, sender = msg.get("kind"), msg.get("from")
            tag = msg["t"]
        except (ValueError, TypeError, KeyError, AttributeError):
            log.debug("cluster: ignoring a malformed bus message")
            return
        if tag == "rep":
            fut = self._pending.pop(str(msg.get("id")), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif tag == "req":
            self._spawn(self._serve(str(kind), msg.get("body"), str(sender), str(msg.get("id"))))
        elif tag == "cast":
            if sender == self.node_id and not msg.get("self", True):
                return
            self._spawn(self._cast(str(kind), msg.get("body")))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, kind: str, body: object, sender: str, rid: str) -> None:
        reply: dict[str, Any] = {"t": "rep", "id": rid}
        try:
            result = await self._call(kind, body)
            reply.update(ok=True, body=result)
        except ApiError as exc:
            reply.update(ok=False, code=exc.code, message=exc.message, status=exc.status)
        except Exception:
            log.exception("cluster: handler for bus request %r failed", kind)
            reply.update(
                ok=False,
                code="internal_error",
                message=f"node {self.node_id} failed to handle {kind!r}",
                status=500,
            )
        channel = self._reply_channel(sender)
        # If Redis is down, guarded logged it (once) and the requester times out.
        with contextlib.suppress(ClusterUnavailable):
            await guarded(self.redis, "bus reply", self.redis.publish(channel, _dump(reply)))

    async def _cast(self, kind: str, body: object) -> None:
        try:
            await self._call(kind, body)
        except ApiError as exc:
            log.info("cluster: broadcast %r refused: %s", kind, exc.message)
        except Exception:
            log.exception("cluster: handler for broadcast %r failed", kind)

    async def _call(self, kind: str, body: object) -> dict[str, Any]:
        fn = self._handlers.get(kind)
        if fn is None:
            raise ClusterUnavailable(f"node {self.node_id} has no handler for {kind!r}")
        result = await fn(body if isinstance(body, dict) else {})
        return {} if result is None else result

    # -- sending -------------------------------------------------------------------------

    async def request(
        self, node_id: str, kind: str, body: dict[str, Any], timeout: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """Runs ``kind`` on node ``node_id`` and returns its reply body.  This node's own
        requests run the handler directly.  Raises :class:`ClusterUnavailable` (node not
        listening, no reply within ``timeout``, Redis down) or the handler's
        :class:`~e2ee.server.errors.ApiError`."""
        if node_id == self.node_id:
            return await self._call(kind, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.ready(timeout)  # replies come to our subscription: it must be there
        rid = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[rid] = fut
        try:
            msg = {"t": "req", "id": rid, "from": self.node_id, "kind": kind, "body": body}
            receivers = await guarded(
                self.redis,
                "bus request",
                self.redis.publish(self.request_channel(node_id), _dump(msg)),
            )
            if not receivers:
                raise ClusterUnavailable(
                    f"the cluster is unavailable: node {node_id} is not reachable"
                )
            try:
                reply = await asyncio.wait_for(fut, max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise ClusterUnavailable(
                    f"the cluster is unavailable: node {node_id} did not answer {kind!r} "
                    f"within {timeout:g} s"
                ) from None
        finally:
            self._pending.pop(rid, None)
        if reply.get("ok"):
            out = reply.get("body")
            return out if isinstance(out, dict) else {}
        code, message = str(reply.get("code")), str(reply.get("message"))
        if code == "cluster_unavailable":
            raise ClusterUnavailable(message)
        status = reply.get("status")
        raise ApiError(code, message, status if isinstance(status, int) else 500)

    async def broadcast(self, kind: str, body: dict[str, Any], *, include_self: bool = True) -> int:
        """Sends ``kind`` to every node (fire and forget); the number of nodes reached.
        Raises :class:`ClusterUnavailable` if Redis is down."""
        msg = {"t": "cast", "from": self.node_id, "kind": kind, "body": body, "self": include_self}
        reached = await guarded(
            self.redis, "bus broadcast", self.redis.publish(self._all, _dump(msg))
        )
        return int(reached)

    def __repr__(self) -> str:
        return f"Bus({self.node_id!r}, connected={self.connected})"


def _dump(msg: dict[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"))
