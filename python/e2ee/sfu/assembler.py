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
    first NACK) or ``capacity`` buffered packets.  Then the frames up to the next frame
    start are given up and ``on_gap`` runs: the router makes every subscriber wait for a
    key frame and asks the publisher for one (RFC 4585 §6.3.1).

    Repairs, fast: every frame given up freezes the subscribers for a PLI round trip, so
    the assembler asks for missing packets itself (``nack``, from :meth:`VideoAssembler.poll`
    at the times it hands to ``schedule``).  aiortc NACKs a hole only once, when the
    packet after it arrives; a retransmission lost too (1 in 20 at 5% loss) would wait
    out ``nack_wait``.  So a hole is NACKed again every two NACK round trips (smoothed
    over repairs of packets NACKed once, RFC 6298 §2-3; ``nack_retry`` until measured;
    the estimates are :class:`e2ee.sfu.repair_timing.RepairTiming`'s)
    until ``nack_wait``.  And a frame whose last packet was lost shows only when the next
    frame arrives, a frame interval later: after ``tail_wait`` without a packet, the next
    sequence number is NACKed.  ``tail_wait`` grows with how long whole frames take to
    come in here (smoothed spread from a frame's first packet to its marker, plus four
    deviations, RFC 6298 §2): a busy router reads a frame's packets over several loop
    turns, and a NACK for a packet already in its socket only makes the publisher send
    it twice (``e2ee bench soak``: 29 % of frames before this).  Frames with a skipped
    packet are not timed (their spread is a repair's).  A frame whose marker was asked
    for by this rule is timed only if a copy of the marker comes too: then the NACK was
    needless (a paced publisher whose packets come further apart than the wait), and
    without the sample it would be asked for every packet, for ever; with no copy the
    marker was lost, and its repair's time would only make the next wait longer.
    Likewise the next frame is asked for
    only when it is later than four times the publisher's smoothed jitter (RFC 3550
    §6.4.1), if that is longer.  A packet asked for this way that comes, by repair,
    without the frame's marker means the packets sent after it were lost with it (a
    publisher sends a frame back to back): the next one is asked for at once, not a
    ``tail_wait`` later (at 5 % loss, two tail waits were most of the longest freeze).

Audio is :class:`e2ee.sfu.audio_assembler.AudioAssembler`'s (a packet is a frame).

Both call ``sink(payloads, timestamp)`` with the frame's RTP payloads in order and its RTP
timestamp, and never return a frame to aiortc (so aiortc's decoder path stays idle).
``sink`` is a public attribute: an embedder (or a test playing a hostile router) may put
its own in front of the forwarder's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from e2ee.sfu.frames import SEQ_HALF as _HALF
from e2ee.sfu.frames import FrameSink
from e2ee.sfu.repair_timing import RepairTiming

__all__ = ["FrameSink", "VideoAssembler", "vp8_frame_start"]


def vp8_frame_start(payload: bytes) -> bool:
    """Whether an RTP payload begins a VP8 frame: S=1 and PID=0 in the payload
    descriptor's first octet (RFC 7741 §4.2)."""
    return bool(payload) and payload[0] & 0x17 == 0x10


class VideoAssembler:
    """VP8 frames from RTP packets, released on their marker packet (see the module
    docs).  ``nack(seqs)`` sends one NACK and ``schedule(when)`` asks the embedder to
    call :meth:`poll` at ``clock()`` time ``when`` (both optional: without them only
    aiortc's NACKs repair, and frames are given up on a packet's arrival).  ``clock`` is
    for tests."""

    __slots__ = (
        "_buffer",
        "_capacity",
        "_chase",
        "_clock",
        "_frame_began",
        "_frame_skipped",
        "_hole_since",
        "_last_arrival",
        "_last_ts",
        "_late_nacked",
        "_late_seq",
        "_nack",
        "_nack_wait",
        "_nacked",
        "_next",
        "_on_gap",
        "_scan",
        "_schedule",
        "_timing",
        "_top",
        "_withheld",
        "frames",
        "gaps",
        "late_packets",
        "nack_repairs",
        "nacks_sent",
        "packets",
        "sink",
        "ssrc",
        "tail_nacks",
    )

    def __init__(
        self,
        sink: FrameSink,
        on_gap: Callable[[], None],
        *,
        capacity: int = 512,
        nack_wait: float = 0.1,
        nack: Callable[[list[int]], None] | None = None,
        schedule: Callable[[float], None] | None = None,
        nack_retry: float = 0.02,
        tail_wait: float = 0.003,
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
        self._nack = nack
        self._schedule = schedule
        self._timing = RepairTiming(tail_wait, nack_retry)
        self._clock = clock
        # (RTP timestamp, arrival) of the frame start last seen, to time whole frames.
        self._frame_began: tuple[int, float] | None = None
        self._frame_skipped = False  # a packet of the frame being timed was skipped
        # A frame's spread kept back, with its marker's sequence number: the marker came
        # after a NACK for it; a copy coming later means the NACK was needless.
        self._withheld: tuple[int, float] | None = None
        self._buffer: dict[int, Any] = {}  # sequence number -> aiortc RtpPacket
        # Sequence numbers, as distances from _next where it matters: the next frame
        # starts at _next; _next.._scan-1 are buffered without a marker; _top is the
        # furthest buffered.  A packet missing between _scan and _top is a hole.
        self._next: int | None = None
        self._scan = 0
        self._top = 0
        self._hole_since: float | None = None
        self._last_arrival = 0.0
        self._late_nacked = False  # the packet due after the last arrival was NACKed
        self._late_seq: int | None = None  # the packet the "late" rule asked for last
        self._chase = False  # the last arrival was that packet, repaired, without a marker
        # Missing packets asked for: seq -> (first NACK, last NACK, sampled).  "sampled":
        # NACKed exactly once for a known hole, so its repair times the round trip
        # unambiguously (Karn's rule, RFC 6298 §3).
        self._nacked: dict[int, tuple[float, float, bool]] = {}
        self.ssrc: int | None = None  # the media SSRC packets came from (for NACKs)
        self.packets = 0
        self.frames = 0
        self.gaps = 0  # times frames were given up because a packet never came
        self.late_packets = 0  # older than what was already released or given up
        self.nacks_sent = 0  # NACK packets sent by the assembler (aiortc sends the first)
        self.nack_repairs = 0  # NACKed packets that came
        self.tail_nacks = 0  # NACKs for a late packet: a frame's last one, or a next frame

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def nack_rtt(self) -> float | None:
        """Smoothed time from a NACK to its repair (None: no sample yet)."""
        return self._timing.srtt

    def add(self, packet: Any) -> tuple[bool, None]:
        """aiortc's jitter-buffer call: take one packet, release what it completes."""
        self.packets += 1
        seq: int = packet.sequence_number
        self.ssrc = packet.ssrc
        now = self._last_arrival = self._clock()
        self._late_nacked = False
        self._time_frame(packet, now)
        late_repair = False
        if self._nacked:
            entry = self._nacked.pop(seq, None)
            if entry is not None:
                self._repaired(entry, now)
                late_repair = seq == self._late_seq and not packet.marker
        if self._next is None:
            if not vp8_frame_start(packet.payload):
                return False, None  # joined mid-frame, or after giving up: wait for a start
            self._restart(seq)
        assert self._next is not None
        ahead = (seq - self._next) & 0xFFFF
        if ahead >= _HALF:
            self.late_packets += 1  # a retransmission that came too late, or a duplicate
            withheld = self._withheld
            if withheld is not None and withheld[0] == seq:
                self._withheld = None
                self._timing.frame_spread(withheld[1])  # its NACK was needless
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
        top_ahead = (self._top - self._next) & 0xFFFF
        if ahead > top_ahead or not self._buffer:
            # _top is the furthest buffered, or with nothing buffered the next expected.
            if self._nack is not None and (ahead > top_ahead + 1 or not self._buffer):
                self._holes(seq, now)
            self._top = seq
        self._buffer[seq] = packet
        self._chase = late_repair and seq == self._top
        self._release()
        if self._next is not None and self._buffer and (self._top - self._scan) & 0xFFFF < _HALF:
            self._check_hole(now)
        else:
            self._hole_since = None  # no packet waits behind a missing one
        if self._schedule is not None:
            self._arm(now)
        return False, None

    def _time_frame(self, packet: Any, now: float) -> None:
        """Sample how long a whole frame took to come in, start to marker (only frames
        that needed no NACK: a repair would time the round trip instead)."""
        if vp8_frame_start(packet.payload):
            self._frame_began = (packet.timestamp, now)
            self._frame_skipped = False
        elif not packet.marker:
            return
        began = self._frame_began
        if not packet.marker or began is None or began[0] != packet.timestamp:
            return
        self._frame_began = None
        if self._frame_skipped:
            return
        sample = now - began[1]
        if packet.sequence_number in self._nacked:
            self._withheld = (packet.sequence_number, sample)  # a repair, or a copy next?
            return
        self._timing.frame_spread(sample)

    @property
    def tail_wait(self) -> float:
        """The wait before a missing next packet is NACKed (see the module docs)."""
        return self._timing.tail_wait

    def poll(self) -> None:
        """The timers (at the time ``schedule`` named): NACK again what a NACK did not
        bring, ask for a frame's last packet when it is late, give up after
        ``nack_wait``."""
        if self._next is None:
            return
        now = self._clock()
        if self._buffer and (self._top - self._scan) & 0xFFFF < _HALF:
            self._check_hole(now)
        if self._nack is not None and self._next is not None:
            self._send_nacks(now)
        if self._schedule is not None:
            self._arm(now)

    def _restart(self, seq: int) -> None:
        self._next = self._scan = self._top = seq
        self._hole_since = None
        self._nacked.clear()

    def _holes(self, seq: int, now: float) -> None:
        # aiortc's receiver has just NACKed every packet skipped before ``seq``
        # (rtcrtpreceiver.py:535-538, before this call): note them, to ask again.
        buffer, nacked = self._buffer, self._nacked
        s = self._top
        while s != seq:
            if s not in buffer and s not in nacked:
                nacked[s] = (now, now, True)
                self._frame_skipped = True
            s = (s + 1) & 0xFFFF

    def _repaired(self, entry: tuple[float, float, bool], now: float) -> None:
        _first, last, sampled = entry
        self.nack_repairs += 1
        if sampled:
            self._timing.repaired(now - last)

    def _late(self) -> tuple[int, float] | None:
        """The packet due next and when to NACK it if it has not come: ``tail_wait``
        after a packet that ends no frame (a publisher sends a frame's packets back to
        back); after a whole frame, one frame interval more (a frame lost whole shows
        only when the next one arrives)."""
        last = self._buffer.get(self._top)
        if last is None:
            seq = self._top  # nothing buffered: _top is the next frame's start
        else:
            seq = (self._top + 1) & 0xFFFF
            if not last.marker:
                return seq, self._last_arrival + (0.0 if self._chase else self.tail_wait)
        timing = self._timing
        if timing.interval is None:
            return None
        # A jittery publisher's next frame is often a little late: wait for that too.
        wait = max(timing.tail_wait, 4 * timing.jitter)
        return seq, self._last_arrival + timing.interval + wait

    def _send_nacks(self, now: float) -> None:
        nacked, retry, wait = self._nacked, self._timing.retry_after(), self._nack_wait
        due = [
            s
            for s, (first, last, _) in nacked.items()
            if now - last >= retry and now - first < wait
        ]
        for s in due:
            nacked[s] = (nacked[s][0], now, False)
        late = None if self._late_nacked else self._late()
        if late is not None and now >= late[1]:
            # A frame's last packet, or the next frame, is late: ask for it now rather
            # than when the packet after it shows the hole, a frame interval later.  A
            # NACK for a packet not yet sent is ignored by the sender (not in its history).
            self._late_nacked = True  # once per arrival (asked already: retries go on)
            self._late_seq = late[0]
            if late[0] not in nacked:
                if self._buffer:
                    nacked[late[0]] = (now, now, False)  # frames wait on it: ask again too
                due.append(late[0])
                self.tail_nacks += 1
        if due:
            assert self._nack is not None
            assert self._next is not None
            base = self._next
            due.sort(key=lambda s: (s - base) & 0xFFFF)
            self.nacks_sent += 1
            self._nack(due)

    def _arm(self, now: float) -> None:
        """Ask for a :meth:`poll` at the next time one of its rules is due."""
        assert self._schedule is not None
        when: float | None = None
        if self._hole_since is not None and self._hole_since + self._nack_wait > now:
            when = self._hole_since + self._nack_wait
        if self._nack is not None:
            retry, wait = self._timing.retry_after(), self._nack_wait
            for first, last, _ in self._nacked.values():
                if now - first < wait and (when is None or last + retry < when):
                    when = last + retry
            late = None if self._late_nacked else self._late()
            if late is not None and (when is None or late[1] < when):
                when = late[1]
        if when is not None:
            self._schedule(when)

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
        self._timing.frame_released(timestamp, self._last_arrival)
        self.sink(payloads, timestamp)

    def _check_hole(self, now: float) -> None:
        # Packets wait behind a missing one: give it nack_wait, or until the buffer is full.
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
            self._nacked.clear()
            self._next = None
        else:
            base = self._next
            limit = (resume - base) & 0xFFFF
            for seq in [s for s in self._buffer if (s - base) & 0xFFFF < limit]:
                del self._buffer[seq]
            for seq in [s for s in self._nacked if (s - base) & 0xFFFF < limit]:
                del self._nacked[seq]  # no longer wanted: a repair now would be late
            self._next = self._scan = resume
            if not self._buffer:
                self._top = resume
        self._hole_since = None
        self.gaps += 1
        self._on_gap()
