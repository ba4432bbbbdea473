"""What the router passes from a publisher's track to its subscribers.

:class:`RelayFrame` is one frame exactly as the publisher sent it: its RTP payloads (VP8
payload descriptor and data, or one Opus frame), in order, with the publisher's RTP
timestamp.  The router relays these payloads unchanged and rewrites only the RTP header
per subscriber (:mod:`e2ee.sfu.egress`).  :class:`Totals` are the router-wide counters
that the ingress and egress sides update and :meth:`e2ee.sfu.router.Router.stats` reports.
A :data:`FrameSink` is where the ingress assemblers put each whole frame.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["SEQ_HALF", "FrameSink", "RelayFrame", "Totals"]

#: ``sink(payloads, timestamp)``: one whole frame, its RTP payloads in sequence order.
FrameSink = Callable[[list[bytes], int], None]

#: RTP sequence numbers compare modulo 2**16: ``(a - b) & 0xFFFF < SEQ_HALF`` means ``a``
#: is not older than ``b`` (RFC 3550 §A.1).
SEQ_HALF = 0x8000


class RelayFrame:
    """One frame as relayed: ``payloads`` (RTP payloads, the last one carried the marker
    bit), ``timestamp`` (the publisher's RTP timestamp), ``keyframe``, ``size`` (payload
    bytes) and ``ntp_timestamp`` (when the router relayed it, 64-bit NTP format, RFC 3550
    §4), stamped once for all subscribers; ``abs_send_time`` is its 24-bit 6.18 fixed
    point form (the abs-send-time header extension)."""

    __slots__ = ("abs_send_time", "keyframe", "ntp_timestamp", "payloads", "size", "timestamp")

    def __init__(
        self,
        payloads: list[bytes],
        timestamp: int,
        keyframe: bool = False,
        ntp_timestamp: int = 0,
    ) -> None:
        self.payloads = payloads
        self.timestamp = timestamp
        self.keyframe = keyframe
        self.ntp_timestamp = ntp_timestamp
        self.abs_send_time = (ntp_timestamp >> 14) & 0xFFFFFF
        self.size = sum(map(len, payloads))

    def __repr__(self) -> str:
        return (
            f"RelayFrame({len(self.payloads)} packets, {self.size} bytes, "
            f"ts={self.timestamp}, key={self.keyframe})"
        )


class Totals:
    """Router-wide counters, kept across ended streams and subscriptions."""

    __slots__ = (
        "bytes_forwarded",
        "frames_dropped_closed",
        "frames_forwarded",
        "frames_received",
        "keyframe_requests",
        "packets_forwarded",
    )

    def __init__(self) -> None:
        self.frames_received = 0
        self.frames_forwarded = 0
        self.bytes_forwarded = 0
        self.packets_forwarded = 0
        self.keyframe_requests = 0
        self.frames_dropped_closed = 0  # dropped by subscriptions that have ended
