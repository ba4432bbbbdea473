"""``e2ee bench cluster``: many small sessions over N ``e2ee serve --cluster`` nodes sharing
one ``redis-server``, then ``kill -9`` of a node that owns some (issue 14, docs/cluster.md).

::

    e2ee bench cluster [--nodes 3] [--sessions 20] [--settle 5] [--json] [--out FILE]

Starts a throwaway ``redis-server`` and N nodes (the real ``e2ee serve --cluster``
command, :mod:`e2ee.tools.cluster_nodes`), creates ``--sessions`` end-to-end encrypted
sessions of two participants each, and runs the participants as the soak's honest pairs
(:mod:`e2ee.tools.bench.cluster_worker`: Python clients in load processes of
``--per-process`` each, pre-encoded VP8 at ``--fps``), each entering through another
node than its partner, so joins are redirected to the owner.  Once every pair decodes,
and ``--settle`` seconds later, the node owning the most sessions is killed (SIGKILL)
and the clients reconnect on their own (through their entry URLs, quick backoff).

Measured: join latency (connect, redirects included, and connect + publish; p50/p99),
sessions per node (from Redis's ``owner:`` keys) before and after, and the failover
time of each pair the kill affected: from the kill to both of its participants decoding
a frame on a new subscription; median and max, against the goal (under 5 s).  Progress
to stderr; a Markdown table to stdout (``--json``: the report as JSON), the JSON report
to ``--out``.

Network namespace: as ``e2ee bench soak``, run as root where ``unshare --net`` works and
the command re-runs itself in a namespace whose only interface is loopback
(``--no-netns``: stay on the host; WebRTC is pinned to 127.0.0.1 either way).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from e2ee.tools.bench.cluster_report import format_table, pair_recovery, summarize
from e2ee.tools.bench.netns import rerun_in_netns
from e2ee.tools.bench.router_processes import ENV_ICE, Worker
from e2ee.tools.bench.router_report import json_safe
from e2ee.tools.cluster_nodes import ClusterView, NodeProc, start_nodes, stop_nodes
from e2ee.tools.redis_proc import RedisProcess, require_cluster_tools

__all__ = ["Config", "main", "run"]

_NETNS_ENV = "E2EE_BENCH_CLUSTER_NETNS"


@dataclass
class Config:
    nodes: int = 3
    sessions: int = 20
    per_process: int = 10
    fps: int = 10
    settle: float = 5.0  # seconds of media on every pair before the kill
    join_timeout: float = 120.0
    failover_timeout: float = 60.0
    kill: bool = True
    kdf_iterations: int = 1000
    keep: bool = False


@dataclass
class _Run:
    cfg: Config
    tmp: Path
    say: Any
    redis: RedisProcess | None = None
    nodes: list[NodeProc] = field(default_factory=list)
    view: ClusterView | None = None
    workers: list[Worker] = field(default_factory=list)
    creds: tuple[str, str] = ("", "")
    #: (session id, participant a, participant b), one per session.
    pairs: list[tuple[str, str, str]] = field(default_factory=list)

    async def setup(self, binary: str) -> Path:
        from e2ee.tools.bench.router_worker.media import prepare_media

        cfg = self.cfg
        media = self.tmp / "media.bin"
        await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: prepare_media(
                media, seconds=4.0, width=160, height=120, fps=cfg.fps,
                bitrate=150_000, gop=2 * cfg.fps,
            ),
        )  # fmt: skip
        self.redis = RedisProcess(self.tmp / "redis", binary).start()
        self.nodes = await start_nodes(self.redis.url, cfg.nodes, self.tmp / "nodes")
        self.view = ClusterView(self.redis.url)
        c = await self.view.credentials()
        self.creds = (c.api_key, c.api_secret)
        self.say(f"redis-server at {self.redis.url}; {cfg.nodes} nodes up")
        return media

    async def create_sessions(self) -> None:
        import aiohttp

        from e2ee.server.tokens import project_auth_token

        body = {"media_mode": "routed", "e2ee": True, "kdf_iterations": self.cfg.kdf_iterations}
        async with aiohttp.ClientSession() as http:
            for k in range(self.cfg.sessions):
                url = self.nodes[k % len(self.nodes)].url + "/v1/sessions"
                auth = {"Authorization": f"Bearer {project_auth_token(*self.creds)}"}
                async with http.post(url, json=body, headers=auth) as resp:
                    info = await resp.json(content_type=None)
                    if resp.status != 201:
                        raise RuntimeError(f"POST /v1/sessions: {resp.status} {info}")
                self.pairs.append((str(info["id"]), f"s{k}a", f"s{k}b"))

    def _entries(self, i: int) -> list[str]:
        n = len(self.nodes)
        return [self.nodes[(i + j) % n].url for j in range(n)]

    async def start_workers(self, media: Path) -> None:
        from e2ee.server.tokens import mint_token

        cfg = self.cfg
        people: list[dict[str, Any]] = []
        for k, (sid, a, b) in enumerate(self.pairs):
            for i, (me, partner) in enumerate(((a, b), (b, a))):
                people.append(
                    {
                        "name": me,
                        "partner": partner,
                        "token": mint_token(*self.creds, sid, role="publisher", data=me),
                        "churns": False,
                        "session_id": sid,
                        "entries": self._entries(2 * k + i),
                    }
                )
        base = {
            "url": "",
            "session_id": "",
            "kdf_iterations": cfg.kdf_iterations,
            "secret": secrets.token_urlsafe(18),
            "media": str(media),
            "fps": cfg.fps,
            "audio": False,
            "churn_every": 3600.0,
        }
        per = max(2, cfg.per_process - cfg.per_process % 2)  # a pair stays in one process
        for n, k in enumerate(range(0, len(people), per)):
            path = self.tmp / f"worker{n}.json"
            path.write_text(json.dumps({**base, "participants": people[k : k + per], "seed": k}))
            self.workers.append(await self._worker(n, path))
        self.say(
            f"{cfg.sessions} sessions x 2 participants in {len(self.workers)} load process(es) "
            "joining"
        )

    async def _worker(self, n: int, path: Path) -> Worker:
        log_path = self.tmp / f"worker{n}.log"
        pipe = asyncio.subprocess.PIPE
        env = dict(os.environ, PYTHONUNBUFFERED="1", **ENV_ICE)
        command = [sys.executable, "-m", "e2ee.tools.bench.cluster_worker", str(path)]
        with open(log_path, "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=pipe, stdout=pipe, stderr=log, env=env, limit=1 << 24
            )
        worker = Worker("cluster", proc, log_path)
        await worker.read(120)
        return worker

    async def status(self) -> dict[str, int]:
        st = await asyncio.gather(*(w.call({"cmd": "status"}) for w in self.workers))
        keys = ("joins", "connected", "receiving", "frames", "dropped", "errors")
        return {k: sum(int(x[k]) for x in st) for k in keys}

    async def wait_receiving(self) -> None:
        total = 2 * self.cfg.sessions
        started = time.monotonic()
        st: dict[str, int] = {}
        while time.monotonic() - started < self.cfg.join_timeout:
            st = await self.status()
            if st["receiving"] >= total:
                break
            await asyncio.sleep(0.5)
        self.say(
            f"{st.get('joins', 0)}/{total} joined, {st.get('receiving', 0)} receiving after "
            f"{time.monotonic() - started:.1f} s"
        )

    async def owners(self) -> dict[str, str | None]:
        assert self.view is not None
        sids = [sid for sid, _, _ in self.pairs]
        found = await asyncio.gather(*(self.view.owner(sid) for sid in sids))
        return dict(zip(sids, found, strict=True))

    async def failover(self, owners: dict[str, str | None]) -> dict[str, Any] | None:
        """Kills the node owning the most sessions; waits until every pair it carried
        decodes again (or the timeout)."""
        counts = {n.node_id: sum(1 for o in owners.values() if o == n.node_id) for n in self.nodes}
        victim_id = max(counts, key=lambda n: (counts[n], n))
        if counts[victim_id] == 0:
            self.say("no node owns a session: no failover measured")
            return None
        victim = next(n for n in self.nodes if n.node_id == victim_id)
        affected = [p for p in self.pairs if owners[p[0]] == victim_id]
        self.say(f"kill -9 of {victim_id} (pid {victim.pid}), owner of {len(affected)} sessions")
        killed_at = time.monotonic()
        await victim.kill()
        result: list[dict[str, Any]] = []
        next_progress = killed_at + 1.0
        while True:
            replies = await asyncio.gather(
                *(w.call({"cmd": "recovery", "t": killed_at}) for w in self.workers)
            )
            first: dict[str, float | None] = {}
            subscribed: dict[str, float | None] = {}
            for r in replies:
                first.update(r["first_frame"])
                subscribed.update(r["subscribed"])
            result = pair_recovery(affected, first, subscribed, killed_at)
            done = sum(1 for p in result if p["seconds"] is not None)
            now = time.monotonic()
            if done == len(result) or now - killed_at > self.cfg.failover_timeout:
                break
            if now >= next_progress:
                self.say(f"{now - killed_at:.1f} s after the kill: {done}/{len(result)} pairs back")
                next_progress = now + 1.0
            await asyncio.sleep(0.1)
        done = sum(1 for p in result if p["seconds"] is not None)
        self.say(f"{done}/{len(result)} affected pairs decode again")
        return {"killed": victim_id, "pairs": result}

    async def finish(self) -> list[dict[str, Any]]:
        await asyncio.gather(*(w.call({"cmd": "freeze"}) for w in self.workers))
        honest = await asyncio.gather(*(w.call({"cmd": "report"}) for w in self.workers))
        await asyncio.gather(*(w.call({"cmd": "leave"}, 120) for w in self.workers))
        return list(honest)

    async def close(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        if self.view is not None:
            await self.view.close()
        await stop_nodes(self.nodes)
        if self.redis is not None:
            self.redis.stop()


async def run(cfg: Config, progress: Any = None) -> dict[str, Any]:
    """Runs the benchmark; returns the report (see the module docstring)."""
    say = progress or (lambda msg: print(f"[bench cluster] {msg}", file=sys.stderr, flush=True))
    binary = require_cluster_tools("e2ee bench cluster")
    tmp = Path(tempfile.mkdtemp(prefix="e2ee-bench-cluster-"))
    r = _Run(cfg, tmp, say)
    started = _measure.now_iso()
    try:
        media = await r.setup(binary)
        await r.create_sessions()
        await r.start_workers(media)
        await r.wait_receiving()
        before = await r.owners()
        placed = {n.node_id: sum(1 for o in before.values() if o == n.node_id) for n in r.nodes}
        say("sessions per node: " + ", ".join(f"{k} {v}" for k, v in placed.items()))
        await asyncio.sleep(cfg.settle)
        failover = await r.failover(before) if cfg.kill else None
        after = await r.owners()
        say("run over: collecting the reports, everyone leaves")
        honest = await r.finish()
    finally:
        await r.close()
        if cfg.keep:
            say(f"kept {tmp} (the nodes', Redis's and the load processes' logs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report = summarize(
        config=asdict(cfg),
        nodes=[n.node_id for n in r.nodes],
        owners_before=before,
        owners_after=after,
        honest=honest,
        failover=failover,
    )
    return {
        "benchmark": "cluster",
        "started": started,
        "machine": _measure.machine_info(),
        **report,
    }


# -- the command line ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="e2ee bench cluster",
        description="Many small sessions over N cluster nodes sharing one redis-server: "
        "join latency, sessions per node, and failover time after kill -9 of a node.",
    )
    p.add_argument("--nodes", type=int, default=3, help="node processes (3)")
    p.add_argument("--sessions", type=int, default=20, help="sessions of 2 participants (20)")
    p.add_argument("--per-process", type=int, default=10, help="participants a load process")
    p.add_argument("--fps", type=int, default=10, help="video frames a second per publisher")
    p.add_argument("--settle", type=float, default=5.0, help="seconds of media before the kill")
    p.add_argument("--join-timeout", type=float, default=120.0, help="seconds to join (120)")
    p.add_argument(
        "--failover-timeout", type=float, default=60.0, help="seconds to wait after the kill"
    )
    p.add_argument("--no-kill", action="store_true", help="measure joins only")
    p.add_argument("--json", action="store_true", help="print the report as JSON, not a table")
    p.add_argument("--out", type=Path, help="write the JSON report here")
    p.add_argument("--keep", action="store_true", help="keep the logs (temporary directory)")
    p.add_argument("--no-netns", action="store_true", help="do not re-run in a network namespace")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    cfg = Config(
        nodes=args.nodes,
        sessions=args.sessions,
        per_process=args.per_process,
        fps=args.fps,
        settle=args.settle,
        join_timeout=args.join_timeout,
        failover_timeout=args.failover_timeout,
        kill=not args.no_kill,
        keep=args.keep,
    )
    if cfg.nodes < 2 or cfg.sessions < 1 or cfg.per_process < 2 or cfg.fps < 1:
        print(
            "e2ee bench cluster: needs 2+ nodes, 1+ sessions, --per-process 2+, --fps 1+",
            file=sys.stderr,
        )
        return 2
    if cfg.settle < 0 or cfg.join_timeout <= 0 or cfg.failover_timeout <= 0:
        print("e2ee bench cluster: --settle 0+, the timeouts above 0", file=sys.stderr)
        return 2
    require_cluster_tools("e2ee bench cluster")  # one line before any namespace
    if not args.no_netns:
        code = rerun_in_netns(
            "e2ee.tools.bench.cluster", argv, marker=_NETNS_ENV, label="bench cluster"
        )
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
