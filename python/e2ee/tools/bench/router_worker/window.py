"""What a bench subscriber records of one published track it receives, per measured
window, whichever receive path it uses (:mod:`~e2ee.tools.bench.router_worker.light` or
:mod:`~e2ee.tools.bench.router_worker.receive`).

Per delivered frame: the publisher's frame number ``n`` (the ``seq`` of the stamp the
publisher put inside the encrypted frame, :data:`~e2ee.tools.bench.router_worker.media.STAMP`)
and the CLOCK_MONOTONIC time the frame was complete here.  The parent bench matches
``n`` with the publisher's own record of when it sent frame ``n`` (same host, same
clock), so every frame at every subscriber has a latency, and computes losses and
freezes from the same record (:mod:`e2ee.tools.bench.router_figures`).  ``probes``: a
few ``(n, stamp send time)`` pairs read from decrypted frames, which the parent checks
against the publisher's record.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_PROBES", "TrackWindow"]

#: Probe samples kept per window and track (enough to check the mapping).
MAX_PROBES = 16


class TrackWindow:
    """Counters and per-frame arrivals of one (subscriber, published track)."""

    __slots__ = (
        "bytes",
        "errors",
        "first",
        "frames_total",
        "incomplete",
        "kind",
        "mismatches",
        "ns",
        "packets",
        "probes",
        "seq_gaps",
        "stream_id",
        "sub",
        "times",
        "unmapped",
        "video",
    )

    def __init__(self, sub: int, stream_id: str, kind: str) -> None:
        self.sub = sub
        self.stream_id = stream_id
        self.kind = kind
        self.video = kind == "video"
        self.frames_total = 0
        self.first: tuple[int, int] | None = None  # (n, arrival ns) of the first frame
        self.mark()

    def mark(self) -> None:
        """Start a new window."""
        self.packets = 0
        self.bytes = 0
        self.seq_gaps = 0  # RTP packets missing at this subscriber
        self.incomplete = 0  # frames with a packet missing (not delivered)
        self.errors = 0  # probes or frames that failed to decrypt or parse
        self.mismatches = 0  # probes whose stamp disagreed with the RTP mapping
        self.unmapped = 0  # frames delivered before the mapping was known
        self.ns: list[int] = []
        self.times: list[int] = []
        self.probes: list[tuple[int, int]] = []

    def delivered(self, n: int, arrival_ns: int) -> None:
        self.frames_total += 1
        if self.first is None:
            self.first = (n, arrival_ns)
        self.ns.append(n)
        self.times.append(arrival_ns)

    def probed(self, n: int, sent_ns: int) -> None:
        if len(self.probes) < MAX_PROBES:
            self.probes.append((n, sent_ns))

    def report(self) -> dict[str, Any]:
        """The window, compactly: frame numbers relative to the first, times in µs
        relative to the first."""
        n0 = self.ns[0] if self.ns else 0
        t0 = self.times[0] if self.times else 0
        return {
            "sub": self.sub,
            "stream_id": self.stream_id,
            "kind": self.kind,
            "packets": self.packets,
            "bytes": self.bytes,
            "seq_gaps": self.seq_gaps,
            "incomplete": self.incomplete,
            "errors": self.errors,
            "mismatches": self.mismatches,
            "unmapped": self.unmapped,
            "n0": n0,
            "dn": [n - n0 for n in self.ns],
            "t0_ns": t0,
            "dt_us": [(t - t0) // 1000 for t in self.times],
            "first": list(self.first) if self.first else None,
            "probes": [list(p) for p in self.probes],
        }
