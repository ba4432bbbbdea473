"""Several ``e2ee serve --cluster`` nodes sharing one real ``redis-server``, each in its own
child process (the real command line, ``python -m e2ee serve``), for the cluster tests.

:class:`NodeProcess` is one node on a fixed free loopback port (so that its public URL is
known before it starts); :meth:`NodeProcess.kill` is ``kill -9``.  Its credentials are read
from Redis, as an operator with access to it would, so :class:`support.server.Api` works
against any node.
"""

from __future__ import annotations

import signal
from pathlib import Path

from e2ee.server.store import Credentials
from e2ee.tools.cluster_nodes import node_command, node_env
from e2ee.tools.redis_proc import free_port
from support.server import ChildServer

__all__ = ["NodeProcess", "free_port", "read_credentials"]


def read_credentials(redis_url: str, prefix: str = "e2ee:") -> Credentials:
    """The project's credentials as the cluster keeps them (``<prefix>cred``)."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        key, secret = client.hmget(prefix + "cred", ["api_key", "api_secret"])
    finally:
        client.close()
    assert key, "the cluster has no credentials yet"
    assert secret, "the cluster has no credentials yet"
    return Credentials(api_key=str(key), api_secret=str(secret))


class NodeProcess(ChildServer):
    """``e2ee serve --cluster REDIS --node-id NAME`` on ``127.0.0.1:<free port>``: the
    command of :func:`e2ee.tools.cluster_nodes.node_command`, run as a
    :class:`support.server.ChildServer`."""

    def __init__(self, redis_url: str, node_id: str, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.redis_url = redis_url
        self.node_id = node_id
        self.what = f"node {node_id}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def credentials(self) -> Credentials:
        return read_credentials(self.redis_url)

    @property
    def stderr_path(self) -> Path:
        return self.data_dir / f"{self.node_id}.stderr.txt"

    def start(self, timeout: float = 20.0) -> NodeProcess:
        argv = node_command(self.redis_url, self.node_id, self.port, self.data_dir / self.node_id)
        self._launch(argv, node_env(), timeout)
        return self

    def kill(self) -> None:
        """``kill -9``: no goodbye to clients, Redis or the other nodes."""
        self._end(signal.SIGKILL, 10.0)

    def stop(self, timeout: float = 10.0) -> None:
        self._end(signal.SIGTERM, timeout)

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
