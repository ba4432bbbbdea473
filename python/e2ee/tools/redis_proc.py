"""A throwaway ``redis-server`` for ``e2ee demo --nodes`` and ``e2ee bench cluster``.

:class:`RedisProcess` runs the Debian package's server on a free loopback port, keeping
its files in a directory of the caller's (a temporary one), without persistence: it
lives as long as one demo or benchmark.  Readiness is a raw ``PING`` on a socket, so
starting it needs no Python client.  :func:`require_cluster_tools` is the one-line error
when the server or the ``redis`` package is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from e2ee.tools.cli_errors import CommandError

__all__ = [
    "ENV_BINARY",
    "RedisProcess",
    "free_port",
    "redis_server_binary",
    "require_cluster_tools",
]

#: Overrides where ``redis-server`` is (else ``/usr/bin/redis-server``, else ``$PATH``).
ENV_BINARY = "E2EE_REDIS_SERVER"
_DEBIAN = "/usr/bin/redis-server"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str | None:
    """The ``redis-server`` to run, or ``None`` if this machine has none."""
    explicit = os.environ.get(ENV_BINARY)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    if os.access(_DEBIAN, os.X_OK):
        return _DEBIAN
    return shutil.which("redis-server")


def require_cluster_tools(what: str) -> str:
    """The ``redis-server`` binary; fails with one line (:class:`CommandError`) if it or
    the ``redis`` package (the ``cluster`` extra, which the nodes need) is missing."""
    try:
        has_client = importlib.util.find_spec("redis") is not None
    except (ImportError, ValueError):
        has_client = False
    if not has_client:
        raise CommandError(
            f"{what} needs the Python package redis: pip install 'e2ee[cluster]' "
            "(pip install -e '.[cluster]' in a checkout)"
        )
    binary = redis_server_binary()
    if binary is None:
        raise CommandError(
            f"{what} needs redis-server on this machine: apt-get install redis-server "
            f"(or set {ENV_BINARY} to its path)"
        )
    return binary


class RedisProcess:
    """One ``redis-server`` on ``127.0.0.1:<free port>``, files in ``directory``."""

    def __init__(self, directory: Path, binary: str, *, port: int | None = None) -> None:
        self.directory = directory
        self.binary = binary
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """What ``e2ee serve --cluster`` takes."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        """Starts the server and returns once it answers ``PING``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
            # One run's state: no snapshots, no append-only file.
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        # Its own session: a Ctrl-C in the terminal reaches the command, which stops it.
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                log = self.log_path
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                self.proc = None
                raise CommandError(f"redis-server exited at start: {tail.strip()[-300:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise CommandError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.02)
        return self

    def ping(self, timeout: float = 0.5) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
