"""``e2ee bench router``: what the media router costs per forwarded packet, and how many
subscribers one router process holds at 30 fps.

::

    e2ee bench router [--publishers 1] [--subscribers 1,5,10,20,50] [--seconds 10]
                      [--json PATH] [--plot PATH.png] [--quick] [--profile PATH]

Set-up (all on loopback)
    A real session server (``e2ee.server.app.run`` on port 0, one :class:`e2ee.sfu.router.Router`
    per session) runs in its own process; the bench creates one E2EE session over REST
    with the project auth token.  P publisher processes and a few subscriber processes
    (:mod:`e2ee.tools.bench.router_worker`, at most ``--per-process`` subscribers each) join it
    over the signaling WebSocket: every publisher sends pre-encoded, pre-encrypted-at-send
    VP8 (640x480, 30 fps, ~1 Mbit/s) and Opus (50 frames/s); every subscriber subscribes
    to every publisher and counts, decrypts and timestamps frames without decoding.  On a
    machine with 2 or more CPUs the router is pinned to CPU 0 and every load generator to
    the other CPUs (``--no-pin``: no pinning, load generators at nice 10), so the router
    gets one core to itself and its figures are not the load generators' starvation.

Per step of S subscribers (added to those of the previous step, then a warm-up)
    * router CPU: utime+stime of the server process (all threads) from /proc/PID/stat
      over the measured window; share = CPU seconds / window (% of one core);
    * forwarded frames: the router's own counters (``frames_forwarded`` per subscription
      and track, read with ``GET /v1/sessions/{id}``, the REST view of ``Router.stats()``);
    * forwarded RTP packets: counted as they arrive at the subscribers (every RTP packet,
      RTX included; not the router's RTCP), cross-checked with an estimate from the
      received frame sizes (aiortc's VP8 packetizer: 1296 payload bytes per packet; Opus:
      one packet per frame);
    * CPU per forwarded packet and per forwarded frame = router CPU / those counts (the
      router's whole CPU: ingress from the publishers, RTCP and signaling included);
    * delivered video fps per subscriber, frames lost (gaps in the publishers' sequence
      numbers at the subscribers), added latency p50/p99 (publisher send -> subscriber
      frame complete, from a CLOCK_MONOTONIC stamp inside the encrypted payload),
      router RSS (/proc/PID/status), the load generators' CPU and the machine's idle time.

Stepping stops when the mean delivered video rate falls below 25 fps.  Progress goes to
stderr, a table to stdout, every figure with machine facts to ``--json``, CPU per packet
and delivered fps against S to ``--plot``.  ``--profile PATH`` runs the server under
cProfile (enabled only for an extra window after the last step, via SIGUSR1/SIGUSR2 in
the bench's own launcher) and writes pstats to PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2ee.tools.bench import _measure

__all__ = ["DEFAULT_SUBSCRIBERS", "TARGET_FPS", "main", "run"]

DEFAULT_SUBSCRIBERS = (1, 5, 10, 20, 50)
#: Stepping stops when the mean delivered video rate falls below this.
TARGET_FPS = 25.0
SOURCE_FPS = 30
#: The issue's target: 1 publisher to 50 subscribers, 30 fps, p99 < 50 ms, nothing lost.
TARGET = {"publishers": 1, "subscribers": 50, "fps": 30, "p99_ms": 50.0, "lost": 0}
ENV_ICE = {"E2EE_ICE_ADDRESSES": "127.0.0.1"}
_LISTENING = re.compile(r"listening on (http://[^\s]+)")
_CLK_TCK = os.sysconf("SC_CLK_TCK")

# The server in its own process.  With a profile path, cProfile is armed by SIGUSR1 and
# written by SIGUSR2 (this launcher only; e2ee.server.app is unchanged).
_SERVER_CODE = """\
import sys
profile_path = sys.argv[2] if len(sys.argv) > 2 else ""
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
run(host="127.0.0.1", port=0, data_dir=sys.argv[1])
"""


# -- /proc -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def machine_times() -> tuple[float, float]:
    """(busy, idle) seconds of all CPUs together, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _CLK_TCK, idle / _CLK_TCK


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[k])


# -- processes ---------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", **ENV_ICE)


def _pin(pid: int, cpus: set[int] | None) -> None:
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
        _pin(proc.pid, cpus)
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


class Server:
    """``e2ee.server.app.run`` in a child process on a free loopback port."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, data_dir: Path) -> None:
        self.proc = proc
        self.url = url
        self.data_dir = data_dir
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, data_dir: Path, cpus: set[int] | None, profile: Path | None, timeout: float = 30
    ) -> Server:
        data_dir.mkdir(parents=True, exist_ok=True)
        log = open(data_dir / "stderr.txt", "ab")  # noqa: SIM115 - handed to the child
        args = [str(data_dir)] + ([str(profile)] if profile else [])
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
        _pin(proc.pid, cpus)
        assert proc.stdout is not None
        url = ""
        deadline = time.monotonic() + timeout
        while not url and time.monotonic() < deadline:
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            except TimeoutError:
                break
            if not line:
                break
            m = _LISTENING.search(line.decode(errors="replace"))
            if m:
                url = m.group(1)
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


# -- the benchmark -----------------------------------------------------------------------


@dataclass
class Config:
    publishers: int = 1
    subscribers: tuple[int, ...] = DEFAULT_SUBSCRIBERS
    seconds: float = 10.0
    warmup: float = 3.0
    per_process: int = 10
    media_seconds: float = 10.0
    pin: bool = True
    profile: Path | None = None
    quick: bool = False
    join_timeout: float = 60.0


@dataclass
class Bench:
    cfg: Config
    tmp: Path
    server: Server | None = None
    publishers: list[Worker] = field(default_factory=list)
    subscribers: list[Worker] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    session: dict[str, Any] = field(default_factory=dict)
    api: tuple[str, str] = ("", "")
    router_cpus: set[int] | None = None
    load_cpus: set[int] | None = None
    http: Any = None
    secret: str = ""

    # -- REST ----------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        from e2ee.server.tokens import project_auth_token

        return {"Authorization": f"Bearer {project_auth_token(*self.api)}"}

    async def _rest(self, method: str, path: str, body: Any = None) -> Any:
        assert self.server is not None
        async with self.http.request(
            method, self.server.url + path, json=body, headers=self._auth()
        ) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data

    def _token(self, role: str) -> str:
        from e2ee.server.tokens import mint_token

        return mint_token(*self.api, self.session["id"], role=role)  # type: ignore[arg-type]

    async def router_stats(self) -> dict[str, Any]:
        body = await self._rest("GET", f"/v1/sessions/{self.session['id']}")
        router: dict[str, Any] = body.get("router") or {}
        return router

    # -- set-up --------------------------------------------------------------------------

    async def setup(self, progress: Any) -> dict[str, Any]:
        import aiohttp

        from e2ee.tools.bench.router_worker import prepare_media

        cfg = self.cfg
        cpus = sorted(os.sched_getaffinity(0))
        if cfg.pin and len(cpus) >= 2:
            self.router_cpus = {cpus[0]}
            self.load_cpus = set(cpus[1:])
            _pin(os.getpid(), self.load_cpus)  # the bench itself stays off the router's CPU
        media_path = self.tmp / "media.bin"
        progress("encoding the media loop (libvpx, libopus) ...")
        media = await asyncio.get_running_loop().run_in_executor(
            None, lambda: prepare_media(media_path, seconds=cfg.media_seconds)
        )
        media["path"] = str(media_path)
        self.server = await Server.start(self.tmp / "server", self.router_cpus, cfg.profile)
        self.api = self.server.credentials()
        self.http = aiohttp.ClientSession()
        self.session = await self._rest(
            "POST",
            "/v1/sessions",
            {
                "media_mode": "routed",
                "e2ee": True,
                # Key derivation only runs at join; the minimum keeps 50 joins quick.
                "kdf_iterations": 1000,
                "max_participants": 1000,
            },
        )
        self.secret = secrets.token_urlsafe(18)
        progress(f"server pid {self.server.pid} at {self.server.url}, session {self.session['id']}")
        for i in range(cfg.publishers):
            worker = await Worker.start(
                "publisher",
                {
                    **self._base_cfg(),
                    "token": self._token("publisher"),
                    "media": str(media_path),
                    "name": f"bench-publisher-{i}",
                },
                self.tmp / f"publisher{i}.log",
                self.load_cpus,
                0 if self.load_cpus else 10,
            )
            self.publishers.append(worker)
            reply = await worker.read(60)
            self.streams.append(reply["stream_id"])
        progress(f"{cfg.publishers} publisher(s) sending: streams {', '.join(self.streams)}")
        return media

    def _base_cfg(self) -> dict[str, Any]:
        return {
            "url": self.server.url if self.server else "",
            "session_id": self.session["id"],
            "suite": self.session["suite"],
            "kdf_iterations": self.session["kdf_iterations"],
            "secret": self.secret,
        }

    async def grow(self, target: int) -> dict[str, Any]:
        """Add subscribers until there are ``target``; returns join figures."""
        started = time.monotonic()
        have = sum(w.subscribers for w in self.subscribers)
        plan: list[tuple[Worker, int]] = []
        need = target - have
        for worker in self.subscribers:
            room = self.cfg.per_process - worker.subscribers
            if need > 0 and room > 0:
                n = min(room, need)
                plan.append((worker, n))
                need -= n
        while need > 0:
            worker = await Worker.start(
                "subscriber",
                self._base_cfg(),
                self.tmp / f"subscriber{len(self.subscribers)}.log",
                self.load_cpus,
                0 if self.load_cpus else 10,
            )
            await worker.read(60)
            self.subscribers.append(worker)
            n = min(self.cfg.per_process, need)
            plan.append((worker, n))
            need -= n
        replies = await asyncio.gather(
            *(
                w.call(
                    {
                        "cmd": "add",
                        "tokens": [self._token("subscriber") for _ in range(n)],
                        "streams": self.streams,
                        "timeout": self.cfg.join_timeout,
                    },
                    timeout=self.cfg.join_timeout + 60,
                )
                for w, n in plan
            )
        )
        for (w, n), _reply in zip(plan, replies, strict=True):
            w.subscribers += n
        return {
            "join_s": round(time.monotonic() - started, 3),
            "not_receiving": sum(r["not_receiving"] for r in replies),
        }

    # -- one measured window ---------------------------------------------------------------

    async def measure(self, seconds: float) -> dict[str, Any]:
        assert self.server is not None
        workers = self.publishers + self.subscribers
        await asyncio.gather(*(w.call({"cmd": "mark"}) for w in self.subscribers))
        stats0 = await self.router_stats()
        m0 = machine_times()
        t0 = time.monotonic()
        cpu0 = cpu_seconds(self.server.pid)
        gen0 = sum(cpu_seconds(w.pid) for w in workers)
        await asyncio.sleep(seconds)
        cpu1 = cpu_seconds(self.server.pid)
        gen1 = sum(cpu_seconds(w.pid) for w in workers)
        t1 = time.monotonic()
        m1 = machine_times()
        rss = rss_bytes(self.server.pid)
        stats1 = await self.router_stats()
        reports = await asyncio.gather(
            *(w.call({"cmd": "report"}, timeout=120) for w in self.subscribers)
        )
        pubs = await asyncio.gather(*(w.call({"cmd": "report"}) for w in self.publishers))
        return _figures(
            window=t1 - t0,
            router_cpu=cpu1 - cpu0,
            gen_cpu=gen1 - gen0,
            machine=(m1[0] - m0[0], m1[1] - m0[1]),
            rss=rss,
            stats0=stats0,
            stats1=stats1,
            reports=reports,
            publishers=pubs,
        )

    async def close(self) -> None:
        await asyncio.gather(
            *(w.stop() for w in self.subscribers + self.publishers), return_exceptions=True
        )
        if self.http is not None:
            await self.http.close()
        if self.server is not None:
            await self.server.stop()


def _forwarded(stats: dict[str, Any]) -> dict[str, int]:
    """Frames forwarded by kind, summed over the live subscriptions' tracks."""
    out = {"video": 0, "audio": 0}
    for sub in (stats.get("subscriptions") or {}).values():
        for track in sub.get("tracks", {}).values():
            out[track.get("kind", "video")] += int(track.get("frames_forwarded", 0))
    return out


def _figures(
    *,
    window: float,
    router_cpu: float,
    gen_cpu: float,
    machine: tuple[float, float],
    rss: int,
    stats0: dict[str, Any],
    stats1: dict[str, Any],
    reports: list[dict[str, Any]],
    publishers: list[dict[str, Any]],
) -> dict[str, Any]:
    f0, f1 = _forwarded(stats0), _forwarded(stats1)
    fwd = {k: f1[k] - f0[k] for k in f0}
    fwd_total = fwd["video"] + fwd["audio"]
    receivers = [rx for r in reports for rx in r["receivers"]]
    video = [rx for rx in receivers if rx["kind"] == "video"]
    audio = [rx for rx in receivers if rx["kind"] == "audio"]
    windows = [r["window_s"] for r in reports] or [window]
    sub_window = sum(windows) / len(windows)
    fps = sorted(rx["frames"] / sub_window for rx in video)
    afps = sorted(rx["frames"] / sub_window for rx in audio)
    packets = sum(rx["packets"] for rx in receivers)
    estimate = sum(rx["packets_estimate"] for rx in receivers)
    lat: dict[str, dict[str, float]] = {}
    for kind in ("video", "audio"):
        values = sorted(v for r in reports for v in r["latencies_us"][kind])
        lat[kind] = {
            "n": len(values),
            "p50_ms": percentile(values, 50) / 1000,
            "p90_ms": percentile(values, 90) / 1000,
            "p99_ms": percentile(values, 99) / 1000,
            "max_ms": (values[-1] / 1000) if values else math.nan,
        }
    busy, idle = machine
    ncpu = os.cpu_count() or 1
    return {
        "window_s": round(window, 3),
        "router": {
            "cpu_s": round(router_cpu, 3),
            "cpu_percent_of_one_core": round(100 * router_cpu / window, 1),
            "rss_mb": round(rss / 2**20, 1),
            "frames_forwarded": {**fwd, "total": fwd_total},
            "frames_received": int(stats1.get("frames_received", 0))
            - int(stats0.get("frames_received", 0)),
            "bytes_forwarded": int(stats1.get("bytes_forwarded", 0))
            - int(stats0.get("bytes_forwarded", 0)),
            "frames_dropped": int(stats1.get("frames_dropped", 0))
            - int(stats0.get("frames_dropped", 0)),
            "keyframe_requests": int(stats1.get("keyframe_requests", 0))
            - int(stats0.get("keyframe_requests", 0)),
            "frames_decoded": int(stats1.get("frames_decoded", 0)),
        },
        "packets_forwarded": packets,
        "packets_forwarded_estimate": estimate,
        "packets_per_s": round(packets / window, 1),
        "cpu_per_packet_us": round(1e6 * router_cpu / packets, 2) if packets else None,
        "cpu_per_frame_us": round(1e6 * router_cpu / fwd_total, 2) if fwd_total else None,
        "delivered_fps": {
            "mean": round(sum(fps) / len(fps), 2) if fps else 0.0,
            "min": round(fps[0], 2) if fps else 0.0,
            "max": round(fps[-1], 2) if fps else 0.0,
        },
        "audio_fps": {
            "mean": round(sum(afps) / len(afps), 2) if afps else 0.0,
            "min": round(afps[0], 2) if afps else 0.0,
        },
        "latency": {k: {n: round(v, 2) for n, v in d.items()} for k, d in lat.items()},
        "frames_lost": {
            "video": sum(rx["lost"] for rx in video),
            "audio": sum(rx["lost"] for rx in audio),
        },
        "frames_received_by_subscribers": {
            "video": sum(rx["frames"] for rx in video),
            "audio": sum(rx["frames"] for rx in audio),
        },
        "decrypt_errors": sum(rx["errors"] for rx in receivers),
        "incomplete_frames": sum(rx["incomplete"] for rx in receivers),
        "load_generators": {
            "cpu_s": round(gen_cpu, 3),
            "cpu_percent_of_one_core": round(100 * gen_cpu / window, 1),
            "subscriber_processes": len(reports),
            "publisher_processes": len(publishers),
        },
        "machine": {
            "cpus": ncpu,
            "busy_percent": round(100 * busy / max(busy + idle, 1e-9), 1),
            # CPU used by anything but the router and the load generators (the bench
            # process itself, the kernel's softirq work, other programs), % of one core.
            "other_cpu_percent_of_one_core": round(
                100 * max(0.0, busy - router_cpu - gen_cpu) / window, 1
            ),
        },
        "publishers": publishers,
    }


# -- output ------------------------------------------------------------------------------

_COLUMNS = (
    ("S", 4),
    ("router CPU %", 12),
    ("µs/packet", 10),
    ("µs/frame", 9),
    ("packets/s", 10),
    ("fps mean/min", 13),
    ("lat p50 ms", 10),
    ("lat p99 ms", 10),
    ("lost v/a", 9),
    ("RSS MB", 7),
    ("gen CPU %", 9),
)


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"e2ee bench router: {report['config']['publishers']} publisher(s), VP8 "
        f"{report['media']['width']}x{report['media']['height']} @ {report['media']['fps']} fps "
        f"~{report['media']['video_bitrate_bps'] / 1e6:.2f} Mbit/s + Opus 50/s, "
        f"{report['config']['seconds']:g} s per step; "
        f"router pinned to CPU {report['pinning']['router_cpus'] or 'none'}",
        "  ".join(name.rjust(width) for name, width in _COLUMNS),
    ]
    for step in report["steps"]:
        r = step["router"]
        lat = step["latency"]["video"]
        fps = step["delivered_fps"]
        row = (
            str(step["subscribers"]),
            _fmt(r["cpu_percent_of_one_core"]),
            _fmt(step["cpu_per_packet_us"]),
            _fmt(step["cpu_per_frame_us"]),
            _fmt(step["packets_per_s"], 0),
            f"{fps['mean']:.1f}/{fps['min']:.1f}",
            _fmt(lat["p50_ms"]),
            _fmt(lat["p99_ms"]),
            f"{step['frames_lost']['video']}/{step['frames_lost']['audio']}",
            _fmt(r["rss_mb"], 0),
            _fmt(step["load_generators"]["cpu_percent_of_one_core"], 0),
        )
        lines.append("  ".join(v.rjust(w) for v, (_, w) in zip(row, _COLUMNS, strict=True)))
    lines.append(f"stopped: {report['stopped']}")
    t = report["target"]
    lines.append(
        f"target (1 publisher -> 50 subscribers, 30 fps, p99 < 50 ms, no loss): "
        f"{'MET' if t['met'] else 'NOT MET'} ({t['detail']})"
    )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = report["steps"]
    xs = [s["subscribers"] for s in steps]
    per_packet = [s["cpu_per_packet_us"] or math.nan for s in steps]
    per_frame = [s["cpu_per_frame_us"] or math.nan for s in steps]
    fps_mean = [s["delivered_fps"]["mean"] for s in steps]
    fps_min = [s["delivered_fps"]["min"] for s in steps]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    ax1.plot(xs, per_packet, marker="o", label="router CPU per forwarded RTP packet")
    ax1.plot(xs, per_frame, marker="s", label="router CPU per forwarded frame")
    ax1.set_xscale("log")
    ax1.set_xlabel("subscribers per publisher (S)")
    ax1.set_ylabel("µs of router CPU")
    ax1.set_title("Router CPU per forwarded packet / frame")
    ax1.set_ylim(bottom=0)
    ax2.plot(xs, fps_mean, marker="o", label="mean over subscribers")
    ax2.plot(xs, fps_min, marker="v", label="slowest subscriber")
    ax2.axhline(SOURCE_FPS, color="grey", linestyle=":", label="source 30 fps")
    ax2.axhline(TARGET_FPS, color="red", linestyle="--", label="stop below 25 fps")
    ax2.set_xscale("log")
    ax2.set_xlabel("subscribers per publisher (S)")
    ax2.set_ylabel("video frames/s per subscriber")
    ax2.set_title("Delivered video frame rate")
    ax2.set_ylim(0, SOURCE_FPS * 1.15)
    for ax in (ax1, ax2):
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.tick_params(axis="x", which="minor", labelbottom=False)
        ax.grid(True, alpha=0.35)
        ax.legend(fontsize="small")
    cpu = report["machine"]["cpu"]["model"]
    fig.suptitle(
        f"e2ee bench router: {report['config']['publishers']} publisher(s), "
        f"{report['config']['seconds']:g} s per step ({cpu})",
        fontsize="medium",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _target(steps: list[dict[str, Any]], publishers: int) -> dict[str, Any]:
    at = [s for s in steps if s["subscribers"] >= TARGET["subscribers"]]
    if publishers != TARGET["publishers"] or not at:
        reached = max((s["subscribers"] for s in steps), default=0)
        return {
            "met": False,
            "detail": f"not measured (P={publishers}, largest S={reached})",
        }
    s = at[0]
    p99 = s["latency"]["video"]["p99_ms"]
    lost = s["frames_lost"]["video"] + s["frames_lost"]["audio"]
    fps = s["delivered_fps"]["min"]
    cpu = s["router"]["cpu_percent_of_one_core"]
    met = fps >= SOURCE_FPS - 1 and p99 < TARGET["p99_ms"] and lost == 0 and cpu < 100
    return {
        "met": met,
        "detail": f"S={s['subscribers']}: min fps {fps:.1f}, p99 {p99:.1f} ms, lost {lost}, "
        f"router CPU {cpu:.0f}% of one core",
    }


def _profile_summary(path: Path, top: int = 40) -> list[dict[str, Any]]:
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(filename).name}:{line}({name})",
                "path": filename,
                "calls": nc,
                "tottime_s": round(tt, 4),
                "cumtime_s": round(ct, 4),
                "tottime_share": round(tt / total, 4) if total else None,
            }
        )
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    return rows[:top]


# -- driver ------------------------------------------------------------------------------


async def run(cfg: Config, progress: Any = None) -> dict[str, Any]:
    """Runs the benchmark; returns the report (see the module docstring)."""
    say = progress or (lambda msg: print(f"[bench router] {msg}", file=sys.stderr, flush=True))
    tmp = Path(tempfile.mkdtemp(prefix="e2ee-bench-router-"))
    bench = Bench(cfg, tmp)
    steps: list[dict[str, Any]] = []
    stopped = "all steps done"
    profile: dict[str, Any] | None = None
    started = _measure.now_iso()
    try:
        media = await bench.setup(say)
        for s in cfg.subscribers:
            joined = await bench.grow(s)
            say(
                f"S={s}: {s} subscriber(s) x {cfg.publishers} publisher(s) joined in "
                f"{joined['join_s']:.1f} s; warming up {cfg.warmup:g} s"
            )
            await asyncio.sleep(cfg.warmup)
            step = await bench.measure(cfg.seconds)
            step = {"subscribers": s, "publishers": cfg.publishers, **joined, **step}
            steps.append(step)
            r = step["router"]
            say(
                f"S={s}: router {r['cpu_percent_of_one_core']:.0f}% of a core, "
                f"{_fmt(step['cpu_per_packet_us'])} µs/packet, "
                f"{_fmt(step['cpu_per_frame_us'])} µs/frame, "
                f"video {step['delivered_fps']['mean']:.1f} fps (min "
                f"{step['delivered_fps']['min']:.1f}), p50/p99 "
                f"{_fmt(step['latency']['video']['p50_ms'])}/"
                f"{_fmt(step['latency']['video']['p99_ms'])} ms, lost "
                f"{step['frames_lost']['video']}/{step['frames_lost']['audio']}, "
                f"RSS {r['rss_mb']:.0f} MB, load generators "
                f"{step['load_generators']['cpu_percent_of_one_core']:.0f}% CPU, machine "
                f"{step['machine']['busy_percent']:.0f}% busy"
            )
            if step["delivered_fps"]["mean"] < TARGET_FPS:
                stopped = (
                    f"mean delivered video rate {step['delivered_fps']['mean']:.1f} fps "
                    f"< {TARGET_FPS:g} at S={s}"
                )
                break
        if cfg.profile is not None and bench.server is not None:
            say(f"profiling the router for {cfg.seconds:g} s (cProfile) ...")
            bench.server.signal(signal.SIGUSR1)
            await asyncio.sleep(cfg.seconds)
            bench.server.signal(signal.SIGUSR2)
            await asyncio.sleep(1.0)
            subs = sum(w.subscribers for w in bench.subscribers)
            profile = {"path": str(cfg.profile), "subscribers": subs, "seconds": cfg.seconds}
            with contextlib.suppress(OSError, ValueError, TypeError):
                profile["top_tottime"] = _profile_summary(cfg.profile)
    finally:
        await bench.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report: dict[str, Any] = {
        "benchmark": "router",
        "started": started,
        "machine": _measure.machine_info(),
        "config": {
            "publishers": cfg.publishers,
            "subscribers": list(cfg.subscribers),
            "seconds": cfg.seconds,
            "warmup_s": cfg.warmup,
            "subscribers_per_process": cfg.per_process,
            "quick": cfg.quick,
        },
        "pinning": {
            "router_cpus": sorted(bench.router_cpus) if bench.router_cpus else None,
            "load_generator_cpus": sorted(bench.load_cpus) if bench.load_cpus else None,
            "load_generator_nice": 0 if bench.load_cpus else 10,
        },
        "media": media,
        "method": {
            "router_cpu": "utime+stime of the server process (all threads), /proc/PID/stat",
            "frames_forwarded": "router stats (GET /v1/sessions/{id}), per subscription track",
            "packets_forwarded": "RTP packets (RTX included) counted on arrival at the "
            "subscribers; estimate from frame sizes in packets_forwarded_estimate",
            "latency": "publisher CLOCK_MONOTONIC stamp inside the encrypted payload -> "
            "frame complete at the subscriber (marker packet in, no decode)",
            "lost": "gaps in the publishers' per-track frame sequence numbers at each "
            "subscriber during the window",
        },
        "steps": steps,
        "stopped": stopped,
        "target": {**TARGET, **_target(steps, cfg.publishers)},
        "profile": profile,
    }
    return report


def _subscriber_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError("subscriber counts must be increasing and positive")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="e2ee bench router",
        description="Router CPU per forwarded packet, delivered fps and added latency "
        "against the number of subscribers (a real server and separate load processes, "
        "all on loopback).",
    )
    p.add_argument("--publishers", type=int, default=1, help="publishers (1)")
    p.add_argument(
        "--subscribers",
        type=_subscriber_list,
        default=DEFAULT_SUBSCRIBERS,
        help="subscriber counts to step through (1,5,10,20,50)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per step (10)")
    p.add_argument("--warmup", type=float, help="seconds before each measurement (3)")
    p.add_argument("--per-process", type=int, default=10, help="subscribers per process (10)")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--plot", type=Path, help="write a PNG: CPU per packet and fps against S")
    p.add_argument("--quick", action="store_true", help="smoke test: P=1, S=1,2, ~1 s each")
    p.add_argument("--no-pin", action="store_true", help="do not pin the router to one CPU")
    p.add_argument("--profile", type=Path, help="cProfile the router after the last step")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.publishers < 1 or args.per_process < 1 or args.seconds <= 0:
        print("e2ee bench router: counts and durations must be positive", file=sys.stderr)
        return 2
    cfg = Config(
        publishers=args.publishers,
        subscribers=args.subscribers,
        seconds=args.seconds,
        warmup=3.0 if args.warmup is None else args.warmup,
        per_process=args.per_process,
        pin=not args.no_pin,
        profile=args.profile,
    )
    if args.quick:
        cfg.publishers, cfg.subscribers, cfg.seconds, cfg.quick = 1, (1, 2), 1.0, True
        cfg.warmup = 0.5 if args.warmup is None else args.warmup
        cfg.media_seconds = 2.0
        cfg.join_timeout = 30.0
    report = asyncio.run(run(cfg))
    print(format_table(report))
    if args.json:
        _measure.write_json(args.json, _json_safe(report))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _json_safe(value: Any) -> Any:
    """NaN (no samples) becomes null: the JSON writer refuses NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
