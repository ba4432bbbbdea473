"""Frame assembly at the router's ingress (e2ee.sfu.assembler): frames leave on their last
packet, in order; a lost packet holds frames back only for ``nack_wait``."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from e2ee.sfu.assembler import VideoAssembler, vp8_frame_start


@dataclass
class Packet:
    sequence_number: int
    timestamp: int
    marker: bool
    payload: bytes
    ssrc: int = 7


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def frame_packets(seq: int, ts: int, count: int, tag: bytes = b"f") -> list[Packet]:
    """One VP8 frame in ``count`` packets: S=1 on the first (RFC 7741 §4.2), marker last."""
    return [
        Packet(
            (seq + i) & 0xFFFF,
            ts,
            i == count - 1,
            bytes([0x10 if i == 0 else 0x00]) + tag + bytes([i]),
        )
        for i in range(count)
    ]


class Rig:
    def __init__(self, *, timers: bool = False, **kwargs: float) -> None:
        self.clock = Clock()
        self.frames: list[tuple[int, list[bytes]]] = []
        self.gaps = 0
        self.nacks: list[list[int]] = []  # NACKs the assembler sent (not aiortc's first)
        self.polls: list[float] = []  # times the assembler asked to be polled at
        extra = {"nack": self.nacks.append, "schedule": self.polls.append} if timers else {}
        self.assembler = VideoAssembler(
            self._sink,
            self._gap,
            clock=self.clock,
            **kwargs,  # type: ignore[arg-type]
            **extra,  # type: ignore[arg-type]
        )

    def _sink(self, payloads: list[bytes], ts: int) -> None:
        self.frames.append((ts, payloads))

    def _gap(self) -> None:
        self.gaps += 1

    def add(self, *packets: Packet) -> None:
        for packet in packets:
            assert self.assembler.add(packet) == (False, None)  # never a frame for aiortc

    @property
    def timestamps(self) -> list[int]:
        return [ts for ts, _ in self.frames]


def test_frame_start_is_s_bit_with_partition_zero() -> None:
    assert vp8_frame_start(b"\x10")
    assert vp8_frame_start(b"\x90\x80\x01")  # X=1 too
    assert not vp8_frame_start(b"\x11")  # partition 1
    assert not vp8_frame_start(b"\x00")
    assert not vp8_frame_start(b"")


def test_a_frame_leaves_on_its_marker_packet_without_waiting_for_the_next() -> None:
    rig = Rig()
    a, b, c = frame_packets(100, 3000, 3)
    rig.add(a, b)
    assert rig.frames == []
    rig.add(c)
    assert rig.frames == [(3000, [a.payload, b.payload, c.payload])]
    assert rig.assembler.buffered == 0


def test_reordered_packets_within_and_across_frames_leave_in_order() -> None:
    rig = Rig()
    f1 = frame_packets(10, 1, 3)
    f2 = frame_packets(13, 2, 2)
    rig.add(f1[0], f1[2], f2[1], f2[0])
    assert rig.frames == []  # f1 is missing its middle packet
    rig.add(f1[1])
    assert rig.timestamps == [1, 2]
    assert rig.gaps == 0


def test_a_late_nack_repair_within_nack_wait_keeps_every_frame() -> None:
    rig = Rig(nack_wait=0.1)
    f1, f2, f3 = frame_packets(0, 1, 2), frame_packets(2, 2, 2), frame_packets(4, 3, 1)
    rig.add(f1[0], *f2, *f3)
    rig.clock.now = 0.09
    rig.add(*frame_packets(5, 4, 1))
    assert rig.frames == []
    rig.add(f1[1])  # the retransmission
    assert rig.timestamps == [1, 2, 3, 4]
    assert rig.gaps == 0


def test_a_packet_missing_past_nack_wait_gives_up_to_the_next_frame_start() -> None:
    rig = Rig(nack_wait=0.1)
    f1, f2, f3 = frame_packets(0, 1, 2), frame_packets(2, 2, 2), frame_packets(4, 3, 2)
    rig.add(f1[0], f2[0])  # f1[1] lost; f2 incomplete
    rig.clock.now = 0.2
    rig.add(f2[1])
    assert rig.timestamps == [2]  # f1 given up, f2 released
    assert rig.gaps == 1
    rig.add(f1[1])  # the repair comes too late
    assert rig.assembler.late_packets == 1
    rig.add(*f3)
    assert rig.timestamps == [2, 3]


def test_a_hole_waits_for_a_frame_start_before_giving_up() -> None:
    rig = Rig(nack_wait=0.05)
    f1 = frame_packets(0, 1, 4)
    rig.add(f1[0], f1[2])
    rig.clock.now = 1.0
    rig.add(f1[3])  # past nack_wait but nothing to resume on: keep waiting
    assert rig.gaps == 0
    rig.add(*frame_packets(4, 2, 1))
    assert rig.timestamps == [2]
    assert rig.gaps == 1


def test_a_missing_marker_is_detected_when_the_next_frame_starts() -> None:
    rig = Rig()
    broken = frame_packets(0, 1, 2)
    broken[1].marker = False  # the publisher's marker never came
    rig.add(*broken, *frame_packets(2, 2, 1))
    assert rig.timestamps == [2]
    assert rig.gaps == 1


def test_joining_mid_frame_waits_for_a_frame_start() -> None:
    rig = Rig()
    f1, f2 = frame_packets(0, 1, 3), frame_packets(3, 2, 2)
    rig.add(f1[1], f1[2], *f2)
    assert rig.timestamps == [2]
    assert rig.gaps == 0


def test_sequence_numbers_wrap() -> None:
    rig = Rig()
    rig.add(*frame_packets(65534, 1, 3), *frame_packets(1, 2, 2))
    assert rig.timestamps == [1, 2]


def test_capacity_bounds_what_waits_behind_a_hole() -> None:
    rig = Rig(capacity=8, nack_wait=100.0)
    first = frame_packets(0, 1, 2)
    rig.add(first[0])  # first[1] is lost
    for n in range(4):
        rig.add(*frame_packets(2 + 2 * n, 2 + n, 2))
    assert rig.assembler.buffered <= 8
    assert rig.gaps == 1
    assert rig.timestamps[0] == 2  # resumed on the next frame start, without waiting
    rig.add(*frame_packets(2000, 99, 1))  # far ahead: start over
    assert rig.timestamps[-1] == 99


def test_a_lost_retransmission_is_nacked_again_until_nack_wait() -> None:
    rig = Rig(timers=True, nack_wait=0.1, nack_retry=0.02)
    f1, f2 = frame_packets(0, 1, 3), frame_packets(3, 2, 2)
    rig.add(f1[0], f1[2])  # f1[1] lost: aiortc NACKs it now, the assembler notes it
    assert rig.nacks == []
    assert rig.polls[-1] == pytest.approx(0.02)
    rig.clock.now = 0.019
    rig.assembler.poll()
    assert rig.nacks == []  # not yet: the first NACK's repair may still come
    rig.clock.now = 0.02
    rig.assembler.poll()
    assert rig.nacks == [[1]]
    rig.clock.now = 0.04
    rig.assembler.poll()
    assert rig.nacks == [[1], [1]]
    rig.add(*f2)  # a frame start to resume on, should the hole stay
    rig.clock.now = 0.0995
    rig.assembler.poll()
    rig.clock.now = 0.1
    rig.assembler.poll()  # nack_wait is over: give up, without waiting for a packet
    assert rig.gaps == 1
    assert rig.timestamps == [2]
    assert len(rig.nacks) == 3  # at 0.02, 0.04 and 0.0995 (the test polls only then)
    rig.clock.now = 0.5
    rig.assembler.poll()
    assert len(rig.nacks) == 3  # nothing asked for a frame given up


def test_a_frame_lost_whole_after_a_complete_one_is_nacked_again() -> None:
    rig = Rig(timers=True, nack_wait=0.1, nack_retry=0.02)
    rig.add(*frame_packets(0, 0, 2))  # complete: nothing buffered
    rig.add(*frame_packets(3, 6000, 1))  # seq 2, the frame between, is lost
    rig.clock.now = 0.02
    rig.assembler.poll()
    assert rig.nacks == [[2]]
    rig.add(*frame_packets(2, 3000, 1))
    assert rig.timestamps == [0, 3000, 6000]
    assert rig.gaps == 0


def test_the_retry_interval_follows_measured_repairs() -> None:
    rig = Rig(timers=True, nack_wait=0.1, nack_retry=0.02)
    f1, f2 = frame_packets(0, 1, 3), frame_packets(3, 2, 3)
    rig.add(f1[0], f1[2])
    rig.clock.now = 0.004
    rig.add(f1[1])  # repaired 4 ms after aiortc's NACK
    assert rig.assembler.nack_rtt == pytest.approx(0.004)
    assert rig.assembler.nack_repairs == 1
    rig.clock.now = 1.0
    rig.polls.clear()
    rig.add(f2[0], f2[2])
    assert rig.polls[-1] == pytest.approx(1.008)  # two round trips, not nack_retry
    rig.clock.now = 1.008
    rig.assembler.poll()
    assert rig.nacks == [[4]]
    rig.clock.now = 1.009
    rig.add(f2[1])  # NACKed twice: which NACK it answers is unknown, no sample (Karn)
    assert rig.assembler.nack_rtt == pytest.approx(0.004)
    assert rig.timestamps == [1, 2]
    assert rig.gaps == 0


def test_a_lost_last_packet_is_nacked_after_tail_wait() -> None:
    rig = Rig(timers=True, tail_wait=0.01)
    f1, f2 = frame_packets(0, 1, 3), frame_packets(3, 2, 2)
    rig.add(f1[0], f1[1])  # f1[2], its marker packet, is lost
    assert rig.polls[-1] == pytest.approx(0.01)
    rig.clock.now = 0.009
    rig.assembler.poll()
    assert rig.nacks == []
    rig.clock.now = 0.01
    rig.assembler.poll()
    assert rig.nacks == [[2]]  # asked for before the next frame shows the hole
    assert rig.assembler.tail_nacks == 1
    rig.clock.now = 0.012
    rig.add(f1[2])  # the repair
    assert rig.timestamps == [1]
    rig.clock.now = 0.033
    rig.add(*f2)
    assert rig.timestamps == [1, 2]
    assert rig.gaps == 0


def test_timers_never_ask_to_run_again_at_once() -> None:
    # A late packet already asked for (its retries are timed) must not keep the "late"
    # rule due: that would poll in a loop until the next packet.
    rig = Rig(timers=True, tail_wait=0.01, nack_retry=0.02)
    f1 = frame_packets(0, 1, 4)
    rig.add(f1[0], f1[2])  # f1[1] lost (aiortc NACKs it), f1[3] late
    rig.clock.now = 0.01
    rig.assembler.poll()
    assert rig.nacks == [[3]]
    rig.clock.now = 0.011
    rig.add(f1[1])  # a repair: the late one is still missing
    for now in (0.021, 0.025, 0.032):
        rig.clock.now = now
        rig.assembler.poll()
        assert rig.polls[-1] > now
    assert rig.nacks == [[3], [3]]  # its retry: two round trips (11 ms) after 0.01
    rig.add(f1[3])
    assert rig.timestamps == [1]


def test_no_nack_when_frames_come_complete_and_on_time() -> None:
    rig = Rig(timers=True, tail_wait=0.01)
    for n in range(4):
        rig.clock.now = n / 30
        rig.add(*frame_packets(3 * n, 3000 * n, 3))  # 30 frames/s on the 90 kHz clock
        rig.clock.now += 0.03
        rig.assembler.poll()
    assert rig.timestamps == [0, 3000, 6000, 9000]
    assert rig.nacks == []
    assert rig.assembler.nacks_sent == 0


def test_a_frame_lost_whole_is_nacked_a_frame_interval_and_tail_wait_on() -> None:
    rig = Rig(timers=True, tail_wait=0.01)
    rig.add(*frame_packets(0, 0, 2))
    rig.clock.now = 1 / 30
    rig.add(*frame_packets(2, 3000, 2))  # the next frame (seq 4, one packet) is lost
    assert rig.polls[-1] == pytest.approx(2 / 30 + 0.01)
    rig.clock.now = 2 / 30 + 0.009
    rig.assembler.poll()
    assert rig.nacks == []
    rig.clock.now = 2 / 30 + 0.01
    rig.assembler.poll()
    assert rig.nacks == [[4]]  # not at 3/30, when the frame after it would show the hole
    rig.clock.now = 0.5
    rig.assembler.poll()
    assert rig.nacks == [[4]]  # a publisher that paused gets one NACK, not a stream
    rig.add(*frame_packets(4, 6000, 1))
    assert rig.timestamps == [0, 3000, 6000]
    assert rig.gaps == 0


def test_without_timers_only_aiortc_nacks() -> None:
    rig = Rig(nack_wait=0.1)
    rig.add(frame_packets(0, 1, 3)[0])
    rig.clock.now = 1.0
    rig.assembler.poll()
    assert rig.assembler.nacks_sent == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="capacity"):
        VideoAssembler(lambda p, t: None, lambda: None, capacity=1)
    with pytest.raises(ValueError, match="nack_wait"):
        VideoAssembler(lambda p, t: None, lambda: None, nack_wait=-1)
    with pytest.raises(ValueError, match="nack_retry"):
        VideoAssembler(lambda p, t: None, lambda: None, nack_retry=0)


def test_tail_wait_follows_how_long_frames_take_to_come_in() -> None:
    # A busy router reads a frame's packets over several loop turns: 15 ms apart here.
    rig = Rig(timers=True, tail_wait=0.01)
    for n in range(12):
        a, b, c = frame_packets(3 * n, 9000 * n, 3)
        rig.clock.now = n / 10
        rig.add(a)
        rig.clock.now += 0.015
        rig.add(b)
        rig.clock.now += 0.015
        rig.add(c)
    assert rig.assembler.tail_wait > 0.03  # spread 30 ms, plus its deviation
    assert rig.nacks == []
    a, b, c = frame_packets(36, 9000 * 12, 3)
    rig.clock.now = 1.2
    rig.add(a, b)
    wait = rig.assembler.tail_wait
    rig.clock.now = 1.2 + 0.02
    rig.assembler.poll()
    assert rig.nacks == []  # 20 ms late is usual here: no NACK (it would be sent twice)
    rig.clock.now = 1.2 + wait
    rig.assembler.poll()
    assert rig.nacks == [[38]]  # still asked for once it is later than frames ever are
    rig.add(c)
    assert rig.timestamps[-1] == 9000 * 12
    assert rig.gaps == 0


def test_tail_wait_stays_at_its_floor_when_frames_come_at_once() -> None:
    rig = Rig(timers=True, tail_wait=0.01)
    for n in range(10):
        rig.clock.now = n / 30
        rig.add(*frame_packets(3 * n, 3000 * n, 3))
    assert rig.assembler.tail_wait == pytest.approx(0.01)


def test_a_jittery_publishers_late_frame_is_not_asked_for_at_once() -> None:
    # 10 frames/s whose frames come up to 25 ms early or late, one packet each.
    rig = Rig(timers=True, tail_wait=0.01)
    for n in range(20):
        rig.clock.now = n / 10 + (0.025 if n % 2 else -0.025)
        rig.add(*frame_packets(n, 9000 * n, 1))
    last = rig.clock.now
    rig.clock.now = last + 0.1 + 0.03  # the next frame is 30 ms late: usual here
    rig.assembler.poll()
    assert rig.nacks == []
    rig.clock.now = last + 0.1 + 0.3  # far later than this publisher ever is
    rig.assembler.poll()
    assert rig.nacks == [[20]]


def test_a_late_packet_repaired_without_its_marker_has_the_next_asked_for_at_once() -> None:
    # A publisher sends a frame back to back: when the packet asked for by the "late" rule
    # comes by repair and is not the marker, the packets after it were lost with it.
    rig = Rig(timers=True, tail_wait=0.003)
    f1, f2 = frame_packets(0, 1, 4), frame_packets(4, 2, 2)
    rig.add(f1[0], f1[1])  # f1[2] and f1[3] are lost
    rig.clock.now = 0.003
    rig.assembler.poll()
    assert rig.nacks == [[2]]
    rig.clock.now = 0.004
    rig.add(f1[2])  # its repair
    assert rig.polls[-1] <= 0.004  # due now, not a tail wait later
    rig.assembler.poll()
    assert rig.nacks == [[2], [3]]
    assert rig.assembler.tail_nacks == 2
    rig.clock.now = 0.005
    rig.add(f1[3])  # the marker's repair: the next frame is due a frame interval on
    rig.assembler.poll()
    assert rig.nacks == [[2], [3]]
    rig.clock.now = 1 / 30
    rig.add(*f2)
    assert rig.timestamps == [1, 2]
    assert rig.gaps == 0


def test_a_repair_of_a_skipped_packet_does_not_chase_the_next() -> None:
    # aiortc found this hole (a later packet came): the packets after it are not lost.
    rig = Rig(timers=True, tail_wait=0.003)
    f1 = frame_packets(0, 1, 4)
    rig.add(f1[0], f1[2])  # f1[1] skipped: aiortc NACKs it
    rig.clock.now = 0.001
    rig.add(f1[1])  # its repair; f1[3] is only 1 ms later than f1[2]
    rig.assembler.poll()
    assert rig.nacks == []
    assert rig.polls[-1] == pytest.approx(0.004)  # a tail wait on, as after any packet


def test_a_paced_publisher_is_asked_for_packets_only_until_its_spread_is_timed() -> None:
    # Packets 6 ms apart (a pacer), twice the default floor: the first frame's are asked
    # for, and the sender answers with copies of packets that were not lost; a copy of
    # the marker shows the NACK was needless, so that frame's spread (12 ms) is timed.
    rig = Rig(timers=True)
    assert rig.assembler.tail_wait == pytest.approx(0.003)
    for n in range(6):
        frame = frame_packets(3 * n, 3000 * n, 3)
        for i, packet in enumerate(frame):
            rig.clock.now = n / 30 + 0.006 * i
            rig.add(packet)
            if i < 2:
                rig.clock.now += 0.0045  # the loop runs the timer before the next packet
                rig.assembler.poll()
        rig.clock.now += 0.001
        rig.add(*(p for p in frame if [p.sequence_number] in rig.nacks))  # the copies
    assert rig.nacks == [[1], [2]]  # the first frame only
    assert rig.assembler.tail_wait > 0.006
    assert rig.timestamps == [3000 * n for n in range(6)]


def test_a_repaired_marker_does_not_lengthen_the_tail_wait() -> None:
    # A lost marker comes by repair, late: that is no frame's spread (no copy follows).
    rig = Rig(timers=True)
    rig.add(*frame_packets(0, 0, 3))
    rig.clock.now = 1 / 30
    frame = frame_packets(3, 3000, 3)
    rig.add(*frame[:2])  # its marker is lost: asked for after the tail wait
    rig.clock.now += 0.003
    rig.assembler.poll()
    assert rig.nacks == [[5]]
    rig.clock.now += 0.001
    rig.add(frame[2])  # the repair
    assert rig.timestamps == [0, 3000]
    assert rig.assembler.tail_wait == pytest.approx(0.003)  # not 4 ms and its deviation
