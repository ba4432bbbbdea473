"""The cluster bus against a real redis-server: two Bus instances on their own Redis
clients (as two node processes), request/reply, errors carried back, broadcasts, and
what Redis going away and coming back does to it."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip("redis")

from e2ee.server.cluster import Bus, ClusterUnavailable, connect
from e2ee.server.errors import ApiError
from support.redis_server import RedisServer

READY = 15.0  # generous: the machine is shared


class Pair:
    def __init__(self, url: str) -> None:
        prefix = f"t{secrets.token_hex(4)}:"
        self.clients = [connect(url), connect(url)]
        self.a = Bus(self.clients[0], "a", prefix=prefix)
        self.b = Bus(self.clients[1], "b", prefix=prefix)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.release = asyncio.Event()
        for bus in (self.a, self.b):
            bus.handle("echo", self._echo(bus.node_id))
            bus.handle("note", self._note(bus.node_id))
            bus.handle("slow", self._slow)
            bus.handle("refuse", self._refuse)
            bus.handle("crash", self._crash)

    def _echo(self, me: str) -> Any:
        async def echo(body: dict[str, Any]) -> dict[str, Any]:
            self.calls.append((me, body))
            return {"node": me, "got": body}

        return echo

    def _note(self, me: str) -> Any:
        async def note(body: dict[str, Any]) -> None:
            self.calls.append((me, body))

        return note

    async def _slow(self, body: dict[str, Any]) -> dict[str, Any]:
        await self.release.wait()
        return {}

    async def _refuse(self, body: dict[str, Any]) -> dict[str, Any]:
        raise ApiError("unknown_connection", "no such connection in this session", 404)

    async def _crash(self, body: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("a bug")

    async def start(self) -> Pair:
        for bus in (self.a, self.b):
            bus.start()
        for bus in (self.a, self.b):
            await bus.ready(READY)
        return self

    async def close(self) -> None:
        self.release.set()
        for bus in (self.a, self.b):
            await bus.stop()
        for client in self.clients:
            await client.aclose()


@pytest_asyncio.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[Pair]:
    made = Pair(redis_server.url)
    await made.start()
    yield made
    await made.close()


@pytest.mark.asyncio
async def test_request_reply_across_nodes(pair: Pair) -> None:
    replies = await asyncio.gather(
        *(pair.a.request("b", "echo", {"n": i}) for i in range(20)),
        *(pair.b.request("a", "echo", {"n": i}) for i in range(20)),
    )
    assert replies[:20] == [{"node": "b", "got": {"n": i}} for i in range(20)]
    assert replies[20:] == [{"node": "a", "got": {"n": i}} for i in range(20)]
    # A request to oneself runs here, without Redis.
    assert await pair.a.request("a", "echo", {"x": 1}) == {"node": "a", "got": {"x": 1}}
    assert await pair.a.request("b", "note", {"y": 2}) == {}


@pytest.mark.asyncio
async def test_errors_come_back(pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ApiError) as err:
        await pair.a.request("b", "refuse", {})
    assert (err.value.code, err.value.status) == ("unknown_connection", 404)
    assert not isinstance(err.value, ClusterUnavailable)
    with pytest.raises(ApiError) as err:
        await pair.a.request("b", "crash", {})
    assert (err.value.code, err.value.status) == ("internal_error", 500)
    assert "a bug" not in err.value.message  # details stay in b's log
    with pytest.raises(ClusterUnavailable, match="no handler"):
        await pair.a.request("b", "no-such-kind", {})


@pytest.mark.asyncio
async def test_timeout_and_unreachable_node(pair: Pair) -> None:
    with pytest.raises(ClusterUnavailable, match=r"did not answer 'slow' within 0\.3 s"):
        await pair.a.request("b", "slow", {}, timeout=0.3)
    assert not pair.a._pending  # nothing left waiting
    with pytest.raises(ClusterUnavailable, match="node nobody is not reachable"):
        await asyncio.wait_for(pair.a.request("nobody", "echo", {}, timeout=30), 10)
    await pair.b.stop()
    with pytest.raises(ClusterUnavailable, match="node b is not reachable"):
        await asyncio.wait_for(pair.a.request("b", "echo", {}, timeout=30), 10)


@pytest.mark.asyncio
async def test_broadcast(pair: Pair) -> None:
    assert await pair.a.broadcast("note", {"all": 1}) == 2
    await _until(lambda: len(pair.calls) == 2)
    assert sorted(pair.calls, key=lambda c: c[0]) == [("a", {"all": 1}), ("b", {"all": 1})]
    pair.calls.clear()
    assert await pair.a.broadcast("note", {"others": 1}, include_self=False) == 2
    await pair.b.broadcast("note", {"marker": 1}, include_self=False)  # arrives after
    # One channel delivers in publish order: once a has the marker, it has skipped "others".
    await _until(lambda: ("a", {"marker": 1}) in pair.calls)
    await _until(lambda: ("b", {"others": 1}) in pair.calls)
    assert ("a", {"others": 1}) not in pair.calls
    assert ("b", {"marker": 1}) not in pair.calls


async def _until(check: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_redis_killed_then_restarted(redis_server: RedisServer, pair: Pair) -> None:
    redis_server.kill()
    with pytest.raises(ClusterUnavailable):
        await asyncio.wait_for(pair.a.request("b", "echo", {}, timeout=30), 10)
    with pytest.raises(ClusterUnavailable):
        await asyncio.wait_for(pair.a.broadcast("note", {}), 10)
    await _until(lambda: not pair.a.connected and not pair.b.connected)
    redis_server.start()
    # Both subscribers come back on their own; the same objects work again.
    await pair.a.ready(READY)
    await pair.b.ready(READY)
    assert await pair.a.request("b", "echo", {"after": 1}) == {"node": "b", "got": {"after": 1}}
    assert await pair.b.request("a", "echo", {"after": 2}) == {"node": "a", "got": {"after": 2}}
