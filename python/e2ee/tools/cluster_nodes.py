"""Cluster node processes for ``e2ee demo --nodes`` and ``e2ee bench cluster``.

:class:`NodeProc` is one ``e2ee serve --cluster REDIS --node-id NAME`` (the real command
line, ``python -m e2ee serve``) on a free loopback port, so its public URL is known
before it starts; :meth:`NodeProc.kill` is ``kill -9``.  :class:`ClusterView` reads what
the nodes keep in Redis (docs/cluster.md): the project's credentials and which node owns
a session, as an operator with access to Redis would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from e2ee.rtc import net
from e2ee.tools.redis_proc import free_port

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from e2ee.server.store import Credentials

__all__ = ["ClusterView", "NodeProc", "node_command", "node_env", "start_nodes", "stop_nodes"]

_LISTENING = re.compile(r"listening on (http://\S+)")
#: The nodes' key prefix (``e2ee.server.cluster.redis_store.DEFAULT_PREFIX``).
PREFIX = "e2ee:"


def node_command(redis_url: str, node_id: str, port: int, data_dir: Path) -> list[str]:
    """The command line of one node (also the cluster tests'): ``e2ee serve`` through
    this Python, on ``127.0.0.1:port``, its own data in ``data_dir``."""
    return [
        sys.executable,
        "-m",
        "e2ee",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--cluster",
        redis_url,
        "--node-id",
        node_id,
    ]


def node_env() -> dict[str, str]:
    """A node's environment: unbuffered output (the ``listening on`` line is read as it
    comes) and ICE on loopback unless the caller's environment says otherwise."""
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        net.ENV_VAR: os.environ.get(net.ENV_VAR, "127.0.0.1"),
    }


class NodeProc:
    """One cluster node in a child process (see the module docstring)."""

    def __init__(self, redis_url: str, node_id: str, directory: Path) -> None:
        self.redis_url = redis_url
        self.node_id = node_id
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.node_id}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 30.0) -> NodeProc:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = node_command(self.redis_url, self.node_id, self.port, self.directory / self.node_id)
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=node_env(),
                # Its own session: a Ctrl-C reaches the command, which stops the node.
                start_new_session=True,
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
                if not line:
                    break
                if _LISTENING.search(line.decode(errors="replace")):
                    self._drain = asyncio.create_task(self._drain_stdout())
                    return self
        except TimeoutError:
            pass
        except BaseException:
            await self.kill()
            raise
        await self.kill()
        tail = self.log_path.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"cluster node {self.node_id} did not start:\n{tail}")

    async def _drain_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while await self.proc.stdout.readline():
            pass

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """``kill -9``: no goodbye to its clients, Redis or the other nodes."""
        await self._end(signal.SIGKILL, 10.0)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the node tells its clients and leaves the registry), SIGKILL after
        ``timeout``."""
        await self._end(signal.SIGTERM, timeout)

    async def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(BaseException):
                await self._drain
            self._drain = None


async def start_nodes(redis_url: str, count: int, directory: Path) -> list[NodeProc]:
    """``count`` nodes, ``node-1`` ... ``node-N``, started together; if one fails, the
    others are stopped before the error propagates."""
    nodes = [NodeProc(redis_url, f"node-{i + 1}", directory) for i in range(count)]
    results = await asyncio.gather(*(n.start() for n in nodes), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        await stop_nodes(nodes)
        raise failed[0]
    return nodes


async def stop_nodes(nodes: list[NodeProc]) -> None:
    await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


class ClusterView:
    """Reads the cluster's shared state in Redis (``redis`` package, asyncio client)."""

    def __init__(self, redis_url: str) -> None:
        from redis.asyncio import Redis

        self.redis: Redis = Redis.from_url(redis_url, decode_responses=True)

    async def credentials(self, timeout: float = 10.0) -> Credentials:
        """The project's credentials (the first node creates them at start)."""
        from e2ee.server.store import Credentials

        deadline = time.monotonic() + timeout
        while True:
            key, secret = await self.redis.hmget(PREFIX + "cred", ["api_key", "api_secret"])
            if key and secret:
                return Credentials(api_key=str(key), api_secret=str(secret))
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster has no credentials in Redis")
            await asyncio.sleep(0.1)

    async def owner(self, session_id: str) -> str | None:
        """The node id that owns ``session_id`` now (``None``: not placed)."""
        value = await self.redis.get(f"{PREFIX}owner:{session_id}")
        return None if value is None else str(value)

    async def connections(self, node_id: str) -> float | None:
        """The connections ``node_id`` reported in its last heartbeat (``None``: dead)."""
        from e2ee.server.cluster.registry import NodeInfo

        raw = await self.redis.get(f"{PREFIX}node:{node_id}")
        return None if raw is None else NodeInfo.from_json(str(raw)).connections

    async def close(self) -> None:
        await self.redis.aclose()
