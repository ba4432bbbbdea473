"""What ``e2ee bench soak`` records of one subscription (:class:`Flow`), from
``subscribe`` to its end (the partner left: its stream was destroyed; or the run ended).
Every decoded video frame is a tick.  Its longest gap is the longest time between two
decrypted, decoded frames, and at the end of the run also the time since its last one.
Time to the first frame is reported on its own, not as a gap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FIRST_FRAME_TIMEOUT", "NOTED_GAP", "Flow"]

#: A subscription with no frame this long after ``subscribe`` counts as never received.
FIRST_FRAME_TIMEOUT = 10.0
#: Gaps at least this long are kept with when they ended, to line them up with the
#: server's and the clients' own stalls.
NOTED_GAP = 0.5


@dataclass
class Flow:
    """One subscription of ``subscriber`` to ``publisher``'s stream."""

    publisher: str
    subscriber: str
    started: float
    first: float | None = None
    last: float | None = None
    frames: int = 0
    max_gap: float = 0.0
    ended: float | None = None
    end_reason: str = ""
    #: (time.monotonic() the gap ended, its length in s) for gaps of NOTED_GAP or more
    #: (CLOCK_MONOTONIC is one clock for every process of the machine).
    long_gaps: list[tuple[float, float]] = field(default_factory=list)

    def tick(self, now: float) -> None:
        if self.ended is not None:
            return
        if self.first is None:
            self.first = now
        elif self.last is not None:
            self._gap(now, now - self.last)
        self.last = now
        self.frames += 1

    def _gap(self, now: float, gap: float) -> None:
        self.max_gap = max(self.max_gap, gap)
        if gap >= NOTED_GAP:
            self.long_gaps.append((now, gap))

    def end(self, now: float, reason: str, *, trailing: bool) -> None:
        """Ends the flow; ``trailing``: the time since the last frame counts as a gap
        (the run ended, the stream was still meant to flow)."""
        if self.ended is not None:
            return
        if trailing and self.last is not None:
            self._gap(now, now - self.last)
        self.ended, self.end_reason = now, reason

    def gap_now(self, now: float) -> float:
        """The longest gap so far, the current one included."""
        current = now - self.last if self.last is not None and self.ended is None else 0.0
        return max(self.max_gap, current)

    def never_received(self, now: float) -> bool:
        end = self.ended if self.ended is not None else now
        return self.frames == 0 and end - self.started > FIRST_FRAME_TIMEOUT

    def report(self) -> dict[str, Any]:
        first = None if self.first is None else round((self.first - self.started) * 1000, 1)
        return {
            "publisher": self.publisher,
            "subscriber": self.subscriber,
            "frames": self.frames,
            "first_frame_ms": first,
            "max_gap_s": round(self.max_gap, 3),
            "seconds": round((self.ended or time.monotonic()) - self.started, 1),
            "end": self.end_reason,
            "last_frame_s": None if self.last is None else round(self.last - self.started, 1),
            "never_received": self.never_received(time.monotonic()),
            "long_gaps": self.long_gaps,
        }
