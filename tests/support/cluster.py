"""Several ``e2ee serve --cluster`` nodes sharing one real ``redis-server``, each in its own
child process (the real command line, ``python -m e2ee serve``), for the cluster tests.

:class:`NodeProcess` is one node on a fixed free loopback port (so that its public URL is
known before it starts); :meth:`NodeProcess.kill` is ``kill -9``.  Its credentials are read
from Redis, as an operator with access to it would, so :class:`support.server.Api` works
against any node.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from e2ee.server.store import Credentials
from support import REPO
from support.server import Served

__all__ = ["NodeProcess", "free_port", "read_credentials"]

_LISTENING = re.compile(r"listening on (http://[^\s]+)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


class NodeProcess(Served):
    """``e2ee serve --cluster REDIS --node-id NAME`` on ``127.0.0.1:<free port>``."""

    def __init__(self, redis_url: str, node_id: str, data_dir: Path) -> None:
        self.redis_url = redis_url
        self.node_id = node_id
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout_lines: list[str] = []
        self._drain: threading.Thread | None = None

    def credentials(self) -> Credentials:
        return read_credentials(self.redis_url)

    @property
    def stderr_path(self) -> Path:
        return self.data_dir / f"{self.node_id}.stderr.txt"

    def start(self, timeout: float = 20.0) -> NodeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "e2ee",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir / self.node_id),
            "--cluster",
            self.redis_url,
            "--node-id",
            self.node_id,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", E2EE_ICE_ADDRESSES="127.0.0.1")
        stderr = open(self.stderr_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=str(REPO)
        )
        stderr.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        started = False
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode(errors="replace")
            if not line:
                break
            self.stdout_lines.append(line)
            if _LISTENING.search(line):
                started = True
                break
        if not started:
            self.kill()
            raise RuntimeError(
                f"node {self.node_id} did not start: {''.join(self.stdout_lines)}\n"
                f"{self.stderr_path.read_text(errors='replace')[-3000:]}"
            )
        self._drain = threading.Thread(target=self._drain_stdout, daemon=True)
        self._drain.start()
        self._wait_healthy(deadline)
        return self

    def _drain_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.stdout_lines.append(raw.decode(errors="replace"))

    def _wait_healthy(self, deadline: float) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            try:
                with opener.open(self.url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {self.node_id} never became healthy")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9``: no goodbye to clients, Redis or the other nodes."""
        self._end(signal.SIGKILL, 10.0)

    def stop(self, timeout: float = 10.0) -> None:
        self._end(signal.SIGTERM, timeout)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._drain is not None:
            self._drain.join(2)

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
