"""A throwaway ``redis-server`` for ``e2ee demo --nodes``, ``e2ee bench cluster`` and the
cluster tests.

:class:`RedisProcess` runs the Debian package's server on a free loopback port, keeping
its files in a directory of the caller's (a temporary one).  By default without
persistence: it lives as long as one demo or benchmark.  The tests take Redis away under
a running cluster and give it back: :meth:`~RedisProcess.kill` is ``kill -9``,
:meth:`~RedisProcess.restart` starts it again on the same port and directory, and with
``appendonly=True`` every write is in the append-only file before Redis replies
(``appendfsync always``), so the data survive even a ``kill -9``; a restart with
``appendonly=False`` comes back empty.  Readiness is a raw ``PING`` on a socket, so
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
    "end_process",
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


def end_process(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> int:
    """Sends ``sig`` to ``proc`` unless it has exited, SIGKILL if it is still there after
    ``timeout`` seconds; its exit status.  (Also how the tests end their servers.)"""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


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
    """One ``redis-server`` on ``127.0.0.1:<free port>``, files in ``directory``.

    ``binary``: the server to run (default :func:`redis_server_binary`).  Its log is
    ``directory/redis.log``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        binary: str | None = None,
        *,
        port: int | None = None,
        appendonly: bool = False,
    ) -> None:
        self.directory = Path(directory)
        found = binary or redis_server_binary()
        if found is None:
            raise CommandError(
                f"redis-server not found: apt-get install redis-server (or set {ENV_BINARY})"
            )
        self.binary = found
        self.port = port or free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """What ``e2ee serve --cluster`` takes."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            # Loopback only and no password, where protected mode refuses nothing; said
            # explicitly so that a distribution's default cannot change that.
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
            # No snapshots; the append-only file only if asked for, and then every write
            # reaches it before the reply, so a kill -9 loses nothing.
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
        ]

    def start(self, timeout: float = 10.0) -> RedisProcess:
        """Starts the server (if not running) and returns once it answers ``PING``."""
        if self.running:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        # Its own session: a Ctrl-C in the terminal reaches the command (or pytest),
        # which stops it.
        self.proc = subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log_path
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                self._end(signal.SIGKILL, timeout)  # reaped; closes the pipe
                why = f"{err.strip()} {tail.strip()}".strip()[-300:]
                raise CommandError(f"redis-server exited at start: {why}")
            if time.monotonic() > deadline:
                self.kill()
                raise CommandError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.02)
        return self

    def ping(self, timeout: float = 0.5) -> bool:
        """Whether the server answers ``PING`` (a raw RESP exchange, no client library)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        end_process(proc, sig, timeout)
        if proc.stderr:
            proc.stderr.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis finishes writing its append-only file), SIGKILL after
        ``timeout``."""
        self._end(signal.SIGTERM, timeout)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL, as a crash: no goodbye to the clients (their sockets just close)."""
        self._end(signal.SIGKILL, timeout)

    def restart(self, *, appendonly: bool | None = None, kill: bool = False) -> RedisProcess:
        """Stops (or kills) the server and starts it again on the same port and
        directory; ``appendonly=False`` starts it without loading the append-only file,
        so it comes back empty."""
        (self.kill if kill else self.stop)()
        if appendonly is not None:
            self.appendonly = appendonly
        return self.start()

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RedisProcess(port={self.port}, {state}, dir={str(self.directory)!r})"
