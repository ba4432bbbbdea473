"""The Python client against a node that always redirects (a cluster whose nodes
disagree): it follows :data:`MAX_REDIRECTS` redirects, each an event, then fails with
``too_many_redirects`` without an event for the one it did not follow."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from e2ee.client import Session
from e2ee.client.errors import SessionError
from e2ee.client.redirect import MAX_REDIRECTS


class LoopingNode:
    def __init__(self) -> None:
        self.joins = 0
        self.base = ""

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        self.joins += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "redirect", "url": self.base, "node_id": "loop"})
        await ws.close(code=4302)
        return ws


@pytest_asyncio.fixture
async def node() -> AsyncIterator[LoopingNode]:
    made = LoopingNode()
    app = web.Application()
    app.router.add_get("/v1/sessions/{sid}/ws", made.ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    made.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield made
    await runner.cleanup()


@pytest.mark.asyncio
async def test_too_many_redirects_fail_after_the_followed_ones(node: LoopingNode) -> None:
    session = Session(node.base, "s1", "t", reconnect=False)
    seen: list[dict[str, object]] = []
    session.on("redirected", seen.append)
    with pytest.raises(SessionError) as failed:
        await session.connect()
    assert failed.value.code == "too_many_redirects"
    assert "'loop'" in str(failed.value)  # names the node it was sent to
    assert node.joins == MAX_REDIRECTS + 1
    assert len(seen) == MAX_REDIRECTS
    assert all(e["url"] == node.base and e["node_id"] == "loop" for e in seen)
    assert not session.connected
