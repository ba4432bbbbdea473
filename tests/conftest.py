"""Test-wide setup: WebRTC traffic stays on loopback.

aioice would offer every interface's address as an ICE candidate (and skips loopback);
tests may only talk to 127.0.0.1.  The environment variable is inherited by server
processes the tests start, which apply it on import.

Below that, the shared fixtures (helpers in tests/support/, importable as ``support``):

* ``server`` / ``fake_server``: a started server process with the real media router / a
  fake one (no RTP), one per test module, stopped at the module's end.
* ``http``: an aiohttp client session; ``api`` / ``fake_api``: REST and WebSocket clients
  of ``server`` / ``fake_server`` that close the signaling clients joined through them.
* ``peers``: a list of :class:`support.media.Peer`, each closed at teardown.
* ``cleanup``: a list of routers, peer connections and frame collectors, closed (stopped)
  at teardown in reverse order.
* ``redis_server`` / ``redis_server_module``: a real ``redis-server`` on a free loopback
  port (:class:`support.redis_server.RedisServer`), per test / per module; the test skips,
  saying why, without the ``redis-server`` binary or the ``redis`` package.

The async tests run on pytest-asyncio, each marked ``@pytest.mark.asyncio`` (strict mode,
so that works without the ini file too).  The test directories are packages (empty
``__init__.py``) so that test files may share a base name across layers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from e2ee.rtc import net
from support.media import FrameCollector, Peer
from support.redis_server import RedisServer, redis_server_binary
from support.server import Api, ServerProcess

os.environ[net.ENV_VAR] = "127.0.0.1"
net.apply_environment()

# -- Server processes ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The production configuration (the real media router) in a child process."""
    proc = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server process with :class:`support.server.FakeRouter` (signaling without media)."""
    proc = ServerProcess(tmp_path_factory.mktemp("fake"), router="fake").start()
    yield proc
    proc.stop()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def api(server: ServerProcess, http: aiohttp.ClientSession) -> AsyncIterator[Api]:
    client = Api(server, http)
    yield client
    await client.close()


@pytest_asyncio.fixture
async def fake_api(fake_server: ServerProcess, http: aiohttp.ClientSession) -> AsyncIterator[Api]:
    client = Api(fake_server, http)
    yield client
    await client.close()


# -- In-process media ---------------------------------------------------------------------


@pytest_asyncio.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    """Append the :class:`support.media.Peer` objects a test creates; each is closed."""
    created: list[Peer] = []
    yield created
    for peer in created:
        await peer.close()


@pytest_asyncio.fixture
async def cleanup() -> AsyncIterator[list[Any]]:
    """Append routers, peer connections and frame collectors; closed in reverse order."""
    objects: list[Any] = []
    yield objects
    for obj in reversed(objects):
        with contextlib.suppress(Exception):
            if isinstance(obj, FrameCollector):
                await obj.stop()
            else:
                await obj.close()


# -- Redis (cluster mode) -----------------------------------------------------------------


def _redis_server(directory: os.PathLike[str]) -> RedisServer:
    import importlib.util

    if redis_server_binary() is None:
        pytest.skip("no redis-server (apt-get install redis-server; scripts/test does as root)")
    if importlib.util.find_spec("redis") is None:
        pytest.skip("the redis package is missing (pip install -e '.[test]')")
    return RedisServer(directory).start()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` for one test (it may stop, kill and restart it)."""
    proc = _redis_server(tmp_path_factory.mktemp("redis"))
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def redis_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server`` shared by a test module (tests use distinct key prefixes)."""
    proc = _redis_server(tmp_path_factory.mktemp("redis"))
    yield proc
    proc.kill()
