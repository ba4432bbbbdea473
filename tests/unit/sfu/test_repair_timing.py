"""The loss-repair clocks of the router's ingress (e2ee.sfu.repair_timing)."""

from __future__ import annotations

import pytest

from e2ee.sfu.repair_timing import RepairTiming


def test_tail_wait_is_the_frame_spread_plus_four_deviations_above_a_floor() -> None:
    timing = RepairTiming(tail_wait=0.003, nack_retry=0.02)
    assert timing.tail_wait == 0.003
    for _ in range(50):
        timing.frame_spread(0.010)
    assert timing.tail_wait == pytest.approx(0.010, rel=0.02)  # steady: no deviation
    timing.frame_spread(0.030)
    assert timing.tail_wait > 0.012 + 4 * 0.004  # one late frame widens it at once
    for _ in range(100):
        timing.frame_spread(0.0)
    assert timing.tail_wait == 0.003


def test_a_nack_is_repeated_after_two_round_trips_once_one_is_timed() -> None:
    timing = RepairTiming(tail_wait=0.003, nack_retry=0.02)
    assert timing.srtt is None
    assert timing.retry_after() == 0.02
    timing.repaired(0.010)
    assert timing.srtt == 0.010
    assert timing.retry_after() == 0.020
    timing.repaired(0.018)
    assert timing.srtt == pytest.approx(0.011)  # RFC 6298 §2: gain 1/8
    for _ in range(100):
        timing.repaired(0.0001)
    assert timing.retry_after() == 0.002  # never sooner than this


def test_the_frame_interval_and_jitter_come_from_rtp_time_and_arrivals() -> None:
    timing = RepairTiming(tail_wait=0.003, nack_retry=0.02)
    timing.frame_released(0, 0.0)
    assert timing.interval is None
    timing.frame_released(3000, 1 / 30)  # 30 fps, on time
    assert timing.interval == pytest.approx(1 / 30)
    assert timing.jitter == 0.0
    timing.frame_released(6000, 2 / 30 + 0.016)  # 16 ms late
    assert timing.jitter == pytest.approx(0.001)  # RFC 3550 §6.4.1: gain 1/16
    timing.frame_released(6000 + 90000, 10.0)  # a second apart: past the 5 fps limit
    assert timing.interval is None
    timing.frame_released(6000 + 90000 - 3000, 10.1)  # backwards (a reset): no interval
    assert timing.interval is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        RepairTiming(tail_wait=0, nack_retry=0.02)
    with pytest.raises(ValueError, match="positive"):
        RepairTiming(tail_wait=0.003, nack_retry=0)
