"""Node registry and session placement against a real redis-server.

Each "node" is a registry + placement on its own Redis client, as separate processes
would be.  Heartbeats are short (0.2 s, dead after 1 s); waits are generous polls, never
timing assertions.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip("redis")

from e2ee.server.cluster import ClusterUnavailable, NodeRegistry, Placement, connect
from e2ee.server.cluster.placement import least_loaded
from e2ee.server.cluster.registry import NodeInfo
from support.redis_server import RedisServer

HEARTBEAT, DEAD_AFTER = 0.2, 1.0  # dead_after: margin for a loaded machine


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


class Nodes:
    """Registries and placements of a test, all stopped and closed at its end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"t{secrets.token_hex(4)}:"
        self.registries: list[NodeRegistry] = []
        self.clients: list[Any] = []

    def add(
        self, node_id: str, load: Mapping[str, float] | None = None, **kw: Any
    ) -> tuple[NodeRegistry, Placement]:
        client = connect(self.url)
        self.clients.append(client)
        figures = dict(load or {})
        registry = NodeRegistry(
            client,
            node_id,
            f"http://{node_id}.test",
            load=lambda: figures,
            heartbeat=HEARTBEAT,
            dead_after=DEAD_AFTER,
            prefix=self.prefix,
            **kw,
        )
        self.registries.append(registry)
        return registry, Placement(client, registry, prefix=self.prefix)

    async def close(self) -> None:
        for registry in self.registries:
            await registry.stop()
        for client in self.clients:
            await client.aclose()


@pytest_asyncio.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[Nodes]:
    made = Nodes(redis_server.url)
    yield made
    await made.close()


@pytest.mark.asyncio
async def test_registry_lists_live_nodes_and_a_silent_node_dies(nodes: Nodes) -> None:
    a, _ = nodes.add("a", {"connections": 3, "streams": 1, "forwarded": 2, "cpu": 0.5})
    b, _ = nodes.add("b")
    assert await a.beat()
    b.start()
    await eventually(lambda: _ids(a, {"a", "b"}), "both nodes live")
    info = await b.node("a")
    assert info is not None
    assert (info.public_url, info.connections, info.streams) == ("http://a.test", 3, 1)
    assert info.load["cpu"] == 0.5
    # a beats no more (a crash): dead after dead_after, with no one doing anything.
    await eventually(lambda: _ids(b, {"b"}), "a dead")
    assert await b.node("a") is None
    # b keeps beating and stays live well past dead_after.
    start = b.beats
    await eventually(lambda: _true(b.beats >= start + 8), "b beats on")
    assert await b.node("b") is not None
    # A clean stop removes the key at once.
    await b.stop()
    assert await a.node("b") is None
    assert await a.live_nodes() == []


async def _ids(registry: NodeRegistry, want: set[str]) -> bool:
    return {n.node_id for n in await registry.live_nodes()} == want


async def _true(value: bool) -> bool:
    return value


def test_node_ids_and_timings_are_checked() -> None:
    client = object()
    with pytest.raises(ValueError, match="node id"):
        NodeRegistry(client, "a b", "http://x", load=dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="heartbeat"):
        NodeRegistry(client, "a", "http://x", load=dict, heartbeat=3, dead_after=3)  # type: ignore[arg-type]


def test_least_loaded_order() -> None:
    def node(ident: str, connections: int, streams: int) -> NodeInfo:
        return NodeInfo(ident, "", {"connections": connections, "streams": streams}, 0.0)

    nodes = [node("c", 1, 0), node("a", 5, 0), node("b", 1, 3), node("d", 1, 0)]
    assert least_loaded(nodes).node_id == "c"  # fewest connections, streams, then id
    assert least_loaded(nodes, {"c": 1}).node_id == "d"
    assert least_loaded(nodes, {"c": 1, "d": 1}).node_id == "b"


@pytest.mark.asyncio
async def test_concurrent_placement_ends_on_one_owner(nodes: Nodes) -> None:
    made = [nodes.add(n) for n in ("a", "b", "c")]
    for registry, _ in made:
        assert await registry.beat()
    for round_ in range(5):
        sid = f"s{round_}"
        owners = await asyncio.gather(*(made[i % 3][1].place(sid) for i in range(20)))
        assert len({o.node_id for o in owners}) == 1, owners
        winner = owners[0].node_id
        for registry, placement in made:
            assert (sid in registry.hosted) == (registry.node_id == winner)
            assert (await placement.owner(sid)) == owners[0]


@pytest.mark.asyncio
async def test_least_loaded_live_node_is_chosen_and_bursts_spread(nodes: Nodes) -> None:
    busy, p_busy = nodes.add("a-busy", {"connections": 9})
    mid, _ = nodes.add("b-mid", {"connections": 2, "streams": 5})
    low, _ = nodes.add("c-low", {"connections": 2, "streams": 1})
    for registry in (busy, mid, low):
        assert await registry.beat()
    assert (await p_busy.place("x")).node_id == "c-low"
    assert "x" not in busy.hosted  # placed elsewhere: not this node's to keep
    # A burst before any new heartbeat does not all land on the emptiest node.
    spread = [(await p_busy.place(f"burst{i}")).node_id for i in range(3)]
    assert spread == ["b-mid", "c-low", "b-mid"]


@pytest.mark.asyncio
async def test_dead_owner_loses_its_sessions_to_the_next_join(nodes: Nodes) -> None:
    a, pa = nodes.add("a")
    b, pb = nodes.add("b", {"connections": 1})
    assert await a.beat()
    assert await b.beat()
    assert (await pa.place("s")).node_id == "a"
    b.start()
    # a stops beating (kill -9): b keeps beating; the owner key alone keeps nothing alive.
    await eventually(lambda: _none(pb.owner("s")), "owner a seen dead")
    assert (await pb.place("s")).node_id == "b"
    assert "s" in b.hosted
    # a is back (a restarted process): b still owns s, and a is told so by its heartbeat.
    lost: list[tuple[str, str]] = []
    a.on_lost = lambda sid, other: lost.append((sid, other))
    assert await a.beat()
    assert lost == [("s", "b")]
    assert "s" not in a.hosted
    assert (await pa.place("s")).node_id == "b"


async def _none(aw: Awaitable[object]) -> bool:
    return await aw is None


@pytest.mark.asyncio
async def test_owner_reasserts_after_redis_restarted_empty(
    redis_server: RedisServer, nodes: Nodes
) -> None:
    a, pa = nodes.add("a")
    b, pb = nodes.add("b", {"connections": 5})
    assert await a.beat()
    assert await b.beat()
    assert (await pa.place("s")).node_id == "a"
    a.start()
    b.start()
    redis_server.restart(appendonly=False)  # back, with no keys at all
    await eventually(lambda: _owner_is(pb, "s", "a"), "a owns s again")
    assert "s" in a.hosted
    assert (await pb.place("s")).node_id == "a"


async def _owner_is(placement: Placement, sid: str, node_id: str) -> bool:
    owner = await placement.owner(sid)
    return owner is not None and owner.node_id == node_id


@pytest.mark.asyncio
async def test_conflict_after_lost_keys_is_reported(
    redis_server: RedisServer, nodes: Nodes
) -> None:
    lost: list[tuple[str, str]] = []

    async def on_lost(sid: str, other: str) -> None:  # a coroutine callback works too
        lost.append((sid, other))

    a, pa = nodes.add("a", on_lost=on_lost)
    b, pb = nodes.add("b", {"connections": 5})
    assert await a.beat()
    assert (await pa.place("s")).node_id == "a"
    assert (await pa.place("t")).node_id == "a"
    await pa.redis.flushall()  # Redis lost everything before a's next heartbeat
    assert await b.beat()
    assert (await pb.place("s")).node_id == "b"  # the only live node now
    assert await a.beat()
    await eventually(lambda: _true(bool(lost)), "on_lost called")
    assert lost == [("s", "b")]
    assert a.hosted == {"t"}  # t was re-asserted; s moved
    assert (await pa.owner("t")) is not None
    assert (await pb.place("t")).node_id == "a"


@pytest.mark.asyncio
async def test_release_only_if_still_ours(nodes: Nodes) -> None:
    a, pa = nodes.add("a")
    b, pb = nodes.add("b", {"connections": 1})
    for registry in (a, b):
        assert await registry.beat()
    assert (await pa.place("s")).node_id == "a"
    assert not await pb.release("s")  # b does not own it: nothing changes
    assert (await pb.owner("s")) is not None
    assert await pa.release("s")
    assert "s" not in a.hosted
    assert await pa.owner("s") is None


@pytest.mark.asyncio
async def test_redis_down_fails_fast_and_everything_recovers(
    redis_server: RedisServer, nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    a, pa = nodes.add("a")
    with pytest.raises(ClusterUnavailable, match="no live node"):
        await pa.place("s")  # not even a itself has beaten yet
    assert await a.beat()
    assert (await pa.place("s")).node_id == "a"
    a.start()
    caplog.set_level(logging.INFO, logger="e2ee.server.cluster")
    redis_server.kill()
    with pytest.raises(ClusterUnavailable) as err:
        await asyncio.wait_for(pa.place("new"), 10)  # promptly: refused, not hung
    assert err.value.code == "cluster_unavailable"
    before = a.beats
    await asyncio.sleep(5 * HEARTBEAT)  # a few failing heartbeats: never raised
    assert a.beats == before
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    redis_server.start()  # the same data (append-only file), the same objects
    await eventually(lambda: _true(a.beats > before), "heartbeat recovered")
    assert (await pa.place("s")).node_id == "a"
    assert (await pa.place("new")).node_id == "a"
    assert any("reachable again" in r.getMessage() for r in caplog.records)
