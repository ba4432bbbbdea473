"""Ingress frame assembly for audio: one Opus frame per RTP packet (RFC 7587 §4.2), so
each packet is a whole frame, released on arrival; a duplicate or a packet older than one
already released is dropped.  It stands in for aiortc's audio jitter buffer as
:class:`e2ee.sfu.assembler.VideoAssembler` does for video (see there), which would hold
every Opus frame until the next one came, 20 ms later."""

from __future__ import annotations

from typing import Any

from e2ee.sfu.frames import SEQ_HALF, FrameSink

__all__ = ["AudioAssembler"]


class AudioAssembler:
    """Opus: each RTP packet is one frame, released on arrival (see the module docs);
    ``sink(payloads, timestamp)`` takes it."""

    __slots__ = ("_last", "frames", "late_packets", "packets", "sink")

    def __init__(self, sink: FrameSink) -> None:
        self.sink = sink
        self._last: int | None = None
        self.packets = 0
        self.frames = 0
        self.late_packets = 0

    @property
    def capacity(self) -> int:
        return 1

    def add(self, packet: Any) -> tuple[bool, None]:
        self.packets += 1
        seq: int = packet.sequence_number
        last = self._last
        if last is not None and (seq - last - 1) & 0xFFFF >= SEQ_HALF:
            self.late_packets += 1  # duplicate, or older than one already forwarded
            return False, None
        self._last = seq
        self.frames += 1
        self.sink([packet.payload], packet.timestamp)
        return False, None
