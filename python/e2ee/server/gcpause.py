"""Pauses of Python's cyclic garbage collector: :class:`GcPauseProbe` (read by
``GET /v1/metrics``, :mod:`e2ee.server.app`, and by ``e2ee bench soak``).

A collection holds the GIL from start to end, so every callback of the event loop (media
forwarding included) waits for it: a full (generation 2) collection walks every tracked
object of the process, tens to hundreds of ms in a server holding hundreds of aiortc
peer connections.  The probe times each collection with ``gc.callbacks``, in wall time
and in the collecting thread's CPU time (which a busy machine does not inflate), so a
loop-lag spike can be told apart from a collection.
"""

from __future__ import annotations

import collections
import gc
import time
from typing import Any

__all__ = ["GcPauseProbe"]


class GcPauseProbe:
    """Counts collections by generation and keeps the last ``keep`` pauses as
    ``(generation, wall ms, cpu ms)``, with the longest of each kind."""

    def __init__(self, keep: int = 1024) -> None:
        self.recent: collections.deque[tuple[int, float, float]] = collections.deque(maxlen=keep)
        self.collections = [0, 0, 0]
        self.max_ms = [0.0, 0.0, 0.0]
        self.max_cpu_ms = [0.0, 0.0, 0.0]
        self.count = 0
        self._wall = self._cpu = 0.0
        self._started = False

    def start(self) -> None:
        if not self._started:
            gc.callbacks.append(self._callback)
            self._started = True

    def stop(self) -> None:
        if self._started:
            gc.callbacks.remove(self._callback)
            self._started = False

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        # Runs in whichever thread triggered the collection, holding the GIL throughout:
        # "start" and "stop" come from the same thread, so thread_time() pairs up.
        if phase == "start":
            self._wall, self._cpu = time.perf_counter(), time.thread_time()
            return
        wall = (time.perf_counter() - self._wall) * 1000
        cpu = (time.thread_time() - self._cpu) * 1000
        gen = min(max(int(info.get("generation", 0)), 0), 2)
        self.collections[gen] += 1
        self.max_ms[gen] = max(self.max_ms[gen], wall)
        self.max_cpu_ms[gen] = max(self.max_cpu_ms[gen], cpu)
        self.recent.append((gen, round(wall, 3), round(cpu, 3)))
        self.count += 1

    def snapshot(self, since: int = 0) -> dict[str, Any]:
        """Totals, and the pauses after the ``since``-th (as many as are still kept)."""
        new = max(0, min(self.count - since, len(self.recent)))
        recent = list(self.recent)[len(self.recent) - new :]
        return {
            "count": self.count,
            "collections": list(self.collections),
            "max_ms": [round(x, 2) for x in self.max_ms],
            "max_cpu_ms": [round(x, 2) for x in self.max_cpu_ms],
            "recent": [list(r) for r in recent],
            "frozen": gc.get_freeze_count(),
        }
