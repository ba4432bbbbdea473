"""The rig of ``e2ee bench router``: one server, one E2EE session, P publishers and a
growing number of subscribers, all on loopback, and one measured window at a time.

:meth:`Rig.setup` encodes the media loop, starts the server
(:class:`~e2ee.tools.bench.router_processes.Server`, one
:class:`e2ee.sfu.router.Router` per session), creates one E2EE session over REST with the
project auth token and starts the publisher processes.  :meth:`Rig.grow` adds subscribers
(at most ``per_process`` per subscriber process; each subscribes to every publisher) and
waits until they receive.  :meth:`Rig.measure` reads the router's CPU, memory and
counters, the load generators' CPU and the machine's idle time around a window, collects
what the workers counted in it and hands all of it to
:func:`e2ee.tools.bench.router_report.step_figures`.

On a machine with 2 or more CPUs the router is pinned to CPU 0 and every load generator
(and the bench itself) to the other CPUs (``pin=False``: no pinning, load generators at
nice 10), so the router gets one core to itself and its figures are not the load
generators' starvation.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2ee.tools.bench.router_processes import (
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
from e2ee.tools.bench.router_report import step_figures

__all__ = ["DEFAULT_SUBSCRIBERS", "Config", "Rig"]

DEFAULT_SUBSCRIBERS = (1, 5, 10, 20, 50)


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
class Rig:
    cfg: Config
    tmp: Path
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
        cpus = sorted(os.sched_getaffinity(0))
        if self.cfg.pin and len(cpus) >= 2:
            self.router_cpus = {cpus[0]}
            self.load_cpus = set(cpus[1:])
            pin(os.getpid(), self.load_cpus)  # the bench itself stays off the router's CPU

    async def setup(self, progress: Callable[[str], None]) -> dict[str, Any]:
        """Media, server, session and publishers; returns the media summary."""
        from e2ee.tools.bench.router_worker.media import prepare_media

        cfg = self.cfg
        self._pin_cpus()
        media_path = self.tmp / "media.bin"
        progress("encoding the media loop (libvpx, libopus) ...")
        media = await asyncio.get_running_loop().run_in_executor(
            None, lambda: prepare_media(media_path, seconds=cfg.media_seconds)
        )
        media["path"] = str(media_path)
        self.server, self.rest, self.session = await start_session(
            self.tmp / "server",
            self.router_cpus,
            cfg.profile,
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
        await self._start_publishers(media_path)
        progress(f"{cfg.publishers} publisher(s) sending: streams {', '.join(self.streams)}")
        return media

    async def _start_publishers(self, media_path: Path) -> None:
        for i in range(self.cfg.publishers):
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
                self.nice,
            )
            self.publishers.append(worker)
            reply = await worker.read(60)
            self.streams.append(reply["stream_id"])

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
        plan: list[tuple[Worker, int]] = []
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
                self.nice,
            )
            await worker.read(60)
            self.subscribers.append(worker)
            n = min(self.cfg.per_process, need)
            plan.append((worker, n))
            need -= n
        return plan

    async def grow(self, target: int) -> dict[str, Any]:
        """Add subscribers until there are ``target``; returns join figures."""
        started = time.monotonic()
        have = sum(w.subscribers for w in self.subscribers)
        plan = await self._plan(target - have)
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
        return step_figures(
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
        await stop_all(self.subscribers + self.publishers, self.rest, self.server)
