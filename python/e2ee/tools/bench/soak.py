"""``e2ee bench soak``: many participants joining, publishing, subscribing, leaving and
misbehaving for minutes against one real server, on loopback in a network namespace.

::

    e2ee bench soak [--honest 50] [--abusive 10] [--minutes 10 | --seconds S]
                    [--json] [--out FILE] [--fps 10] [--audio] ...

One session server (``e2ee.server.app.run``, its own process) and one end-to-end
encrypted session.  Honest participants (:mod:`e2ee.tools.bench.soak_clients`, Python
clients in load processes of ``--per-process`` each) come in pairs that publish
pre-encoded VP8 (160x120, ``--fps``) to each other; a share of them (``--churn``) leave
and rejoin every ``--churn-every`` seconds or so.  Abusive participants
(:mod:`e2ee.tools.bench.soak_abuse`, one process) rotate through signal floods,
unanswered subscriptions, publish churn, oversized SDP and messages, reconnect loops
with one token and slowloris HTTP.

Measured (:mod:`e2ee.tools.bench.soak_report`): join latency; per honest pair the
longest gap between two decrypted, decoded frames; the server's RSS, open files and CPU
from ``/proc/PID`` every ``--sample-every`` seconds; the server's event-loop lag, read
from its ``GET /v1/metrics`` (:class:`e2ee.server.looplag.LoopLagProbe`); every refusal the
abusive ones got, by kind.  Progress every ``--progress-every`` seconds to stderr; a
Markdown table to stdout (``--json``: the report as JSON instead), the JSON report to
``--out``.

Network namespace: run as root where ``unshare --net`` works and the command re-runs
itself in a namespace whose only interface is loopback (``--no-netns``: stay on the host;
WebRTC is pinned to 127.0.0.1 either way).  By hand::

    unshare --net -- bash -c 'ip link set lo up && e2ee bench soak --minutes 10'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from e2ee.tools.bench import _measure
from e2ee.tools.bench.netns import rerun_in_netns
from e2ee.tools.bench.router_processes import (
    ENV_ICE,
    Rest,
    Server,
    Worker,
    cpu_seconds,
    machine_times,
    pin,
    rss_bytes,
    start_session,
    stop_all,
)
from e2ee.tools.bench.router_report import json_safe
from e2ee.tools.bench.soak_report import format_table, summarize

__all__ = ["Config", "main", "run"]

#: Set in the re-run inside the network namespace (never re-run twice).
_NETNS_ENV = "E2EE_SOAK_NETNS"
#: Seconds the honest participants get to join before the run starts anyway.
JOIN_TIMEOUT = 120.0


@dataclass
class Config:
    honest: int = 50
    abusive: int = 10
    seconds: float = 600.0
    warmup: float | None = None  # default min(90, seconds / 3)
    fps: int = 10
    audio: bool = False
    per_process: int = 10
    churn: float = 0.2
    churn_every: float = 60.0
    abuse_phase: float = 20.0
    sample_every: float = 5.0
    progress_every: float = 10.0
    kdf_iterations: int = 1000
    keep: bool = False  # keep the temporary directory (logs, the server's stderr)
    #: The server on a CPU of its own, every load process (and this one) on the others,
    #: as ``e2ee bench router`` pins the router: the lag measured is then the server's,
    #: not its wait for a CPU that 50 clients hold.
    pin: bool = True

    @property
    def warmup_s(self) -> float:
        return min(90.0, self.seconds / 3) if self.warmup is None else self.warmup


@dataclass
class _Run:
    cfg: Config
    tmp: Path
    say: Any
    server: Server | None = None
    rest: Rest | None = None
    session: dict[str, Any] = field(default_factory=dict)
    honest: list[Worker] = field(default_factory=list)
    abusive: list[Worker] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    lags: list[tuple[float, float, float]] = field(default_factory=list)
    lag_seen: int = 0
    #: The server's garbage-collector pauses: (t, generation, wall ms, cpu ms).
    gc_pauses: list[tuple[float, int, float, float]] = field(default_factory=list)
    gc_seen: int = 0
    t0: float = 0.0
    server_cpus: set[int] | None = None
    load_cpus: set[int] | None = None
    affinity: dict[str, list[int]] = field(default_factory=dict)

    def plan_pinning(self) -> None:
        """The last usable CPU for the server, the others for the load (this process
        first, so what it starts inherits them); nothing with one CPU or ``pin`` off."""
        cpus = sorted(os.sched_getaffinity(0))
        if not self.cfg.pin or len(cpus) < 2:
            return
        self.server_cpus, self.load_cpus = {cpus[-1]}, set(cpus[:-1])
        pin(os.getpid(), self.load_cpus)

    # -- server and session --------------------------------------------------------------

    async def setup(self) -> Path:
        from e2ee.tools.bench.router_worker.media import prepare_media

        cfg = self.cfg
        media = self.tmp / "media.bin"
        await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: prepare_media(
                media,
                seconds=4.0,
                width=160,
                height=120,
                fps=cfg.fps,
                bitrate=150_000,
                gop=2 * cfg.fps,
            ),
        )
        self.server, self.rest, self.session = await start_session(
            self.tmp / "server",
            self.server_cpus,
            None,
            {
                "media_mode": "routed",
                "e2ee": True,
                "kdf_iterations": cfg.kdf_iterations,
                "max_participants": cfg.honest + cfg.abusive,
            },
        )
        self.say(f"server pid {self.server.pid} at {self.server.url}, session {self.session['id']}")
        if self.server_cpus:
            self.affinity = {
                "server": sorted(os.sched_getaffinity(self.server.pid)),
                "load": sorted(os.sched_getaffinity(0)),
            }
            self.say(f"CPUs: server {self.affinity['server']}, load {self.affinity['load']}")
        return media

    def _token(self, name: str) -> str:
        assert self.rest is not None
        return self.rest.token(self.session["id"], "publisher", data=name)

    # -- load processes ------------------------------------------------------------------

    async def _worker(self, role: str, index: int, cfg: dict[str, Any]) -> Worker:
        path = self.tmp / f"{role}{index}.json"
        path.write_text(json.dumps(cfg))
        log_path = self.tmp / f"{role}{index}.log"
        command = [sys.executable, "-m", "e2ee.tools.bench.soak_worker", role, str(path)]
        pipe = asyncio.subprocess.PIPE
        env = dict(os.environ, PYTHONUNBUFFERED="1", **ENV_ICE)
        with open(log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=pipe, stdout=pipe, stderr=log, env=env, limit=1 << 24
            )
        pin(proc.pid, self.load_cpus)
        worker = Worker(role, proc, log_path)
        await worker.read(120)
        return worker

    def _base(self) -> dict[str, Any]:
        assert self.server is not None
        return {
            "url": self.server.url,
            "session_id": self.session["id"],
            "kdf_iterations": self.session["kdf_iterations"],
        }

    async def start_workers(self, media: Path, secret: str) -> None:
        cfg = self.cfg
        n = cfg.honest
        people = [
            {
                "name": f"h{i}",
                "partner": f"h{i ^ 1 if i ^ 1 < n else 0}",
                "token": self._token(f"h{i}"),
                # Every 1/churn-th participant (spread over the pairs) leaves and rejoins.
                "churns": math.floor((i + 1) * cfg.churn) > math.floor(i * cfg.churn),
            }
            for i in range(n)
        ]
        honest_cfg = {
            **self._base(),
            "secret": secret,
            "media": str(media),
            "fps": cfg.fps,
            "audio": cfg.audio,
            "churn_every": cfg.churn_every,
        }
        for k in range(0, n, cfg.per_process):
            part = {**honest_cfg, "participants": people[k : k + cfg.per_process], "seed": k}
            self.honest.append(await self._worker("honest", k // cfg.per_process, part))
        if cfg.abusive:
            abusers = [{"index": i, "token": self._token(f"abuser{i}")} for i in range(cfg.abusive)]
            abuse_cfg = {
                **self._base(),
                "abusers": abusers,
                "abuse_phase": cfg.abuse_phase,
                "seconds": cfg.seconds + 3600,
            }
            self.abusive.append(await self._worker("abusive", 0, abuse_cfg))
        self.say(
            f"{n} honest participant(s) in {len(self.honest)} process(es) joining, "
            f"{cfg.abusive} abusive"
        )

    async def wait_joined(self, timeout: float) -> None:
        """Until every honest participant has joined once (or ``timeout``); the run's
        clock starts then."""
        started = time.monotonic()
        joined = 0
        while time.monotonic() - started < timeout:
            st = await asyncio.gather(*(w.call({"cmd": "status"}) for w in self.honest))
            joined = sum(x["joins"] for x in st)
            if joined >= self.cfg.honest:
                break
            await asyncio.sleep(0.5)
        self.t0 = time.monotonic()
        self.say(
            f"{joined}/{self.cfg.honest} honest participants joined in "
            f"{self.t0 - started:.1f} s; running {self.cfg.seconds:g} s"
        )

    # -- sampling --------------------------------------------------------------------------

    async def sample(self) -> dict[str, Any]:
        assert self.server is not None
        pid = self.server.pid
        t = round(time.monotonic() - self.t0, 2)
        s: dict[str, Any] = {
            "t": t,
            "rss_mb": round(rss_bytes(pid) / 2**20, 1),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "cpu_s": round(cpu_seconds(pid), 2),
        }
        try:
            assert self.rest is not None
            body = await self.rest.call(
                "GET", f"/v1/metrics?since={self.lag_seen}&gc_since={self.gc_seen}"
            )
            gcp = body.get("gc")
            if gcp is not None:
                self.gc_seen = gcp["count"]
                self.gc_pauses.extend((t, g, wall, cpu) for g, wall, cpu in gcp["recent"])
            lag = body["loop_lag"]
            self.lag_seen = lag["count"]
            new = lag["recent_ms"]
            shares = lag.get("recent_cpu_share") or [1.0] * len(new)
            self.lags.extend((t, ms, share) for ms, share in zip(new, shares, strict=False))
            s["lag_max_ms"] = max(new, default=None)
        except (OSError, RuntimeError, KeyError, ValueError, TimeoutError) as exc:
            s["metrics_error"] = f"{type(exc).__name__}: {exc}"[:120]
        self.samples.append(s)
        return s

    async def sampler(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.cfg.sample_every)

    async def progress(self) -> None:
        from e2ee.tools.bench.soak_report import distribution

        shown = 0
        while True:
            await asyncio.sleep(self.cfg.progress_every)
            st = await asyncio.gather(*(w.call({"cmd": "status"}) for w in self.honest))
            ab = await asyncio.gather(*(w.call({"cmd": "status"}) for w in self.abusive))
            last = self.samples[-1] if self.samples else {}
            lag = distribution([ms for _, ms, _ in self.lags[shown:]])
            shown = len(self.lags)
            self.say(
                f"{time.monotonic() - self.t0:.0f} s: honest "
                f"{sum(x['connected'] for x in st)}/{self.cfg.honest} connected, "
                f"{sum(x['receiving'] for x in st)} receiving, "
                f"{sum(x['frames'] for x in st)} frames, longest gap "
                f"{max((x['max_gap_s'] for x in st), default=0):.2f} s "
                f"({sum(x['flows_over_1s'] for x in st)} subscriptions > 1 s), "
                f"{sum(x['dropped'] for x in st)} dropped, client loop lag max "
                f"{max((x['loop_lag_max_ms'] for x in st), default=0):.0f} ms; abuse "
                f"{sum(x['rejections'] for x in ab)} rejections; server RSS "
                f"{last.get('rss_mb', 0):.0f} MB, {last.get('fds', 0)} files, loop lag "
                f"p50/p99/max {lag['p50']}/{lag['p99']}/{lag['max']} ms"
            )

    # -- the end -------------------------------------------------------------------------

    async def finish(self) -> tuple[list[Any], list[Any], dict[str, Any]]:
        await asyncio.gather(*(w.call({"cmd": "freeze"}) for w in self.honest))
        await self.sample()
        honest = await asyncio.gather(*(w.call({"cmd": "report"}) for w in self.honest))
        abuse = await asyncio.gather(*(w.call({"cmd": "stop"}, 60) for w in self.abusive))
        load_cpu = sum(cpu_seconds(w.pid) for w in self.honest + self.abusive)
        await asyncio.gather(*(w.call({"cmd": "leave"}, 120) for w in self.honest))
        await asyncio.sleep(5.0)  # the server lets go of what the clients held
        after = await self.sample()
        after_leave = {"rss_mb": after["rss_mb"], "fds": after["fds"]}
        self.samples.pop()
        extra = {"after_leave": after_leave, "load_cpu_s": round(load_cpu, 1)}
        return honest, [a["abuse"] for a in abuse], extra

    async def close(self) -> None:
        await stop_all(self.honest + self.abusive, self.rest, self.server)


async def run(cfg: Config, progress: Any = None) -> dict[str, Any]:
    """Runs the soak; returns the report (see the module docstring)."""
    say = progress or (lambda msg: print(f"[bench soak] {msg}", file=sys.stderr, flush=True))
    tmp = Path(tempfile.mkdtemp(prefix="e2ee-bench-soak-"))
    r = _Run(cfg, tmp, say)
    started = _measure.now_iso()
    tasks: list[asyncio.Task[None]] = []
    try:
        r.plan_pinning()
        media = await r.setup()
        r.t0 = time.monotonic()
        before = await r.sample()  # the server before anyone joined
        r.samples.clear()
        await r.start_workers(media, secrets.token_urlsafe(18))
        await r.wait_joined(JOIN_TIMEOUT)
        machine0 = machine_times()
        tasks = [asyncio.create_task(r.sampler()), asyncio.create_task(r.progress())]
        await asyncio.sleep(max(0.0, r.t0 + cfg.seconds - time.monotonic()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        machine1 = machine_times()
        say("run over: freezing the flows, collecting the reports, everyone leaves")
        honest, abuse, extra = await r.finish()
    finally:
        for task in tasks:
            task.cancel()
        await r.close()
        if cfg.keep:
            say(f"kept {tmp} (the server's and the load processes' logs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report = summarize(
        config={**asdict(cfg), "warmup_s": cfg.warmup_s},
        samples=r.samples,
        lags=r.lags,
        gc_pauses=r.gc_pauses,
        honest=honest,
        abuse=abuse,
        after_leave=extra["after_leave"],
        t0=r.t0,
    )
    report["server"]["before_join"] = {"rss_mb": before["rss_mb"], "fds": before["fds"]}
    report["load_generators_cpu_s"] = extra["load_cpu_s"]
    busy, idle = machine1[0] - machine0[0], machine1[1] - machine0[1]
    # Other processes' load too: on a shared machine the lags are not all the server's.
    report["machine_busy_percent"] = round(100 * busy / max(busy + idle, 1e-9), 1)
    # As read back from the kernel, not as asked: pinning may be refused.
    report["pinning"] = r.affinity if r.server_cpus else None
    return {"benchmark": "soak", "started": started, "machine": _measure.machine_info(), **report}


# -- the command line --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="e2ee bench soak",
        description="Honest and abusive participants against one real server for minutes: "
        "join latency, media continuity, server RSS, open files and event-loop lag.",
    )
    p.add_argument("--honest", type=int, default=50, help="honest participants (50)")
    p.add_argument("--abusive", type=int, default=10, help="abusive participants (10)")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the run (10)")
    p.add_argument("--seconds", type=float, help="length of the run in seconds instead")
    p.add_argument("--warmup", type=float, help="seconds before RSS/files/lag count (min(90, T/3))")
    p.add_argument("--fps", type=int, default=10, help="video frames a second per publisher (10)")
    p.add_argument("--audio", action="store_true", help="publish Opus audio too (50 frames/s)")
    p.add_argument("--per-process", type=int, default=10, help="honest participants a process")
    p.add_argument("--churn", type=float, default=0.2, help="share that leaves and rejoins (0.2)")
    p.add_argument("--churn-every", type=float, default=60.0, help="seconds between leaves (60)")
    p.add_argument("--abuse-phase", type=float, default=20.0, help="seconds per abuse kind (20)")
    p.add_argument("--sample-every", type=float, default=5.0, help="server sampling period (5)")
    p.add_argument("--progress-every", type=float, default=10.0, help="progress period (10)")
    p.add_argument("--json", action="store_true", help="print the report as JSON, not a table")
    p.add_argument("--out", type=Path, help="write the JSON report here")
    p.add_argument("--keep", action="store_true", help="keep the logs (temporary directory)")
    p.add_argument("--no-netns", action="store_true", help="do not re-run in a network namespace")
    p.add_argument("--no-pin", action="store_true", help="do not give the server a CPU of its own")
    return p


def _config(args: argparse.Namespace) -> Config:
    return Config(
        honest=args.honest,
        abusive=args.abusive,
        seconds=args.seconds if args.seconds is not None else args.minutes * 60,
        warmup=args.warmup,
        fps=args.fps,
        audio=args.audio,
        per_process=args.per_process,
        churn=args.churn,
        churn_every=args.churn_every,
        abuse_phase=args.abuse_phase,
        sample_every=args.sample_every,
        progress_every=args.progress_every,
        keep=args.keep,
        pin=not args.no_pin,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    cfg = _config(args)
    if cfg.honest < 2 or cfg.abusive < 0 or cfg.seconds <= 0 or cfg.fps < 1:
        print(
            "e2ee bench soak: needs 2+ honest participants and a positive length", file=sys.stderr
        )
        return 2
    if not 0 <= cfg.churn <= 1 or cfg.per_process < 1:
        print("e2ee bench soak: --churn is a share (0 to 1), --per-process 1+", file=sys.stderr)
        return 2
    if not args.no_netns:
        code = rerun_in_netns("e2ee.tools.bench.soak", argv, marker=_NETNS_ENV, label="bench soak")
        if code is not None:
            return code
    report = json_safe(asyncio.run(run(cfg)))
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    if args.out:
        _measure.write_json(args.out, report)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
