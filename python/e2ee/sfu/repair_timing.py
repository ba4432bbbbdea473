"""The clocks of loss repair at the router's ingress, for
:class:`e2ee.sfu.assembler.VideoAssembler`: three smoothed estimates, each fed by the
assembler and read when it decides when to NACK.

- How long a whole frame takes to come in, from its first packet to its marker (mean
  and mean deviation, RFC 6298 §2's gains): the wait before a missing next packet is
  asked for (:attr:`RepairTiming.tail_wait`) is that plus four deviations, never less
  than a floor.
- How long a NACK takes to be answered (RFC 6298 §2, sampled only where unambiguous,
  §3): a NACK is repeated after two of these (:meth:`RepairTiming.retry_after`).
- The publisher's frame interval and its interarrival jitter (RFC 3550 §6.4.1, in
  seconds): a next frame later than one interval plus four jitters is asked for.

Pure arithmetic on times the caller passes: no clock, no I/O.
"""

from __future__ import annotations

__all__ = ["RepairTiming"]

#: The shortest wait before a NACK is repeated, however fast repairs have come.
_MIN_RETRY = 0.002
#: VP8's RTP clock (RFC 7741 §4.1), and the longest frame interval the "next frame is
#: late" rule applies to (5 frames/s; a slower or paused publisher gets no early NACK).
_VP8_CLOCK = 90000
_MAX_STEP = _VP8_CLOCK // 5


class RepairTiming:
    """``tail_wait``: the floor of :attr:`tail_wait`; ``nack_retry``: the wait before a
    NACK is repeated until a repair has been timed (seconds)."""

    __slots__ = (
        "_floor",
        "_last_ts",
        "_nack_retry",
        "_released_at",
        "_spread",
        "_spread_dev",
        "interval",
        "jitter",
        "srtt",
    )

    def __init__(self, tail_wait: float, nack_retry: float) -> None:
        if nack_retry <= 0 or tail_wait <= 0:
            raise ValueError("nack_retry and tail_wait must be positive")
        self._floor = tail_wait
        self._nack_retry = nack_retry
        self._spread = 0.0
        self._spread_dev = 0.0
        #: NACK to repair, smoothed (RFC 6298 §2, 1/8 gain); None until a repair is timed.
        self.srtt: float | None = None
        #: The last frame's RTP distance from the one before, in seconds (None: unknown,
        #: or too long for the "next frame is late" rule).
        self.interval: float | None = None
        #: Smoothed deviation of frames' arrival from their RTP spacing, in seconds.
        self.jitter = 0.0
        self._last_ts: int | None = None
        self._released_at: float | None = None

    def frame_spread(self, sample: float) -> None:
        """A whole frame took ``sample`` seconds from its first packet to its marker."""
        self._spread_dev += (abs(sample - self._spread) - self._spread_dev) / 4
        self._spread += (sample - self._spread) / 8

    @property
    def tail_wait(self) -> float:
        """The wait before a missing next packet is NACKed."""
        return max(self._floor, self._spread + 4 * self._spread_dev)

    def repaired(self, sample: float) -> None:
        """A packet NACKed once came ``sample`` seconds after its NACK."""
        srtt = self.srtt
        self.srtt = sample if srtt is None else srtt + (sample - srtt) / 8

    def retry_after(self) -> float:
        """Ask again after two round trips of NACK and repair (``nack_retry`` until one
        was timed)."""
        srtt = self.srtt
        return self._nack_retry if srtt is None else max(2 * srtt, _MIN_RETRY)

    def frame_released(self, timestamp: int, arrival: float) -> None:
        """A frame of RTP ``timestamp`` was released, its last packet in at ``arrival``."""
        if self._last_ts is not None:
            step = (timestamp - self._last_ts) & 0xFFFFFFFF
            self.interval = step / _VP8_CLOCK if 0 < step <= _MAX_STEP else None
            if self.interval is not None and self._released_at is not None:
                d = abs(arrival - self._released_at - self.interval)
                self.jitter += (d - self.jitter) / 16
        self._last_ts = timestamp
        self._released_at = arrival
