"""A bitrate counter in two flat arrays, standing in for aiortc's ``RateCounter``.

aiortc gives every video receiver a remote bitrate estimator whose incoming-rate counter
holds one Python object per millisecond of its 1 s window: 1,000 small objects per
receiver, every one tracked by the cyclic garbage collector.  In a router with a few
hundred peer connections they were most of what a full collection walked (``e2ee bench
soak``: 144,000 of 277,000 tracked objects, 35 % of all references), and a full
collection holds the GIL, so it is loop lag for every call in the process.  Ints in an
``array`` are not objects the collector sees.  :func:`e2ee.rtc.compat.slim_receiver`
installs it.
"""

from __future__ import annotations

from array import array

__all__ = ["CompactRateCounter"]


class CompactRateCounter:
    """Amount received in 1 ms buckets over a window of ``window_size`` ms, scaled to a
    rate (``scale`` 8000: bytes per ms to bits per second).  The same arithmetic as
    ``aiortc.rate.RateCounter`` (``add``, ``rate``, ``reset``), checked against it in
    ``tests/unit/rtc/test_rate.py``."""

    __slots__ = (
        "_counts",
        "_origin_index",
        "_origin_ms",
        "_scale",
        "_total_count",
        "_total_value",
        "_values",
        "_window_size",
    )

    def __init__(self, window_size: int, scale: int = 8000) -> None:
        if window_size < 1:
            raise ValueError("window_size must be at least 1")
        self._window_size = window_size
        self._scale = scale
        self.reset()

    def reset(self) -> None:
        zeros = bytes(8 * self._window_size)
        self._counts = array("q", zeros)
        self._values = array("q", zeros)
        self._origin_index = 0
        self._origin_ms: int | None = None
        self._total_count = 0
        self._total_value = 0

    def add(self, value: int, now_ms: int) -> None:
        if self._origin_ms is None:
            self._origin_ms = now_ms
        else:
            self._erase_old(now_ms)
        index = (self._origin_index + now_ms - self._origin_ms) % self._window_size
        self._counts[index] += 1
        self._values[index] += value
        self._total_count += 1
        self._total_value += value

    def rate(self, now_ms: int) -> int | None:
        if self._origin_ms is not None:
            self._erase_old(now_ms)
            active = now_ms - self._origin_ms + 1
            if self._total_count > 0 and active > 1:
                return round(self._scale * self._total_value / active)
        return None

    def _erase_old(self, now_ms: int) -> None:
        assert self._origin_ms is not None
        new_origin = now_ms - self._window_size + 1
        steps = new_origin - self._origin_ms
        if steps <= 0:
            return
        size = self._window_size
        if steps >= size:  # the whole window is old: one clear, not one step per ms
            self.reset()
            self._origin_ms = new_origin
            return
        index, counts, values = self._origin_index, self._counts, self._values
        for _ in range(steps):
            self._total_count -= counts[index]
            self._total_value -= values[index]
            counts[index] = 0
            values[index] = 0
            index = (index + 1) % size
        self._origin_index = index
        self._origin_ms = new_origin
