"""The processes ``e2ee bench router`` starts, and what it reads of them in /proc.

* :class:`Server`: a real session server, ``e2ee.server.app.run`` on a free loopback port,
  in its own process (a launcher of the bench's own: with a profile path, cProfile is
  armed by SIGUSR1 and written by SIGUSR2; ``e2ee.server.app`` is unchanged);
* :class:`Worker`: a load generator, ``python -m e2ee.tools.bench.router_worker ROLE CFG``
  (:mod:`e2ee.tools.bench.router_worker`), driven over one JSON line per command;
* :class:`Rest`: the project-authenticated REST calls to that server, and
  :func:`start_session` (a server plus the one session a bench runs in) and
  :func:`stop_all`;
* :func:`pin`: CPU affinity (the router on one CPU, the load generators on the others);
* :func:`cpu_seconds`, :func:`runqueue_wait_seconds`, :func:`rss_bytes`,
  :func:`machine_times`, :func:`cpu_times`: a process's CPU time, its time waiting for a
  CPU, its resident memory, the machine's busy and idle time, and each CPU's.

All children get ``E2EE_ICE_ADDRESSES=127.0.0.1``, so WebRTC stays on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "Rest",
    "Server",
    "Worker",
    "cpu_seconds",
    "cpu_times",
    "machine_times",
    "pin",
    "rss_bytes",
    "runqueue_wait_seconds",
    "start_session",
    "stop_all",
]

ENV_ICE = {"E2EE_ICE_ADDRESSES": "127.0.0.1"}
_LISTENING = re.compile(r"listening on (http://[^\s]+)")
_CLK_TCK = os.sysconf("SC_CLK_TCK")

# The server in its own process.  With a profile path, cProfile is armed by SIGUSR1 and
# written by SIGUSR2 (this launcher only; e2ee.server.app is unchanged).  A third argument
# is a JSON object of ServerLimits fields (the router bench lifts the per-address limits:
# all its clients are on 127.0.0.1).
_SERVER_CODE = """\
import json, sys
profile_path = sys.argv[2] if len(sys.argv) > 2 else ""
limits = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
if profile_path:
    import cProfile, signal
    profiler = cProfile.Profile()
    def _start(*_):
        profiler.enable()
    def _stop(*_):
        profiler.disable()
        profiler.dump_stats(profile_path)
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
from e2ee.server.app import run
from e2ee.server.limits import ServerLimits
run(
    host="127.0.0.1",
    port=0,
    data_dir=sys.argv[1],
    limits=ServerLimits(**limits) if limits else None,
)
"""


# -- /proc -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def runqueue_wait_seconds(pid: int) -> float:
    """Time the process's main thread spent ready but waiting for a CPU (the second field
    of /proc/PID/schedstat, ns); 0 where the kernel does not keep it."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_times() -> dict[int, tuple[float, float]]:
    """CPU number -> (busy, idle) seconds, from the ``cpuN`` lines of /proc/stat."""
    out: dict[int, tuple[float, float]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        values = [int(v) for v in rest.split()]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        out[int(name[3:])] = ((sum(values[:8]) - idle) / _CLK_TCK, idle / _CLK_TCK)
    return out


def machine_times() -> tuple[float, float]:
    """(busy, idle) seconds of all CPUs together, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _CLK_TCK, idle / _CLK_TCK


# -- processes ---------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", **ENV_ICE)


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin ``pid`` to ``cpus`` (nothing to do without them, or where that is refused)."""
    if cpus:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(pid, cpus)


class Worker:
    """A load-generator process and its JSON-lines link."""

    def __init__(self, role: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.role = role
        self.proc = proc
        self.log_path = log_path
        self.subscribers = 0

    @classmethod
    async def start(
        cls, role: str, cfg: dict[str, Any], log_path: Path, cpus: set[int] | None, nice: int
    ) -> Worker:
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "e2ee.tools.bench.router_worker",
                role,
                json.dumps(cfg),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=_env(),
                limit=64 << 20,
                preexec_fn=(lambda: os.nice(nice)) if nice else None,
            )
        finally:
            log.close()
        pin(proc.pid, cpus)
        return cls(role, proc, log_path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"{self.role} worker: no answer in {timeout:.0f} s") from None
        if not line:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.role} worker exited:\n{tail}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"{self.role} worker: {reply.get('error')}")
        return reply

    async def call(self, cmd: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read(timeout)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def _listening_url(stdout: asyncio.StreamReader, timeout: float) -> str:
    """The server's URL from its ``listening on`` line ("" if it never comes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = await asyncio.wait_for(stdout.readline(), timeout)
        except TimeoutError:
            break
        if not line:
            break
        m = _LISTENING.search(line.decode(errors="replace"))
        if m:
            return m.group(1)
    return ""


class Server:
    """``e2ee.server.app.run`` in a child process on a free loopback port."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, data_dir: Path) -> None:
        self.proc = proc
        self.url = url
        self.data_dir = data_dir
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        data_dir: Path,
        cpus: set[int] | None,
        profile: Path | None,
        timeout: float = 30,
        limits: dict[str, Any] | None = None,
    ) -> Server:
        data_dir.mkdir(parents=True, exist_ok=True)
        log = open(data_dir / "stderr.txt", "ab")  # noqa: SIM115 - handed to the child
        args = [str(data_dir), str(profile or "")] + ([json.dumps(limits)] if limits else [])
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _SERVER_CODE,
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=_env(),
            )
        finally:
            log.close()
        pin(proc.pid, cpus)
        assert proc.stdout is not None
        url = await _listening_url(proc.stdout, timeout)
        server = cls(proc, url, data_dir)
        if not url:
            await server.stop()
            tail = (data_dir / "stderr.txt").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the server did not start:\n{tail}")
        server._drain = asyncio.create_task(server._drain_stdout())
        return server

    async def _drain_stdout(self) -> None:
        assert self.proc.stdout is not None
        while await self.proc.stdout.readline():
            pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    def credentials(self) -> tuple[str, str]:
        from e2ee.server.store import SQLiteStore

        store = SQLiteStore.in_data_dir(self.data_dir)
        try:
            creds = store.get_or_create_credentials_sync()
        finally:
            store.close_sync()
        return creds.api_key, creds.api_secret

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(BaseException):
                await self._drain


class Rest:
    """REST calls to a :class:`Server` with a fresh project auth token each (they live
    5 minutes, a bench longer), and the participant tokens it mints."""

    def __init__(self, server: Server) -> None:
        import aiohttp

        self.url = server.url
        self.api = server.credentials()
        self.http = aiohttp.ClientSession()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        from e2ee.server.tokens import project_auth_token

        headers = {"Authorization": f"Bearer {project_auth_token(*self.api)}"}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data

    def token(self, session_id: str, role: str, data: str = "") -> str:
        from e2ee.server.tokens import mint_token

        return mint_token(*self.api, session_id, role=role, data=data)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.http.close()


async def start_session(
    data_dir: Path,
    cpus: set[int] | None,
    profile: Path | None,
    options: dict[str, Any],
    limits: dict[str, Any] | None = None,
) -> tuple[Server, Rest, dict[str, Any]]:
    """A :class:`Server` (see :meth:`Server.start`; ``limits``: ServerLimits fields), its
    :class:`Rest` client and the session created with ``options`` (the
    ``POST /v1/sessions`` body)."""
    server = await Server.start(data_dir, cpus, profile, limits=limits)
    rest = Rest(server)
    try:
        session: dict[str, Any] = await rest.call("POST", "/v1/sessions", options)
    except BaseException:
        await rest.close()
        await server.stop()
        raise
    return server, rest, session


async def stop_all(workers: list[Worker], rest: Rest | None, server: Server | None) -> None:
    """Stops the load processes, then the REST client and the server (those started)."""
    await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
    if rest is not None:
        await rest.close()
    if server is not None:
        await server.stop()
