"""The honest participants of ``e2ee bench soak``: pairs that publish to each other and
record every gap in what they receive.

Each honest participant is an :class:`e2ee.client.Session` with end-to-end encryption
on, publishing one stream of pre-encoded VP8 (and, with ``audio``, Opus) from the
media loop of :mod:`e2ee.tools.bench.router_worker.media` (encrypted by the client's own
E2EE transform, as any application's media) and subscribed to the stream of its
partner, found by name.  Every decoded video frame of that subscription is a tick of
its :class:`e2ee.tools.bench.soak_flow.Flow`.

A participant that ``churns`` leaves and rejoins (same token) every ``churn_every``
seconds or so; one dropped by the server (a ``disconnected`` it did not ask for, or its
socket closing) is counted as ``dropped`` with the reason and rejoins.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2ee.server.looplag import LoopLagProbe
from e2ee.tools.bench.router_worker.media import (
    AUDIO_CLOCK,
    AUDIO_FRAME_SAMPLES,
    VIDEO_CLOCK,
    Media,
    load_media,
)
from e2ee.tools.bench.soak_flow import Flow

__all__ = ["HonestWorker", "PacketLoop", "Participant"]

log = logging.getLogger("e2ee.tools.bench.soak")


class ConsentExpiries(logging.Handler):
    """Counts aioice's "Consent to send expired" (RFC 7675: no answer to 6 consent checks
    in a row, each allowed 0.5 s): a peer connection that a lagging loop, at either end,
    lets die."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Consent to send expired" in record.getMessage():
            self.count += 1


class PacketLoop:
    """A track of pre-encoded frames (aiortc's ``pack()`` path: nothing is encoded here),
    looped and paced at ``rate`` frames a second.  The E2EE transform calls
    :meth:`request_keyframe` on a PLI (a new subscriber): the loop jumps to its next key
    frame, as an encoder would send one."""

    def __init__(self, kind: str, frames: list[bytes], rate: float) -> None:
        from aiortc import MediaStreamTrack

        clock = VIDEO_CLOCK if kind == "video" else AUDIO_CLOCK
        self._ticks = round(clock / rate)
        self._time_base = fractions.Fraction(1, clock)
        self._frames = frames
        self._keys = [i for i, f in enumerate(frames) if f[0] & 1 == 0] if kind == "video" else []
        self._period = 1.0 / rate
        self._n = 0
        self._index = 0
        self._start = 0.0
        self._jump = False
        loop = self

        class _Track(MediaStreamTrack):
            async def recv(self) -> Any:
                return await loop.next(self)

            def request_keyframe(self) -> None:
                loop._jump = True

        self.track = _Track()
        self.track.kind = kind

    async def next(self, track: Any) -> Any:
        import av
        from aiortc.mediastreams import MediaStreamError

        if track.readyState != "live":
            raise MediaStreamError
        if self._n == 0:
            self._start = time.monotonic()
        wait = self._start + self._n * self._period - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._jump and self._keys:
            self._jump = False
            self._index = next((k for k in self._keys if k >= self._index), self._keys[0])
        packet = av.Packet(self._frames[self._index])
        packet.pts, packet.time_base = self._n * self._ticks, self._time_base
        self._index = (self._index + 1) % len(self._frames)
        self._n += 1
        return packet


@dataclass
class Participant:
    name: str
    partner: str
    token: str
    churns: bool
    session: Any = None
    sub: Any = None
    flow: Flow | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    leaving: bool = False
    dropped: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class HonestWorker:
    """The honest participants of one load process (see the module docstring)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.media: Media = load_media(Path(cfg["media"]))
        self.people = [
            Participant(p["name"], p["partner"], p["token"], p["churns"])
            for p in cfg["participants"]
        ]
        self.flows: list[Flow] = []
        self.joins: list[dict[str, Any]] = []
        self.drops: dict[str, int] = {}
        self.rejoins = 0
        self.errors: dict[str, int] = {}
        self.frozen = False
        self._rng = random.Random(cfg.get("seed", 0))
        self._tasks: set[asyncio.Task[Any]] = set()
        # This process's own loop lag: a gap may come from a starved client, not the server.
        self.lag = LoopLagProbe(interval=0.1, keep=16384, stall_ms=200)
        self._lag_seen = 0
        self.consent = ConsentExpiries()
        ice_log = logging.getLogger("aioice.ice")
        ice_log.addHandler(self.consent)
        ice_log.setLevel(min(ice_log.getEffectiveLevel(), logging.INFO))

    # -- joining -------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _error(self, what: str, exc: BaseException) -> None:
        key = f"{what}: {type(exc).__name__}: {exc}"[:160]
        self.errors[key] = self.errors.get(key, 0) + 1
        log.warning("%s", key)

    async def start(self) -> None:
        """Joins everyone (arriving 0.2 s apart), then churns."""

        self.lag.start()

        async def arrive(p: Participant, delay: float) -> None:
            await asyncio.sleep(delay)
            await self._join(p)
            if p.churns:
                await self._churn(p)

        await asyncio.gather(*(arrive(p, 0.2 * i) for i, p in enumerate(self.people)))

    def _new_session(self, p: Participant) -> Any:
        """The client of ``p`` (``e2ee bench cluster`` gives each its own session and
        entry URLs)."""
        from e2ee.client import Session, SessionPolicy

        cfg = self.cfg
        return Session(
            cfg["url"],
            cfg["session_id"],
            p.token,
            encryption_secret=cfg["secret"],
            policy=SessionPolicy(min_iterations=cfg["kdf_iterations"]),
            request_timeout=30.0,
        )

    async def _join(self, p: Participant) -> None:
        t0 = time.monotonic()
        s = self._new_session(p)
        try:
            await s.connect()
            t1 = time.monotonic()
            await s.publish(name=p.name, **self._tracks())
        except Exception as exc:
            self._error("join", exc)
            with contextlib.suppress(Exception):
                await s.disconnect()
            return
        t2 = time.monotonic()
        self.joins.append(
            {"name": p.name, "connect_ms": (t1 - t0) * 1000, "publish_ms": (t2 - t1) * 1000}
        )
        p.session, p.leaving, p.dropped = s, False, ""
        s.on("stream_created", functools.partial(self._on_created, p))
        s.on("stream_destroyed", functools.partial(self._on_gone, p))
        s.on("disconnected", functools.partial(self._on_disconnected, p, s))
        s.on("publisher_ended", functools.partial(self._on_publisher_ended, p, s))
        s.on("subscriber_ended", functools.partial(self._on_subscriber_ended, p, s))
        s.on("connection_lost", functools.partial(self._on_connection_lost, p, s))
        s.on("resubscribed", functools.partial(self._on_resubscribed, p))
        self._spawn(self._watch(p, s))
        for stream in list(s.streams.values()):
            self._on_stream(p, stream)

    def _tracks(self) -> dict[str, Any]:
        cfg = self.cfg
        loops = {"video": PacketLoop("video", self.media.video, cfg["fps"]).track}
        if cfg.get("audio"):
            rate = AUDIO_CLOCK / AUDIO_FRAME_SAMPLES
            loops["audio"] = PacketLoop("audio", self.media.audio, rate).track
        return loops

    async def _publish(self, p: Participant, s: Any) -> None:
        try:
            await s.publish(name=p.name, **self._tracks())
        except Exception as exc:
            if p.session is s and not p.leaving:
                self._error("publish again", exc)

    # -- the partner's stream ------------------------------------------------------------

    def _on_created(self, p: Participant, msg: dict[str, Any]) -> None:
        self._on_stream(p, msg["stream"])

    def _on_stream(self, p: Participant, stream: dict[str, Any]) -> None:
        if stream.get("name") == p.partner and not self.frozen:
            self._spawn(self._subscribe(p, stream["id"]))

    async def _subscribe(self, p: Participant, stream_id: str) -> None:
        async with p.lock:
            s = p.session
            if s is None or p.leaving or (p.sub is not None and p.sub.stream_id == stream_id):
                return
            await self._drop_sub(p, "replaced", trailing=False)
            flow = Flow(p.partner, p.name, time.monotonic())
            try:
                sub = await s.subscribe(stream_id)
            except Exception as exc:
                if stream_id in s.streams and not p.leaving:
                    self._error("subscribe", exc)
                return
            p.sub, p.flow = sub, flow
            self.flows.append(flow)
            p.tasks = [asyncio.ensure_future(self._receive(sub, flow))]

    async def _receive(self, sub: Any, flow: Flow) -> None:
        from aiortc.mediastreams import MediaStreamError

        while sub.video is None:
            await asyncio.sleep(0.05)
        if sub.audio is not None:  # drained, or aiortc would queue it without bound
            self._spawn(_drain(sub.audio))
        with contextlib.suppress(MediaStreamError):
            while True:
                await sub.video.recv()
                flow.tick(time.monotonic())

    def _on_gone(self, p: Participant, msg: dict[str, Any]) -> None:
        stream_id = msg["stream"]["id"]
        if p.sub is not None and p.sub.stream_id == stream_id:
            reason = f"stream destroyed: {msg.get('reason', '?')}"
            self._spawn(self._partner_left(p, stream_id, reason))

    async def _partner_left(self, p: Participant, stream_id: str, reason: str) -> None:
        async with p.lock:
            if p.sub is not None and p.sub.stream_id == stream_id:
                await self._drop_sub(p, reason, trailing=False)

    def _on_publisher_ended(self, p: Participant, s: Any, msg: dict[str, Any]) -> None:
        """Its own stream ended without it leaving: media lost; publish again."""
        if p.session is not s or p.leaving or self.frozen:
            return
        reason = f"stream lost: {msg.get('reason', '?')}"
        self.drops[reason] = self.drops.get(reason, 0) + 1
        self._spawn(self._publish(p, s))

    async def _drop_sub(self, p: Participant, reason: str, *, trailing: bool) -> None:
        if p.flow is not None:
            p.flow.end(time.monotonic(), reason, trailing=trailing)
        for task in p.tasks:
            task.cancel()
        p.tasks = []
        sub, p.sub, p.flow = p.sub, None, None
        if sub is not None and p.session is not None:
            with contextlib.suppress(Exception):
                await p.session.unsubscribe(sub)

    def _on_subscriber_ended(self, p: Participant, s: Any, msg: dict[str, Any]) -> None:
        """The client gave up its subscription (its connection failed): media lost;
        subscribe again if the stream is still there."""
        if p.session is not s or p.leaving or self.frozen or not msg.get("failed"):
            return
        if msg.get("subscriber") is p.sub:
            self.drops[f"subscription lost: {msg.get('reason', '?')}"] = (
                self.drops.get(f"subscription lost: {msg.get('reason', '?')}", 0) + 1
            )
            self._spawn(self._resubscribe(p, s, str(msg.get("stream_id", ""))))

    async def _resubscribe(self, p: Participant, s: Any, stream_id: str) -> None:
        async with p.lock:
            await self._drop_sub(p, "subscription lost", trailing=True)
        if stream_id in s.streams:
            await self._subscribe(p, stream_id)

    def _on_connection_lost(self, p: Participant, s: Any, msg: dict[str, Any]) -> None:
        """The WebSocket dropped under the client (it reconnects by itself)."""
        if p.session is s and not p.leaving and not self.frozen:
            key = f"connection lost: {msg.get('reason') or msg.get('close_code')}"
            self.drops[key] = self.drops.get(key, 0) + 1

    def _on_resubscribed(self, p: Participant, msg: dict[str, Any]) -> None:
        """After a reconnect the subscription has new tracks: receive from them (the
        flow goes on; the time without frames counts as a gap)."""
        sub = msg.get("subscriber")
        if sub is not None and sub is p.sub and p.flow is not None:
            for task in p.tasks:
                task.cancel()
            p.tasks = [asyncio.ensure_future(self._receive(sub, p.flow))]

    # -- leaving, churn, drops -----------------------------------------------------------

    async def _leave(self, p: Participant, reason: str, *, trailing: bool) -> None:
        async with p.lock:
            p.leaving = True
            await self._drop_sub(p, reason, trailing=trailing)
            s, p.session = p.session, None
        if s is not None:
            with contextlib.suppress(Exception):
                await s.disconnect()

    async def _churn(self, p: Participant) -> None:
        every = self.cfg["churn_every"]
        while not self.frozen:
            await asyncio.sleep(every * self._rng.uniform(0.5, 1.5))
            if self.frozen or p.session is None:
                continue
            await self._leave(p, "left (churn)", trailing=False)
            await asyncio.sleep(self._rng.uniform(1.0, 3.0))
            if not self.frozen:
                self.rejoins += 1
                await self._join(p)

    def _on_disconnected(self, p: Participant, s: Any, msg: dict[str, Any]) -> None:
        if p.session is s and not p.leaving:
            p.dropped = str(msg.get("reason", "?"))

    async def _watch(self, p: Participant, s: Any) -> None:
        """A session that closes without this participant leaving was dropped: rejoin."""
        await s.closed.wait()
        if p.session is not s or p.leaving or self.frozen:
            return
        reason = p.dropped or "socket closed without 'disconnected'"
        self.drops[reason] = self.drops.get(reason, 0) + 1
        await self._leave(p, "dropped", trailing=True)
        await asyncio.sleep(1.0)
        if not self.frozen:
            self.rejoins += 1
            await self._join(p)

    # -- commands ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "connected": sum(1 for p in self.people if p.session is not None),
            "participants": len(self.people),
            "receiving": sum(1 for p in self.people if p.flow is not None and p.flow.frames),
            "frames": sum(f.frames for f in self.flows),
            "max_gap_s": max((f.gap_now(now) for f in self.flows if f.frames), default=0.0),
            "flows_over_1s": sum(1 for f in self.flows if f.gap_now(now) > 1.0 and f.frames),
            "dropped": sum(self.drops.values()),
            "joins": len(self.joins),
            "errors": sum(self.errors.values()),
            "loop_lag_max_ms": self._lag_since_last_status(),
        }

    def _lag_since_last_status(self) -> float:
        new = self.lag.snapshot(self._lag_seen)
        self._lag_seen = new["count"]
        return max(new["recent_ms"], default=0.0)

    async def freeze(self) -> dict[str, Any]:
        """The end of the measured run: every flow ends here, its trailing gap counted."""
        self.frozen = True
        now = time.monotonic()
        for p in self.people:
            if p.flow is not None:
                p.flow.end(now, "run ended", trailing=True)
        return self.status()

    def report(self) -> dict[str, Any]:
        return {
            "flows": [f.report() for f in self.flows],
            "joins": self.joins,
            "drops": self.drops,
            "rejoins": self.rejoins,
            "errors": self.errors,
            "loop_lag_ms": self.lag.snapshot()["recent_ms"],
            "loop_stalls": list(self.lag.stalls),
            "ice_consent_expired": self.consent.count,
        }

    async def leave(self) -> dict[str, Any]:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(
            *(self._leave(p, "run ended", trailing=False) for p in self.people),
            return_exceptions=True,
        )
        return {}


async def _drain(track: Any) -> None:
    from aiortc.mediastreams import MediaStreamError

    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()
