"""Giving freed heap memory back to the operating system (glibc's ``malloc_trim``).

Every peer connection of the router allocates natively as well as in Python: OpenSSL's
DTLS state and certificate, libsrtp sessions, aiortc's per-receiver bitrate estimator
and jitter buffers, SDP parsed on executor threads (each thread allocates from a glibc
arena of its own).  Closing a connection frees all of it (``tests/e2e/test_server_churn.py``
checks that the live objects return to their baseline), but glibc keeps freed pages in
its heaps, so under churn the server's resident size only grew (``e2ee bench soak``:
52 MB before anyone joined, 346 MB after everyone left, nothing of ours alive).
``malloc_trim(0)`` hands the free pages of every arena back.

:class:`MemoryTrimmer` calls it on an executor thread, ``interval`` seconds after peer
connections were closed, coalesced (at most one trim per ``interval``: it holds each
arena's lock while it walks it, tens of ms on a large fragmented heap).  When a room with
media ends it runs sooner, after a full garbage collection: aiortc's objects form
reference cycles, so a closed connection's memory waits for the cyclic collector.  That
collection holds the GIL for the whole walk (339 ms of CPU once in ``e2ee bench soak``),
so it runs only while no other call has media (``idle()``); otherwise the collector's
own schedule reclaims the cycles and the trim comes at the next one.  Where there is no
glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

__all__ = ["EMPTIED_DELAY_SECONDS", "TRIM_INTERVAL_SECONDS", "MemoryTrimmer", "malloc_trim"]

log = logging.getLogger(__name__)

#: The least time between two trims, and the delay from a release to the trim.
TRIM_INTERVAL_SECONDS = 15.0
#: The delay from a room emptying to its collection and trim.
EMPTIED_DELAY_SECONDS = 1.0


def malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)`` as a function, ``None`` without glibc."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


class MemoryTrimmer:
    """Coalesces "memory was freed" notices into at most one ``malloc_trim`` per
    ``interval``.  ``trims`` counts the trims done."""

    def __init__(
        self,
        interval: float = TRIM_INTERVAL_SECONDS,
        trim: Callable[[], int] | None = None,
        idle: Callable[[], bool] = lambda: True,
    ) -> None:
        if not interval > 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.emptied_delay = min(EMPTIED_DELAY_SECONDS, interval)
        self._collect = False
        self._trim = trim if trim is not None else malloc_trim()
        #: Whether a full collection would pause no one's media now.
        self.idle = idle
        self.collections = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Future[float] | None = None
        self.trims = 0
        #: Seconds the last trim took (it holds each glibc arena's lock meanwhile).
        self.last_seconds = 0.0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def request(self, *, emptied: bool = False) -> None:
        """Peer connections were closed: trim within ``interval`` seconds.  ``emptied``
        (a whole room ended): within ``emptied_delay``, after a full garbage collection
        (aiortc's objects form reference cycles, so a closed peer connection's memory
        waits for the cyclic collector).  Never blocks; a no-op without glibc."""
        if self._trim is None:
            return
        loop = asyncio.get_running_loop()
        if emptied:
            self._collect = True
            due = loop.time() + self.emptied_delay
            if self._timer is not None and self._timer.when() > due:
                self._timer.cancel()
                self._timer = None
        if self._timer is None:
            delay = self.emptied_delay if emptied else self.interval
            self._timer = loop.call_later(delay, self._start)

    def _start(self) -> None:
        self._timer = None
        if self._trim is None:
            return
        loop = asyncio.get_running_loop()
        if self._running is not None:  # the last one still runs: try again later
            self._timer = loop.call_later(self.interval, self._start)
            return
        if self._collect:
            self._collect = False
            if self.idle():  # on the loop, holding the GIL: only when it stalls no one
                gc.collect()
                self.collections += 1
        self._running = loop.run_in_executor(None, self._timed, self._trim)
        self._running.add_done_callback(self._done)

    @staticmethod
    def _timed(trim: Callable[[], int]) -> float:
        start = time.perf_counter()
        trim()
        return time.perf_counter() - start

    def _done(self, fut: asyncio.Future[float]) -> None:
        self._running = None
        if fut.cancelled():
            return
        if fut.exception() is not None:
            log.warning("malloc_trim failed: %r", fut.exception())
            return
        self.trims += 1
        self.last_seconds = fut.result()
        log.debug("malloc_trim took %.1f ms", 1000 * self.last_seconds)

    def close(self) -> None:
        """Cancels a pending trim (server shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
