"""Declaring a killed node dead before its key expires (:mod:`e2ee.server.cluster.liveness`),
against a real redis-server: a late owner that refuses connections is buried and its
session placed again; a late owner that answers, or that accepts but stays silent (a
stalled process), keeps its sessions.  Long expiries (60 s) so that only the probe can
move anything; the waits are polls, never timing assertions."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

pytest.importorskip("redis")

from e2ee.server.cluster import NodeRegistry, Placement, connect
from e2ee.server.cluster.liveness import Liveness
from support.redis_server import RedisServer

HEARTBEAT, DEAD_AFTER = 0.1, 60.0


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Cluster:
    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"l{secrets.token_hex(4)}:"
        self.clients: list[object] = []
        self.registries: list[NodeRegistry] = []

    def node(self, node_id: str, public_url: str) -> tuple[NodeRegistry, Placement]:
        client = connect(self.url)
        self.clients.append(client)
        registry = NodeRegistry(
            client,
            node_id,
            public_url,
            load=lambda: {},
            heartbeat=HEARTBEAT,
            dead_after=DEAD_AFTER,
            prefix=self.prefix,
        )
        self.registries.append(registry)
        return registry, Placement(client, registry, prefix=self.prefix)

    async def close(self) -> None:
        for registry in self.registries:
            await registry.stop()
        for client in self.clients:
            await client.aclose()  # type: ignore[attr-defined]


@pytest_asyncio.fixture
async def cluster(redis_server: RedisServer) -> AsyncIterator[Cluster]:
    made = Cluster(redis_server.url)
    yield made
    await made.close()


async def _owned_by(placement: Placement, session_id: str, node_id: str) -> None:
    owner = await placement.place(session_id)
    assert owner.node_id == node_id


async def _late(registry: NodeRegistry) -> None:
    await registry.beat()  # one heartbeat, then silence: a killed process
    await asyncio.sleep(3 * HEARTBEAT)


@pytest.mark.asyncio
async def test_a_killed_owner_is_declared_dead_and_its_session_moves(cluster: Cluster) -> None:
    ghost, ghost_placement = cluster.node("ghost", f"http://127.0.0.1:{_closed_port()}")
    here, placement = cluster.node("here", "http://127.0.0.1:1")
    await _late(ghost)
    await _owned_by(ghost_placement, "s1", "ghost")  # claimed while the ghost was alone
    await here.beat()
    owner = await placement.place("s1")
    assert owner.node_id == "ghost"  # its key lives for 60 s more
    liveness = Liveness(here.redis, here)
    liveness.start()
    try:
        assert liveness.late(owner)
        assert await liveness.answers(owner) is False
        assert await liveness.confirm_dead(owner)
        assert liveness.dead == 1
        assert await here.node("ghost") is None
        assert (await placement.place("s1")).node_id == "here"
    finally:
        await liveness.stop()


@pytest.mark.asyncio
async def test_a_late_owner_that_answers_keeps_its_sessions(cluster: Cluster) -> None:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    slow, slow_placement = cluster.node("slow", f"http://127.0.0.1:{port}")
    here, placement = cluster.node("here", "http://127.0.0.1:1")
    liveness = Liveness(here.redis, here)
    liveness.start()
    try:
        await _late(slow)
        await _owned_by(slow_placement, "s2", "slow")
        await here.beat()
        owner = await placement.place("s2")
        assert owner.node_id == "slow"
        assert await liveness.answers(owner) is True
        assert not await liveness.confirm_dead(owner)
        assert await here.node("slow") is not None
    finally:
        await liveness.stop()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_a_stalled_owner_is_not_declared_dead(cluster: Cluster) -> None:
    # A listening socket nobody accepts from: the kernel completes the handshake, the
    # request is never answered, as with a process that is alive but stalled.
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(8)
    try:
        mute, mute_placement = cluster.node("mute", f"http://127.0.0.1:{stalled.getsockname()[1]}")
        here, _ = cluster.node("here", "http://127.0.0.1:1")
        await _late(mute)
        await _owned_by(mute_placement, "s3", "mute")
        owner = await mute.node("mute")
        assert owner is not None
        liveness = Liveness(here.redis, here, timeout=0.3)
        liveness.start()
        try:
            assert await liveness.answers(owner) is None
            assert not await liveness.confirm_dead(owner)
            assert await here.node("mute") is not None
        finally:
            await liveness.stop()
    finally:
        stalled.close()


@pytest.mark.asyncio
async def test_a_heartbeat_after_the_probe_keeps_the_node(cluster: Cluster) -> None:
    back, _ = cluster.node("back", f"http://127.0.0.1:{_closed_port()}")
    here, _ = cluster.node("here", "http://127.0.0.1:1")
    await _late(back)
    judged = await here.node("back")
    assert judged is not None
    await back.beat()  # it beat again between our reading and the burial
    liveness = Liveness(here.redis, here)
    liveness.start()
    try:
        assert not await liveness.confirm_dead(judged)
        assert await here.node("back") is not None
    finally:
        await liveness.stop()
