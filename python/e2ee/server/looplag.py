"""The event loop's lag, measured the cheap way: :class:`LoopLagProbe` (read by
``GET /v1/metrics``, :mod:`e2ee.server.app`, and by ``e2ee bench soak``)."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

__all__ = ["LoopLagProbe"]


class LoopLagProbe:
    """How late the event loop runs a timer due every ``interval`` seconds: the wait every
    other callback (media forwarding included) had at that moment.  One ``call_at`` per
    interval; the last ``keep`` lags are kept (ms) with the process's CPU share since the
    previous tick (near 1: the server itself was busy; near 0 with a long lag: it was
    waiting for a CPU that other processes held), their running count and the max.
    With ``stall_ms``, lags of at least that long are also kept in ``stalls`` with when
    they ended (``time.monotonic()``, one clock for every process of the machine), the
    last ``keep`` of them."""

    def __init__(
        self, interval: float = 0.05, keep: int = 4096, *, stall_ms: float | None = None
    ) -> None:
        self.interval = interval
        self.recent: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self.stall_ms = stall_ms
        self.stalls: collections.deque[tuple[float, float]] = collections.deque(maxlen=keep)
        self.count = 0
        self.max_ms = 0.0
        self._due = self._at = self._cpu = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._at, self._cpu = loop.time(), time.process_time()
        self._due = self._at + self.interval
        self._handle = loop.call_at(self._due, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now, cpu = loop.time(), time.process_time()
        lag = max(0.0, now - self._due) * 1000  # asyncio may run a timer a tick early
        share = (cpu - self._cpu) / max(now - self._at, 1e-6)
        self.recent.append((round(lag, 2), round(share, 2)))
        self.count += 1
        self.max_ms = max(self.max_ms, lag)
        if self.stall_ms is not None and lag >= self.stall_ms:
            self.stalls.append((now, round(lag, 1)))
        self._at, self._cpu = now, cpu
        self._due = now + self.interval
        self._handle = loop.call_at(self._due, self._tick, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def snapshot(self, since: int = 0) -> dict[str, Any]:
        """The lags sampled after the ``since``-th (as many as are still kept)."""
        new = max(0, min(self.count - since, len(self.recent)))
        recent = list(self.recent)[len(self.recent) - new :]
        return {
            "interval_ms": self.interval * 1000,
            "count": self.count,
            "max_ms": round(self.max_ms, 2),
            "recent_ms": [lag for lag, _ in recent],
            "recent_cpu_share": [share for _, share in recent],
        }
