"""Failures under a running cluster (issue 14, docs/cluster.md "Failures"): three real
``e2ee serve --cluster`` nodes, one real ``redis-server``, real clients with E2EE on.

* ``kill -9`` of the node that owns a call: both clients reconnect on their own through
  their entry URLs, the session is placed on a live node, the publisher publishes again,
  the subscriber subscribes to the new stream, and frames decrypt again under the same
  secret.  The time from the kill to the first decoded frame is printed (the goal is
  under 5 s; only a generous bound is asserted: the machine is shared);
* Redis stopped mid-call: the call keeps its media and its WebSockets, new joins and REST
  fail with ``cluster_unavailable``; once Redis is back (its append-only file kept the
  sessions), new joins work again and land on the same owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from e2ee.client import ReconnectPolicy, Session, SessionError
from e2ee.tools.synthetic import FrameCollector
from support.cluster import NodeProcess
from support.redis_server import RedisServer
from support.server import Api

from .test_client_resilience import (
    CLIENT_EVENTS,
    SECRET,
    TEST_POLICY,
    Events,
    media,
    new_session,
    tracks_of,
    video_frames,
)
from .test_cluster import owner_of, start_nodes, until

#: What an application that wants a quick failover gives: retries from 0.1 s, at most
#: 0.5 s apart, for up to a minute.
FAILOVER = ReconnectPolicy(
    initial_delay=0.1, max_delay=0.5, max_attempts=None, max_elapsed=60.0, connect_timeout=5.0
)
#: The bound asserted (the goal, under 5 s, is printed, not asserted).
FAILOVER_BOUND = 30.0


@pytest.fixture
def nodes(redis_server: RedisServer, tmp_path: Path) -> Iterator[list[NodeProcess]]:
    started = start_nodes(redis_server, tmp_path / "nodes")
    yield started
    for node in started:
        node.kill()


@pytest_asyncio.fixture
async def api(nodes: list[NodeProcess]) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        made = Api(nodes[0], http)
        yield made
        await made.close()


@pytest_asyncio.fixture
async def sessions() -> AsyncIterator[list[Session]]:
    made: list[Session] = []
    yield made
    for s in made:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(s.disconnect(), 10)


def client(
    made: list[Session], nodes: list[NodeProcess], first: int, api: Api, sid: str, **kw: object
) -> Session:
    """A client entering through node ``first``, the others as further entry URLs."""
    entries = [nodes[first].url] + [n.url for i, n in enumerate(nodes) if i != first]
    s = Session(
        entries,
        sid,
        api.mint(sid, "publisher"),
        encryption_secret=SECRET,
        policy=TEST_POLICY,
        **kw,  # type: ignore[arg-type]
    )
    made.append(s)
    return s


@pytest.mark.asyncio
async def test_killing_the_owner_mid_call_moves_the_call_to_a_live_node(
    nodes: list[NodeProcess], api: Api, sessions: list[Session]
) -> None:
    sid = await new_session(api)
    alice = client(sessions, nodes, 0, api, sid, reconnect=FAILOVER)
    bob = client(sessions, nodes, 1, api, sid, reconnect=FAILOVER)
    a_events = Events(alice, "redirected", *CLIENT_EVENTS)
    b_events = Events(bob, "redirected", *CLIENT_EVENTS)
    await alice.connect()
    await bob.connect()
    owner = owner_of(nodes, alice)
    assert bob.url == owner.url
    pub = await alice.publish(**media())
    sub = await bob.subscribe(pub.stream_id)
    await video_frames(sub, 5)
    old_stream = pub.stream_id

    killed_at = time.monotonic()
    owner.kill()

    # Both notice, reconnect through their entry URLs and end on one live node.
    for events in (a_events, b_events):
        lost = await events.wait("connection_lost", timeout=FAILOVER_BOUND)
        assert lost["reconnecting"] is True
    again = await a_events.wait("republished", timeout=FAILOVER_BOUND)
    assert again["old_stream_id"] == old_stream
    await b_events.wait("reconnected", timeout=FAILOVER_BOUND)
    assert (await b_events.wait("subscriber_ended"))["reason"] == "stream_gone"
    await until(lambda: pub.stream_id in bob.streams, FAILOVER_BOUND)
    new_sub = await bob.subscribe(pub.stream_id)
    await tracks_of(new_sub, FAILOVER_BOUND)
    assert new_sub.video is not None
    collector = FrameCollector(new_sub.video).start()
    try:
        assert await collector.wait_for(10, timeout=FAILOVER_BOUND), "no frames after failover"
    finally:
        await collector.stop()
    first_frame = min(f.at for f in collector.frames if f.good)
    took = first_frame - killed_at
    print(f"\nfailover: kill -9 of the owner -> first decoded frame after {took:.2f} s")
    assert took < FAILOVER_BOUND

    survivor = owner_of(nodes, alice)
    assert survivor is not owner
    assert bob.url == survivor.url
    assert alice.connected
    assert bob.connected
    # Nothing durable was lost: any live node still knows the session and the project.
    async with aiohttp.ClientSession() as http:
        other = Api(survivor, http)
        assert other.creds == api.creds
        status, info = await other.call("GET", f"/v1/sessions/{sid}")
        assert status == 200, info
        assert info["e2ee"] is True
        assert {c["id"] for c in info["connections"]} == {
            alice.connection["id"],
            bob.connection["id"],
        }


@pytest.mark.asyncio
async def test_a_redis_outage_keeps_calls_going_and_new_joins_fail_clearly(
    redis_server: RedisServer, nodes: list[NodeProcess], api: Api, sessions: list[Session]
) -> None:
    sid = await new_session(api)
    alice = client(sessions, nodes, 0, api, sid, reconnect=FAILOVER)
    bob = client(sessions, nodes, 1, api, sid, reconnect=FAILOVER)
    events = [Events(s, *CLIENT_EVENTS) for s in (alice, bob)]
    await alice.connect()
    await bob.connect()
    owner = owner_of(nodes, alice)
    pub = await alice.publish(**media())
    sub = await bob.subscribe(pub.stream_id)
    await tracks_of(sub)
    assert sub.video is not None
    collector = FrameCollector(sub.video).start()
    http = aiohttp.ClientSession()
    try:
        assert await collector.wait_for(5, timeout=20)
        per_node = [(node, Api(node, http)) for node in nodes]  # credentials read now

        redis_server.stop()
        before = collector.count(good=True)
        # New joins, through any node, fail with one clear error and close 4503.
        for i in range(len(nodes)):
            late = client(sessions, nodes, i, api, sid, reconnect=False)
            with pytest.raises(SessionError) as refused:
                await late.connect()
            assert refused.value.code == "cluster_unavailable"
        # REST: the owner answers from its live room; another node would need the bus.
        for node, rest in per_node:
            status, body = await rest.call("GET", f"/v1/sessions/{sid}")
            if node is owner:
                assert status == 200, body
                assert len(body["connections"]) == 2
            else:
                assert (status, body.get("code")) == (503, "cluster_unavailable"), body
        # The call in progress keeps its media and its signaling.
        assert await collector.wait_for(before + 20, timeout=20), "media stopped with Redis"
        pong = await alice.request({"type": "ping"})
        assert pong["type"] == "pong"

        redis_server.start()
        # Joins work again once the nodes reach Redis, and land on the same owner.
        carol = client(sessions, nodes, 2, api, sid, reconnect=False)
        await _join_when_back(carol)
        assert carol.url == owner.url
        assert await collector.wait_for(collector.count(good=True) + 10, timeout=20)
    finally:
        await collector.stop()
        await http.close()
    for seen in events:
        assert seen.of("connection_lost") == []
    assert alice.connected
    assert bob.connected


async def _join_when_back(session: Session, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                await session.connect()
                return
            except SessionError as exc:
                if exc.code != "cluster_unavailable":
                    raise
            await asyncio.sleep(0.2)
