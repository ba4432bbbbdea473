"""A real ``redis-server`` (the Debian package) for the cluster tests, in a child process.

:class:`RedisServer` runs one on a free loopback port in its own directory and can stop it
(SIGTERM), kill it (SIGKILL) and start it again on the same port and directory, so tests
can take Redis away under a running cluster and give it back.  With ``appendonly=True``
(the default) every write is in the append-only file before Redis replies
(``appendfsync always``), so a restart, even after ``kill -9``, keeps the data; with
``appendonly=False`` a restart loses everything, which is how the tests make "Redis came
back empty" happen.

Nothing here needs the ``redis`` Python package: readiness is a raw ``PING`` on a socket,
so the helper also serves tests that run the server in other processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["REDIS_SERVER", "RedisServer", "redis_server_binary"]

#: Where Debian's ``redis-server`` package puts the server; ``$E2EE_REDIS_SERVER`` overrides.
REDIS_SERVER = "/usr/bin/redis-server"


def redis_server_binary() -> str | None:
    """The ``redis-server`` to run, or ``None`` if there is none on this machine."""
    explicit = os.environ.get("E2EE_REDIS_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    if os.access(REDIS_SERVER, os.X_OK):
        return REDIS_SERVER
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` on ``127.0.0.1:port`` keeping its files in ``directory``.

    ``start()`` returns once the server answers ``PING``; ``stop()`` sends SIGTERM (Redis
    flushes its append-only file and exits), ``kill()`` sends SIGKILL; ``restart()`` starts
    it again on the same port and directory.  The server's log is ``directory/redis.log``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        port: int | None = None,
        appendonly: bool = True,
        binary: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.appendonly = appendonly
        found = binary or redis_server_binary()
        if found is None:
            raise FileNotFoundError("redis-server not found (apt-get install redis-server)")
        self.binary = found
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, what ``e2ee serve --cluster`` takes."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            # Loopback only, no password: protected mode would refuse nothing here, but say
            # so explicitly so that a distribution default cannot surprise a test.
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            # Every write reaches the file before the reply: a kill -9 loses nothing.
            "--appendfsync",
            "always",
        ]

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Starts the server (if not running) and waits until it answers ``PING``."""
        if self.running:
            return self
        self.proc = subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not Redis
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                self.proc = None
                raise RuntimeError(f"redis-server exited at start: {err.strip()} {log[-800:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.02)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stderr:
            proc.stderr.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis finishes writing its append-only file and exits."""
        self._end(signal.SIGTERM, timeout)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL, as a crash: no goodbye to the clients (their sockets just close)."""
        self._end(signal.SIGKILL, timeout)

    def restart(self, *, appendonly: bool | None = None, kill: bool = False) -> RedisServer:
        """Stops (or kills) the server and starts it again on the same port and directory.
        ``appendonly=False`` starts it without loading the append-only file: it comes back
        empty."""
        (self.kill if kill else self.stop)()
        if appendonly is not None:
            self.appendonly = appendonly
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RedisServer(port={self.port}, {state}, dir={str(self.directory)!r})"
