"""What the router passes from a publisher's track to its subscribers' queues.

:class:`EncodedFrame` is one frame exactly as the publisher's encoder (and encryptor)
produced it, duck-typed as an ``av.Packet`` so that aiortc's sender packetizes it without
encoding (``encoder.pack()``).  :class:`Totals` are the router-wide counters that the
ingress and egress sides update and :meth:`e2ee.sfu.router.Router.stats` reports.
"""

from __future__ import annotations

from fractions import Fraction

__all__ = ["EncodedFrame", "Totals"]


class EncodedFrame:
    """One encoded frame as forwarded: a duck-typed ``av.Packet`` for aiortc's ``pack()``.

    ``bytes(frame)`` is the frame exactly as received; ``pts`` is in ``time_base`` units
    (the RTP clock, 0-based per publisher track).
    """

    __slots__ = ("data", "keyframe", "pts", "time_base")

    def __init__(self, data: bytes, pts: int, time_base: Fraction, keyframe: bool = False):
        self.data = data
        self.pts = pts
        self.time_base = time_base
        self.keyframe = keyframe

    def __bytes__(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"EncodedFrame({len(self.data)} bytes, pts={self.pts}, key={self.keyframe})"


class Totals:
    """Router-wide counters, kept across ended streams and subscriptions."""

    __slots__ = (
        "bytes_forwarded",
        "frames_dropped_closed",
        "frames_forwarded",
        "frames_received",
        "keyframe_requests",
    )

    def __init__(self) -> None:
        self.frames_received = 0
        self.frames_forwarded = 0
        self.bytes_forwarded = 0
        self.keyframe_requests = 0
        self.frames_dropped_closed = 0  # dropped by subscriptions that have ended
