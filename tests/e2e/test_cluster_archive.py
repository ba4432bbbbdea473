"""Archives in a cluster (issues 14 and 15, docs/cluster.md): three ``e2ee serve --cluster``
nodes (real processes) and one real ``redis-server``; a real Python client publishes
the synthetic picture and tone into a routed session without E2EE.

* an archive started through a node that does not own the session runs on the owner
  (its clients get ``archive_started``/``archive_stopped``) and is held there;
* it is stopped through a third node; every node lists and shows it (Redis);
* its zip downloaded through a node that does not hold it is the holder's, byte for
  byte, and its WebM files decode here with PyAV with the synthetic content;
* the holder's errors come back through the other nodes (409, over the bus and over
  HTTP); delete through another node removes the holder's files and the record
  everywhere;
* with the holder killed, a download through another node is a clear 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import zipfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from e2ee.client import Session
from support.archive import decode, manifest, wait_router_frames, wait_status
from support.cluster import NodeProcess
from support.redis_server import RedisServer
from support.server import Api

from .test_client_resilience import Events, media
from .test_cluster import start_nodes

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

#: Seconds of media archived.
SECONDS = 2.0


@pytest.fixture(scope="module")
def cluster(
    redis_server_module: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[NodeProcess]]:
    nodes = start_nodes(redis_server_module, tmp_path_factory.mktemp("cluster-archive"))
    yield nodes
    for node in nodes:
        node.stop()


@pytest_asyncio.fixture
async def apis(cluster: list[NodeProcess]) -> AsyncIterator[list[Api]]:
    async with aiohttp.ClientSession() as http:
        made = [Api(node, http) for node in cluster]
        yield made
        for api in made:
            await api.close()


@contextlib.asynccontextmanager
async def publishing(
    node: NodeProcess, api: Api, sid: str
) -> AsyncIterator[tuple[Session, Events]]:
    """A client without E2EE publishing the synthetic picture and tone, entering at
    ``node`` (it follows the redirect to the session's owner)."""
    session = Session(node.url, sid, api.mint(sid, "publisher"))
    events = Events(session, "archive_started", "archive_stopped", "redirected")
    try:
        await session.connect()
        await session.publish(**media())
        yield session, events
    finally:
        with contextlib.suppress(Exception):
            await session.disconnect()


async def routed_session(api: Api) -> str:
    status, body = await api.call("POST", "/v1/sessions", {"media_mode": "routed"})
    assert status == 201, body
    assert body["e2ee"] is False
    return str(body["id"])


def roles(cluster: list[NodeProcess], apis: list[Api], owner_url: str) -> tuple[int, int, int]:
    """The indexes of the owner and of the two other nodes."""
    owner = next(i for i, node in enumerate(cluster) if node.url == owner_url)
    others = [i for i in range(len(cluster)) if i != owner]
    return owner, others[0], others[1]


async def zip_through(api: Api, aid: str) -> tuple[int, bytes, dict[str, str]]:
    async with api.http.get(
        f"{api.server.url}/v1/archives/{aid}/download", headers=api.auth()
    ) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_an_archive_across_nodes(cluster: list[NodeProcess], apis: list[Api]) -> None:
    sid = await routed_session(apis[0])
    # Nobody connected anywhere: the node asked refuses, as a single node does.
    status, err = await apis[1].call("POST", f"/v1/sessions/{sid}/archive", {})
    assert (status, err["code"]) == (409, "no_clients"), err

    async with publishing(cluster[0], apis[0], sid) as (alice, events):
        owner, starter, stopper = roles(cluster, apis, alice.url)
        holder = cluster[owner]
        await wait_router_frames(apis[owner], sid, 30)

        status, archive = await apis[starter].call(
            "POST", f"/v1/sessions/{sid}/archive", {"name": "across"}
        )
        assert status == 201, archive
        aid = str(archive["id"])
        assert (archive["status"], archive["node_id"]) == ("started", holder.node_id)
        assert (await events.wait("archive_started"))["archive"]["id"] == aid
        status, err = await apis[starter].call("POST", f"/v1/sessions/{sid}/archive", {})
        assert (status, err["code"]) == (409, "archive_in_progress")  # the owner's answer
        status, err = await apis[stopper].call("DELETE", f"/v1/archives/{aid}")
        assert (status, err["code"]) == (409, "archive_in_progress")  # the holder's answer
        status, body, _ = await zip_through(apis[stopper], aid)  # the holder's HTTP answer
        assert (status, json.loads(body)["code"]) == (409, "archive_not_available")

        await asyncio.sleep(SECONDS)
        status, stopped = await apis[stopper].call("POST", f"/v1/archives/{aid}/stop")
        assert (status, stopped["status"]) == (200, "stopped"), stopped
        ev = await events.wait("archive_stopped")
        assert (ev["archive"]["id"], ev["archive"]["reason"]) == (aid, "stopped")
        status, err = await apis[starter].call("POST", f"/v1/archives/{aid}/stop")
        assert (status, err["code"]) == (409, "archive_not_recording")

    # Every node shows and lists it, from Redis.
    done = await wait_status(apis[starter], aid)
    assert done["status"] == "available", done
    for api in apis:
        status, got = await api.call("GET", f"/v1/archives/{aid}")
        assert (status, got) == (200, done)
        status, listed = await api.call("GET", f"/v1/archives?session_id={sid}")
        assert (status, listed) == (200, {"archives": [done]})

    # Through a node that does not hold it: the holder's zip, streamed.
    status, data, headers = await zip_through(apis[starter], aid)
    assert status == 200, data[:300]
    assert headers["Content-Type"] == "application/zip"
    assert f"archive-{aid}.zip" in headers["Content-Disposition"]
    _, direct, _ = await zip_through(apis[owner], aid)
    assert data == direct
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert manifest(zf)["archive_id"] == aid
    kinds = set()
    for entry in done["streams"]:
        got = decode(zf.read(entry["file"]))
        kinds.add(got.kind)
        assert got.frames > 0, (entry, got)
        assert got.good >= 0.9 * got.frames, (entry, got)
        assert got.duration > 0.5 * SECONDS, (entry, got)
    assert kinds == {"video", "audio"}

    # Delete through a node that does not hold it: the holder's files go, and the record.
    files = holder.data_dir / holder.node_id / "archives" / aid
    assert files.is_dir()
    status, _ = await apis[stopper].call("DELETE", f"/v1/archives/{aid}")
    assert status == 204
    assert not files.exists()
    for api in apis:
        status, err = await api.call("GET", f"/v1/archives/{aid}")
        assert (status, err["code"]) == (404, "archive_not_found")


async def test_a_download_when_the_holder_is_dead_is_503(
    cluster: list[NodeProcess], apis: list[Api]
) -> None:
    """Last in this module: it kills a node."""
    sid = await routed_session(apis[0])
    async with publishing(cluster[0], apis[0], sid) as (alice, _):
        owner, other, _ = roles(cluster, apis, alice.url)
        await wait_router_frames(apis[owner], sid, 10)
        status, archive = await apis[other].call("POST", f"/v1/sessions/{sid}/archive", {})
        assert status == 201, archive
        aid = str(archive["id"])
        await asyncio.sleep(0.5)
        status, _ = await apis[other].call("POST", f"/v1/archives/{aid}/stop")
        assert status == 200
        done = await wait_status(apis[other], aid)
        assert done["status"] == "available"
    status, _, _ = await zip_through(apis[other], aid)
    assert status == 200

    cluster[owner].kill()
    status, body, _ = await zip_through(apis[other], aid)
    err: dict[str, Any] = json.loads(body)
    assert (status, err["code"]) == (503, "archive_holder_unavailable"), err
    assert cluster[owner].node_id in err["message"], err
    # The record is still there, on every live node; deleting it waits for the holder.
    status, got = await apis[other].call("GET", f"/v1/archives/{aid}")
    assert (status, got["status"]) == (200, "available")
    status, err = await apis[other].call("DELETE", f"/v1/archives/{aid}")
    assert (status, err["code"]) == (503, "archive_holder_unavailable"), err
