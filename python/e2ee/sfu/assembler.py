"""Ingress frame assembly: a publisher's RTP packets grouped into frames, each released the
moment it is complete, never waiting for the next one.

These stand in for aiortc's jitter buffers (:func:`e2ee.rtc.compat.set_jitter_buffer`):
aiortc's receive path calls ``add(packet)`` once per RTP packet, after SRTP, RTX unwrap,
NACK generation and depayloading (rtcrtpreceiver.py:535-551), and sends a PLI when
``add`` returns a true flag.  aiortc's own buffer releases a frame only when a packet of
the *next* frame arrives (jitterbuffer.py ``_remove_frame``): one frame interval, 33 ms
at 30 fps, added to every video frame, 20 ms to every Opus frame.  Here a frame leaves
as soon as its packets are in, in order, and the packets are kept as sent (RTP payload
with its payload descriptor), so the router relays them without repacketizing.

Video (:class:`VideoAssembler`)
    A frame is the run of packets from one that starts a VP8 frame (payload descriptor
    S=1, partition 0; RFC 7741 §4.2) through the one with the RTP marker bit (RFC 7741
    §4.1), consecutive in sequence number and sharing one RTP timestamp.  A missing packet
    holds back that frame and the ones after it (decode order) while a NACK may still
    bring it: at most ``nack_wait`` seconds (RFC 4585 §6.2.1; aiortc's receiver sends the
    NACK) or ``capacity`` buffered packets.  Then the frames up to the next frame start
    are given up and ``on_gap`` runs: the router makes every subscriber wait for a key
    frame and asks the publisher for one (RFC 4585 §6.3.1).

Audio (:class:`AudioAssembler`)
    One Opus frame per packet (RFC 7587 §4.2): each packet is released on arrival; a
    duplicate or a packet older than one already released is dropped.

Both call ``sink(payloads, timestamp)`` with the frame's RTP payloads in order and its RTP
timestamp, and never return a frame to aiortc (so aiortc's decoder path stays idle).
``sink`` is a public attribute: an embedder (or a test playing a hostile router) may put
its own in front of the forwarder's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["AudioAssembler", "FrameSink", "VideoAssembler", "vp8_frame_start"]

#: ``sink(payloads, timestamp)``: one whole frame, its RTP payloads in sequence order.
FrameSink = Callable[[list[bytes], int], None]

_HALF = 0x8000  # sequence numbers compare modulo 2**16 (RFC 3550 §A.1)


def vp8_frame_start(payload: bytes) -> bool:
    """Whether an RTP payload begins a VP8 frame: S=1 and PID=0 in the payload
    descriptor's first octet (RFC 7741 §4.2)."""
    return bool(payload) and payload[0] & 0x17 == 0x10


class VideoAssembler:
    """VP8 frames from RTP packets, released on their marker packet (see the module
    docs).  ``clock`` is for tests."""

    __slots__ = (
        "_buffer",
        "_capacity",
        "_clock",
        "_hole_since",
        "_nack_wait",
        "_next",
        "_on_gap",
        "_scan",
        "_top",
        "frames",
        "gaps",
        "late_packets",
        "packets",
        "sink",
    )

    def __init__(
        self,
        sink: FrameSink,
        on_gap: Callable[[], None],
        *,
        capacity: int = 512,
        nack_wait: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2 packets")
        if nack_wait < 0:
            raise ValueError("nack_wait must not be negative")
        self.sink = sink
        self._on_gap = on_gap
        self._capacity = capacity
        self._nack_wait = nack_wait
        self._clock = clock
        self._buffer: dict[int, Any] = {}  # sequence number -> aiortc RtpPacket
        # Sequence numbers, as distances from _next where it matters: the next frame
        # starts at _next; _next.._scan-1 are buffered without a marker; _top is the
        # furthest buffered.  A packet missing between _scan and _top is a hole.
        self._next: int | None = None
        self._scan = 0
        self._top = 0
        self._hole_since: float | None = None
        self.packets = 0
        self.frames = 0
        self.gaps = 0  # times frames were given up because a packet never came
        self.late_packets = 0  # older than what was already released or given up

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def add(self, packet: Any) -> tuple[bool, None]:
        """aiortc's jitter-buffer call: take one packet, release what it completes."""
        self.packets += 1
        seq: int = packet.sequence_number
        if self._next is None:
            if not vp8_frame_start(packet.payload):
                return False, None  # joined mid-frame, or after giving up: wait for a start
            self._restart(seq)
        assert self._next is not None
        ahead = (seq - self._next) & 0xFFFF
        if ahead >= _HALF:
            self.late_packets += 1  # a retransmission that came too late, or a duplicate
            return False, None
        while ahead >= self._capacity:
            # No room up to this packet: give up the frames held behind the hole, or,
            # if that is not enough (a long outage, a publisher restart), everything.
            resume = self._next_start()
            self._give_up(resume)
            if resume is not None:
                self._release()
            if self._next is None:
                if not vp8_frame_start(packet.payload):
                    return False, None
                self._restart(seq)
            ahead = (seq - self._next) & 0xFFFF
        self._buffer[seq] = packet
        if (seq - self._next) & 0xFFFF > (self._top - self._next) & 0xFFFF:
            self._top = seq
        self._release()
        if self._next is not None and self._buffer and (self._top - self._scan) & 0xFFFF < _HALF:
            self._check_hole()
        else:
            self._hole_since = None  # no packet waits behind a missing one
        return False, None

    def _restart(self, seq: int) -> None:
        self._next = self._scan = self._top = seq
        self._hole_since = None

    def _release(self) -> None:
        buffer = self._buffer
        while self._next is not None:
            start = self._next
            first = buffer.get(start)
            if first is None:
                return
            if not vp8_frame_start(first.payload):
                self._give_up(self._next_start())  # resumed on a frame's middle
                continue
            timestamp = first.timestamp
            seq = self._scan
            while True:
                packet = buffer.get(seq)
                if packet is None:
                    self._scan = seq
                    return
                if packet.timestamp != timestamp or (
                    seq != start and vp8_frame_start(packet.payload)
                ):
                    # The frame's marker packet never came before the next frame began.
                    self._give_up(seq)
                    break
                if packet.marker:
                    self._emit(start, seq, timestamp)
                    break
                seq = (seq + 1) & 0xFFFF

    def _emit(self, start: int, end: int, timestamp: int) -> None:
        pop = self._buffer.pop
        payloads = []
        seq = start
        while True:
            payloads.append(pop(seq).payload)
            if seq == end:
                break
            seq = (seq + 1) & 0xFFFF
        self._next = self._scan = (end + 1) & 0xFFFF
        if not self._buffer:
            self._top = self._next
        self._hole_since = None
        self.frames += 1
        self.sink(payloads, timestamp)

    def _check_hole(self) -> None:
        # Packets wait behind a missing one: give it nack_wait, or until the buffer is full.
        now = self._clock()
        full = len(self._buffer) >= self._capacity
        if self._hole_since is None:
            self._hole_since = now
        if not full and now - self._hole_since < self._nack_wait:
            return
        resume = self._next_start()
        if resume is None and not full:
            return  # nothing to resume on yet: keep the packets, wait for a frame start
        self._give_up(resume)
        self._release()

    def _next_start(self) -> int | None:
        """The buffered frame start nearest after ``_next`` (None: none buffered)."""
        base = self._next
        if base is None:
            return None
        best: int | None = None
        best_ahead = _HALF
        for seq, packet in self._buffer.items():
            ahead = (seq - base) & 0xFFFF
            if 0 < ahead < best_ahead and vp8_frame_start(packet.payload):
                best, best_ahead = seq, ahead
        return best

    def _give_up(self, resume: int | None) -> None:
        """Drop what is buffered before ``resume`` (None: everything, then wait for a
        frame start) and report the gap."""
        if resume is None or self._next is None:
            self._buffer.clear()
            self._next = None
        else:
            base = self._next
            limit = (resume - base) & 0xFFFF
            for seq in [s for s in self._buffer if (s - base) & 0xFFFF < limit]:
                del self._buffer[seq]
            self._next = self._scan = resume
            if not self._buffer:
                self._top = resume
        self._hole_since = None
        self.gaps += 1
        self._on_gap()


class AudioAssembler:
    """Opus: each RTP packet is one frame, released on arrival (see the module docs)."""

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
        if last is not None and (seq - last - 1) & 0xFFFF >= _HALF:
            self.late_packets += 1  # duplicate, or older than one already forwarded
            return False, None
        self._last = seq
        self.frames += 1
        self.sink([packet.payload], packet.timestamp)
        return False, None
