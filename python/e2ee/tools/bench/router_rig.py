"""The rig of ``e2ee bench router``: one server, one E2EE session, P publishers and
subscriber processes, all on loopback, and one measured window at a time.

:meth:`Rig.setup` starts the server (:class:`~e2ee.tools.bench.router_processes.Server`,
one :class:`e2ee.sfu.router.Router` per session) with the per-address limits lifted (all
clients are on 127.0.0.1), creates one E2EE session over REST with the project auth token
and starts the publisher processes.  :meth:`Rig.add` adds subscribers, each with its own
list of streams (at most ``per_process`` subscribers per process), and waits until they
receive.  :meth:`Rig.measure` reads the router's CPU, memory and counters, every load
process's CPU, each CPU's busy time and the machine's around a window, collects what the
workers recorded in it and hands all of it to
:func:`e2ee.tools.bench.router_figures.step_figures`.

On a machine with 2 or more CPUs the router is pinned to the first CPU and every load
generator (and the bench itself) to the others (``pin=False``: no pinning, load
generators at nice 10), so the router gets one core to itself and its figures are not the
load generators' starvation.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2ee.tools.bench.router_figures import step_figures
from e2ee.tools.bench.router_processes import (
    Rest,
    Server,
    Worker,
    cpu_seconds,
    cpu_times,
    machine_times,
    pin,
    rss_bytes,
    runqueue_wait_seconds,
    start_session,
    stop_all,
)

__all__ = ["DEFAULT_SUBSCRIBERS", "Config", "PublisherLost", "Rig"]

DEFAULT_SUBSCRIBERS = (1, 50, 100, 200)
#: Subscribers per process by receive path (a light one costs about a tenth).
PER_PROCESS = {"light": 50, "full": 10}
#: Subscriptions set up at once (see :meth:`Rig.add`).
JOIN_BATCH = 10
#: Send times asked of the publishers reach this far before a window (frames in flight).
_SENT_MARGIN_NS = 5_000_000_000
#: The bench's server: no per-address limits (every client is on 127.0.0.1).
_SERVER_LIMITS = {
    "max_connections_per_address": 0,
    "connect_rate": 1000.0,
    "connect_burst": 1000.0,
    # Hundreds of joins at once on a loaded machine: answers may take longer than 15 s.
    "pending_subscription_seconds": 120.0,
}


class PublisherLost(RuntimeError):
    """A publisher's connection ended while subscribers joined: the router fell behind."""


@functools.cache
def _usable_cpus() -> list[int]:
    """The CPUs this process may use, read once: before the first rig pins the bench
    itself to the load generators' CPUs."""
    return sorted(os.sched_getaffinity(0))


@dataclass
class Config:
    scenarios: tuple[str, ...] = ("fanout",)
    publishers: int = 1
    subscribers: tuple[int, ...] = DEFAULT_SUBSCRIBERS
    parties: tuple[int, ...] = (10,)
    loss: tuple[str, ...] = ("1%", "5%", "burst300")
    loss_subscribers: int = 10
    seconds: float = 10.0
    warmup: float = 3.0
    kind: str = "light"
    receiver: str = "native"
    probe_s: float = 5.0
    per_process: int | None = None
    media_seconds: float = 10.0
    fps: int = 30
    pin: bool = True
    profile: Path | None = None
    quick: bool = False
    keep: bool = False
    join_timeout: float = 60.0

    @property
    def subscribers_per_process(self) -> int:
        return self.per_process or PER_PROCESS[self.kind]


@dataclass
class Rig:
    cfg: Config
    tmp: Path
    media_path: Path
    server: Server | None = None
    publishers: list[Worker] = field(default_factory=list)
    subscribers: list[Worker] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    session: dict[str, Any] = field(default_factory=dict)
    rest: Rest | None = None
    router_cpus: set[int] | None = None
    load_cpus: set[int] | None = None
    secret: str = ""

    # -- REST ----------------------------------------------------------------------------

    def _token(self, role: str) -> str:
        assert self.rest is not None
        return self.rest.token(self.session["id"], role)

    async def loop_lag(self, since: int = 0) -> dict[str, Any]:
        """The server's event loop lag samples after the ``since``-th (``GET /v1/metrics``,
        :class:`e2ee.server.looplag.LoopLagProbe`)."""
        assert self.rest is not None
        body = await self.rest.call("GET", f"/v1/metrics?since={since}")
        lag: dict[str, Any] = body.get("loop_lag") or {}
        return lag

    async def router_stats(self) -> dict[str, Any]:
        assert self.rest is not None
        body = await self.rest.call("GET", f"/v1/sessions/{self.session['id']}")
        router: dict[str, Any] = body.get("router") or {}
        return router

    # -- set-up --------------------------------------------------------------------------

    @property
    def nice(self) -> int:
        """Load generators run at nice 10 when they share the router's CPUs."""
        return 0 if self.load_cpus else 10

    def _pin_cpus(self) -> None:
        cpus = _usable_cpus()
        if self.cfg.pin and len(cpus) >= 2:
            self.router_cpus = {cpus[0]}
            self.load_cpus = set(cpus[1:])
            pin(os.getpid(), self.load_cpus)  # the bench itself stays off the router's CPU

    async def setup(self, publishers: int, progress: Callable[[str], None]) -> None:
        """Server, session and ``publishers`` publishers sending."""
        cfg = self.cfg
        self._pin_cpus()
        self.server, self.rest, self.session = await start_session(
            self.tmp / "server",
            self.router_cpus,
            cfg.profile,
            {
                "media_mode": "routed",
                "e2ee": True,
                # Key derivation only runs at join; the minimum keeps 200 joins quick.
                "kdf_iterations": 1000,
                "max_participants": 1000,
            },
            limits=_SERVER_LIMITS,
        )
        self.secret = secrets.token_urlsafe(18)
        progress(f"server pid {self.server.pid} at {self.server.url}, session {self.session['id']}")
        workers = await asyncio.gather(*(self._start_publisher(i) for i in range(publishers)))
        for worker, stream in workers:
            self.publishers.append(worker)
            self.streams.append(stream)
        progress(f"{publishers} publisher(s) sending")

    async def _start_publisher(self, i: int) -> tuple[Worker, str]:
        worker = await Worker.start(
            "publisher",
            {
                **self._base_cfg(),
                "token": self._token("publisher"),
                "media": str(self.media_path),
                "name": f"bench-publisher-{i}",
                "fps": self.cfg.fps,
            },
            self.tmp / f"publisher{i}.log",
            self.load_cpus,
            self.nice,
        )
        reply = await worker.read(60)
        return worker, str(reply["stream_id"])

    def _base_cfg(self) -> dict[str, Any]:
        return {
            "url": self.server.url if self.server else "",
            "session_id": self.session["id"],
            "suite": self.session["suite"],
            "kdf_iterations": self.session["kdf_iterations"],
            "secret": self.secret,
        }

    # -- subscribers ---------------------------------------------------------------------

    async def _plan(self, need: int) -> list[tuple[Worker, int]]:
        """How many subscribers each process adds: fill the running ones, then start more."""
        per = self.cfg.subscribers_per_process
        plan: list[tuple[Worker, int]] = []
        for worker in self.subscribers:
            room = per - worker.subscribers
            if need > 0 and room > 0:
                n = min(room, need)
                plan.append((worker, n))
                need -= n
        while need > 0:
            worker = await Worker.start(
                "subscriber",
                {
                    **self._base_cfg(),
                    "kind": self.cfg.kind,
                    "receiver": self.cfg.receiver,
                    "fps": self.cfg.fps,
                    "probe_s": self.cfg.probe_s,
                },
                self.tmp / f"subscriber{len(self.subscribers)}.log",
                self.load_cpus,
                self.nice,
            )
            await worker.read(60)
            self.subscribers.append(worker)
            n = min(per, need)
            plan.append((worker, n))
            need -= n
        return plan

    @property
    def subscriber_count(self) -> int:
        return sum(w.subscribers for w in self.subscribers)

    async def add(self, streams: list[list[str]]) -> dict[str, Any]:
        """Add one subscriber per entry of ``streams`` (the streams it subscribes to),
        :data:`JOIN_BATCH` subscriptions at a time; returns join figures.

        Batches, because a router that sets up 150 peer connections at once (a DTLS
        handshake and a certificate each) starves its event loop long enough for the
        publishers' ICE consent (RFC 7675) to expire."""
        started = time.monotonic()
        not_receiving = 0
        lag0 = int((await self.loop_lag(1 << 62)).get("count", 0))
        todo = list(streams)
        while todo:
            batch, take = [], 0
            while todo and take + len(todo[0]) <= max(JOIN_BATCH, len(todo[0])):
                take += len(todo[0])
                batch.append(todo.pop(0))
            not_receiving += await self._add_batch(batch)
            await self._check_publishers(lag0)
        lags = (await self.loop_lag(lag0)).get("recent_ms") or [0.0]
        return {
            "join_s": round(time.monotonic() - started, 3),
            "not_receiving": not_receiving,
            "join_loop_lag_max_ms": max(lags),
        }

    async def _check_publishers(self, lag_since: int) -> None:
        """Fail clearly if a publisher lost its connection (its stream ended)."""
        replies = await asyncio.gather(*(w.call({"cmd": "state"}) for w in self.publishers))
        lost = [r["connection_state"] for r in replies if r["connection_state"] != "connected"]
        if lost:
            lag = await self.loop_lag(lag_since)
            slow = sum(1 for v in lag.get("recent_ms", []) if v > 500)
            raise PublisherLost(
                f"a publisher's connection is {lost[0]} while subscribers joined "
                f"({self.subscriber_count} in): the router's event loop lagged up to "
                f"{max(lag.get('recent_ms') or [0.0]):.0f} ms ({slow} samples over 500 ms); "
                "its consent checks (RFC 7675, 0.5 s each) went unanswered: see the "
                "publisher's log (--keep)"
            )

    async def _add_batch(self, streams: list[list[str]]) -> int:
        plan = await self._plan(len(streams))
        todo = list(streams)
        calls = []
        for worker, n in plan:
            subs = [[self._token("subscriber"), s] for s in todo[:n]]
            del todo[:n]
            calls.append(
                worker.call(
                    {"cmd": "add", "subs": subs, "timeout": self.cfg.join_timeout},
                    timeout=self.cfg.join_timeout + 120,
                )
            )
        replies = await asyncio.gather(*calls)
        for (w, n), _reply in zip(plan, replies, strict=True):
            w.subscribers += n
        return sum(int(r["not_receiving"]) for r in replies)

    # -- one measured window ---------------------------------------------------------------

    def _processes(self) -> list[tuple[str, int]]:
        return [("publisher", w.pid) for w in self.publishers] + [
            ("subscriber", w.pid) for w in self.subscribers
        ]

    async def measure(
        self,
        seconds: float,
        started: Callable[[], Awaitable[None]] | None = None,
        loss: bool = False,
    ) -> dict[str, Any]:
        """One window of ``seconds``; ``started`` runs right after the window opens (the
        loss scenario sets the publisher's loss there; ``loss``: its figures too)."""
        assert self.server is not None
        procs = self._processes()
        lag0 = int((await self.loop_lag(1 << 62)).get("count", 0))
        await asyncio.gather(*(w.call({"cmd": "mark"}) for w in self.subscribers + self.publishers))
        stats0 = await self.router_stats()
        m0, c0 = machine_times(), cpu_times()
        t0_ns = time.monotonic_ns()
        cpu0 = cpu_seconds(self.server.pid)
        wait0 = runqueue_wait_seconds(self.server.pid)
        gen0 = [cpu_seconds(pid) for _role, pid in procs]
        gwait0 = [runqueue_wait_seconds(pid) for _role, pid in procs]
        own0 = cpu_seconds(os.getpid())
        if started is not None:
            await started()
        await asyncio.sleep(seconds - (time.monotonic_ns() - t0_ns) / 1e9)
        cpu1 = cpu_seconds(self.server.pid)
        wait1 = runqueue_wait_seconds(self.server.pid)
        gen1 = [cpu_seconds(pid) for _role, pid in procs]
        gwait1 = [runqueue_wait_seconds(pid) for _role, pid in procs]
        own1 = cpu_seconds(os.getpid())
        t1_ns = time.monotonic_ns()
        m1, c1 = machine_times(), cpu_times()
        rss = rss_bytes(self.server.pid)
        stats1 = await self.router_stats()
        lag = await self.loop_lag(lag0)
        reports = await asyncio.gather(
            *(w.call({"cmd": "report"}, timeout=120) for w in self.subscribers)
        )
        since = t0_ns - _SENT_MARGIN_NS
        pubs = await asyncio.gather(
            *(w.call({"cmd": "report", "since_ns": since}) for w in self.publishers)
        )
        window = (t1_ns - t0_ns) / 1e9
        return step_figures(
            window=window,
            t0_ns=t0_ns,
            t1_ns=t1_ns,
            fps=self.cfg.fps,
            router_cpu=cpu1 - cpu0,
            router_wait=wait1 - wait0,
            processes=[
                {"role": role, "pid": pid, "cpu_s": b - a, "wait_s": wb - wa}
                for (role, pid), a, b, wa, wb in zip(procs, gen0, gen1, gwait0, gwait1, strict=True)
            ],
            bench_cpu=own1 - own0,
            machine=(m1[0] - m0[0], m1[1] - m0[1]),
            cpus={k: (c1[k][0] - c0[k][0], c1[k][1] - c0[k][1]) for k in c1 if k in c0},
            router_cpus=self.router_cpus,
            load_cpus=self.load_cpus,
            rss=rss,
            stats0=stats0,
            stats1=stats1,
            reports=reports,
            publishers=dict(zip(self.streams, pubs, strict=True)),
            loop_lag_ms=lag.get("recent_ms") or [],
            loss=loss,
        )

    async def close(self) -> None:
        await stop_all(self.subscribers + self.publishers, self.rest, self.server)
