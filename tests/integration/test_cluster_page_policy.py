"""The page's Content-Security-Policy of a cluster node names the live nodes at request
time (e2ee.server.page_policy), against a real redis-server: the real application in
this process as node A, and a second node's registry (its heartbeat only) as node B."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

pytest.importorskip("redis")

from e2ee.server.app import create_app
from e2ee.server.cluster import NodeRegistry, connect
from e2ee.server.cluster.node import ClusterConfig, ClusterNode
from support.redis_server import RedisServer
from support.server import FakeRouter

B_URL = "https://b.calls.test:8443"


def connect_src(policy: str) -> list[str]:
    [found] = [d.split()[1:] for d in policy.split("; ") if d.startswith("connect-src ")]
    return found


@pytest_asyncio.fixture
async def node_a(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """Node A serving on a free loopback port; (its URL, the key prefix)."""
    prefix = f"t{secrets.token_hex(4)}:"
    config = ClusterConfig(
        url=redis_server.url,
        node_id="node-a",
        public_url="http://a.calls.test:8080",
        prefix=prefix,
    )
    node = await ClusterNode.connect(config)
    app = await create_app(tmp_path, router_factory=FakeRouter.factory, cluster=node)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        yield f"http://127.0.0.1:{port}", prefix
    finally:
        await runner.cleanup()
        await node.store.close()


async def page_policy_of(url: str, path: str = "/") -> str:
    async with aiohttp.ClientSession() as http, http.get(url + path) as resp:
        assert resp.status == 200
        return resp.headers["Content-Security-Policy"]


@pytest.mark.asyncio
async def test_the_page_may_connect_to_the_live_nodes_only(
    node_a: tuple[str, str], redis_server: RedisServer
) -> None:
    url, prefix = node_a
    host = url.removeprefix("http://")
    alone = connect_src(await page_policy_of(url))
    assert alone == [
        "'self'",
        f"ws://{host}",
        f"wss://{host}",
        "http://a.calls.test:8080",
        "ws://a.calls.test:8080",
    ]

    client = connect(redis_server.url)
    b = NodeRegistry(client, "node-b", B_URL, load=dict, prefix=prefix)
    try:
        await b.beat()  # node B is live: the page may follow a redirect to it
        for path in ("/", "/static/index.html"):
            sources = connect_src(await page_policy_of(url, path))
            assert sources == [*alone, "https://b.calls.test:8443", "wss://b.calls.test:8443"]
            assert not any("*" in s for s in sources)
        await b.stop()  # gone from the registry: gone from the next page's policy
        assert connect_src(await page_policy_of(url)) == alone
    finally:
        await b.stop()
        await client.aclose()

    # Redis down: the page still loads, naming this node only.
    redis_server.stop()
    assert connect_src(await page_policy_of(url)) == alone
