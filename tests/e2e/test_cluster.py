"""Three ``e2ee serve --cluster`` nodes and one real ``redis-server`` on loopback act as one
service (issue 14, docs/cluster.md).

Each node is the real command in its own process (tests/support/cluster.py); the clients
are the real Python client with real aiortc peers, synthetic media and E2EE on:

* clients joining through different nodes end on the session's owner (the others
  redirect them) and decode each other's media;
* REST on a node that does not own the session reaches the owner: it lists the live
  connections, force-disconnects, force-unpublishes, revokes and deletes (every node
  then refuses the session); unknown ids stay 404;
* the participant limit holds with joins spread over the nodes (they all land on the
  owner);
* the command line refuses bad cluster settings with one line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from e2ee.client import Session, SessionError
from support.cli import e2ee
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
    video_frames,
)

NODES = ("node-a", "node-b", "node-c")


def start_nodes(
    redis: RedisServer, directory: Path, names: tuple[str, ...] = NODES
) -> list[NodeProcess]:
    nodes: list[NodeProcess] = []
    try:
        for name in names:
            nodes.append(NodeProcess(redis.url, name, directory).start())
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    return nodes


@pytest.fixture(scope="module")
def cluster(
    redis_server_module: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[NodeProcess]]:
    nodes = start_nodes(redis_server_module, tmp_path_factory.mktemp("cluster"))
    yield nodes
    for node in nodes:
        node.stop()


@pytest_asyncio.fixture
async def apis(cluster: list[NodeProcess]) -> AsyncIterator[list[Api]]:
    """One REST client per node (one project: the credentials are in Redis)."""
    async with aiohttp.ClientSession() as http:
        made = [Api(node, http) for node in cluster]
        yield made
        for api in made:
            await api.close()


@pytest_asyncio.fixture
async def make() -> AsyncIterator[Callable[..., Session]]:
    made: list[Session] = []

    def factory(url: str | list[str], api: Api, sid: str, **kw: Any) -> Session:
        token = kw.pop("token", None) or api.mint(sid, kw.pop("role", "publisher"))
        secret = kw.pop("secret", SECRET)
        s = Session(url, sid, token, encryption_secret=secret, policy=TEST_POLICY, **kw)
        made.append(s)
        return s

    yield factory
    for s in made:
        with contextlib.suppress(Exception):
            await s.disconnect()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def owner_of(nodes: list[NodeProcess], session: Session) -> NodeProcess:
    [node] = [n for n in nodes if n.url == session.url]
    return node


@pytest.mark.asyncio
async def test_clients_joining_through_different_nodes_end_on_the_owner_and_decode_each_other(
    cluster: list[NodeProcess], apis: list[Api], make: Callable[..., Session]
) -> None:
    sid = await new_session(apis[0])
    alice = make(cluster[0].url, apis[0], sid)
    bob = make(cluster[1].url, apis[1], sid)
    carol = make(cluster[2].url, apis[2], sid)
    events = [Events(s, "redirected", *CLIENT_EVENTS) for s in (alice, bob, carol)]
    for s in (alice, bob, carol):
        await s.connect()

    # One owner; the two (or three) who entered elsewhere were redirected to it.
    assert alice.url == bob.url == carol.url
    owner = owner_of(cluster, alice)
    redirected = [e.of("redirected") for e in events]
    assert sum(len(r) for r in redirected) >= 2
    for session, seen in zip((alice, bob, carol), redirected, strict=True):
        entered = session.entry_urls[0]
        assert (entered == owner.url) == (seen == [])
        if seen:
            assert seen[0]["url"] == owner.url
            assert seen[0]["node_id"] == owner.node_id
    await until(lambda: len(alice.connections) == 3)  # carol's connection_created

    pub = await alice.publish(**media())
    bob_sub = await bob.subscribe(pub.stream_id)
    carol_pub = await carol.publish(**media())
    alice_sub = await alice.subscribe(carol_pub.stream_id)
    assert (await video_frames(bob_sub, 10)).count(good=True) >= 10
    assert (await video_frames(alice_sub, 10)).count(good=True) >= 10

    # Any node describes the session with its live connections (asked of the owner).
    for api in apis:
        status, info = await api.call("GET", f"/v1/sessions/{sid}")
        assert status == 200, info
        assert len(info["connections"]) == 3
        assert {s["id"] for s in info["streams"]} == {pub.stream_id, carol_pub.stream_id}


@pytest.mark.asyncio
async def test_rest_on_another_node_reaches_the_clients_on_the_owner(
    cluster: list[NodeProcess], apis: list[Api], make: Callable[..., Session]
) -> None:
    sid = await new_session(apis[0])
    alice = make(cluster[0].url, apis[0], sid)
    bob = make(cluster[0].url, apis[0], sid)
    a_events, b_events = Events(alice, *CLIENT_EVENTS), Events(bob, *CLIENT_EVENTS)
    await alice.connect()
    await bob.connect()
    owner = owner_of(cluster, alice)
    other = next(api for api, node in zip(apis, cluster, strict=True) if node is not owner)
    pub = await alice.publish(**media())
    await b_events.wait("stream_created")

    # 404 stays 404 through the forwarding.
    status, body = await other.call("DELETE", f"/v1/sessions/{sid}/connections/nope")
    assert (status, body["code"]) == (404, "unknown_connection")
    status, body = await other.call("DELETE", f"/v1/sessions/{sid}/streams/nope")
    assert (status, body["code"]) == (404, "unknown_stream")

    status, _ = await other.call("DELETE", f"/v1/sessions/{sid}/streams/{pub.stream_id}")
    assert status == 204
    ended = await a_events.wait("publisher_ended")
    assert ended["reason"] == "force_unpublished"

    status, _ = await other.call("DELETE", f"/v1/sessions/{sid}/connections/{bob.connection['id']}")
    assert status == 204
    gone = await b_events.wait("disconnected")
    assert gone["reason"] == "force_disconnected"
    lost = await b_events.wait("connection_lost")
    assert lost["reconnecting"] is False  # a moderator's removal is final, on any node
    status, info = await other.call("GET", f"/v1/sessions/{sid}")
    assert [c["id"] for c in info["connections"]] == [alice.connection["id"]]


@pytest.mark.asyncio
async def test_a_revocation_on_another_node_disconnects_and_is_refused_everywhere(
    cluster: list[NodeProcess], apis: list[Api], make: Callable[..., Session]
) -> None:
    sid = await new_session(apis[0])
    token = await apis[0].token(sid)
    alice = make(cluster[0].url, apis[0], sid, token=token)
    events = Events(alice, *CLIENT_EVENTS)
    await alice.connect()
    owner = owner_of(cluster, alice)
    other = next(api for api, node in zip(apis, cluster, strict=True) if node is not owner)
    jti = _jti(token)

    status, _ = await other.call("POST", f"/v1/sessions/{sid}/revocations", {"jti": jti})
    assert status == 204
    assert (await events.wait("disconnected"))["reason"] == "force_disconnected"
    for node in cluster:  # the deny-list is in Redis: no node admits the token again
        again = make(node.url, apis[0], sid, token=token, reconnect=False)
        with pytest.raises(SessionError) as refused:
            await again.connect()
        assert refused.value.code == "token_revoked"


@pytest.mark.asyncio
async def test_a_session_deleted_on_another_node_ends_on_its_owner_and_everywhere(
    cluster: list[NodeProcess], apis: list[Api], make: Callable[..., Session]
) -> None:
    sid = await new_session(apis[0])
    alice = make(cluster[0].url, apis[0], sid)
    events = Events(alice, *CLIENT_EVENTS)
    await alice.connect()
    owner = owner_of(cluster, alice)
    other = next(api for api, node in zip(apis, cluster, strict=True) if node is not owner)
    for api in apis:  # every node has read (and cached) the session record
        status, _ = await api.call("GET", f"/v1/sessions/{sid}")
        assert status == 200

    status, _ = await other.call("DELETE", f"/v1/sessions/{sid}")
    assert status == 204
    assert (await events.wait("disconnected"))["reason"] == "session_deleted"
    for node, api in zip(cluster, apis, strict=True):
        status, body = await api.call("GET", f"/v1/sessions/{sid}")
        assert (status, body["code"]) == (404, "session_not_found")
        late = make(node.url, api, sid, reconnect=False)
        with pytest.raises(SessionError) as refused:
            await late.connect()
        assert refused.value.code == "session_not_found"


def _jti(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


@pytest.mark.asyncio
async def test_the_participant_limit_holds_with_joins_spread_over_nodes(
    cluster: list[NodeProcess], apis: list[Api], make: Callable[..., Session]
) -> None:
    status, body = await apis[0].call("POST", "/v1/sessions", {"max_participants": 2})
    assert status == 201, body
    sid = body["id"]
    first = make(cluster[0].url, apis[0], sid, secret=None)
    second = make(cluster[1].url, apis[1], sid, secret=None)
    await first.connect()
    await second.connect()
    for node, api in zip(cluster, apis, strict=True):
        third = make(node.url, api, sid, secret=None, reconnect=False)
        with pytest.raises(SessionError) as refused:
            await third.connect()
        assert refused.value.code == "participant_limit"
    await second.disconnect()
    # A seat is free again: a join through yet another node takes it.
    late = make(cluster[2].url, apis[2], sid, secret=None)
    await asyncio.wait_for(_connect_when_free(late), 20)
    assert late.url == first.url


async def _connect_when_free(session: Session) -> None:
    while True:
        try:
            await session.connect()
            return
        except SessionError as exc:
            if exc.code != "participant_limit":
                raise
            await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--cluster", "http://x:1"], {}, "is not a Redis URL"),
        (["--cluster", "redis://127.0.0.1:6379/0"], {}, "add --node-id"),
        (["--cluster", "redis://127.0.0.1:6379/0", "--node-id", "a b"], {}, "is not a node id"),
        (["--node-id", "a"], {}, "cluster mode only"),
        ([], {"E2EE_CLUSTER": "redis://h:99999/0"}, "E2EE_CLUSTER"),
        (
            ["--cluster", "redis://127.0.0.1:6379/0", "--node-id", "a", "--host", "0.0.0.0"],
            {},
            "add --public-url",
        ),
    ],
)
def test_bad_cluster_settings_are_one_line(
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    done = e2ee("serve", "--port", "0", "--data-dir", str(tmp_path / "d"), *args, check=False)
    assert done.returncode == 2, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert message in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "d").exists()


def test_a_redis_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    from support.cluster import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    done = e2ee(
        "serve",
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "d"),
        "--cluster",
        url,
        "--node-id",
        "lonely",
        check=False,
    )
    assert done.returncode == 1, done
    assert "cannot reach the cluster's Redis" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "d").exists()
