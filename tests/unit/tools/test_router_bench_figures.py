"""The figures, validity and targets of ``e2ee bench router``, from readings made up
here: latency from the publisher's send record, frames lost, freezes (less a loss burst),
PLI round trips, when a step is not valid, and how the targets read."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from e2ee.tools.bench.router_figures import percentile, step_figures
from e2ee.tools.bench.router_report import format_table, holds, targets
from e2ee.tools.bench.router_scenarios import parse_loss

MS = 1_000_000
T0 = 1_000 * MS  # the window: 1 s from T0
T1 = T0 + 1_000 * MS
FRAME = 33 * MS


def _sent(n: int) -> int:
    return T0 - 100 * MS + n * FRAME


def _receiver(
    sub: int, latency_ms: float, missing: frozenset[int] = frozenset(), kind: str = "video"
) -> dict[str, Any]:
    ns = [n for n in range(40) if n not in missing]
    times = [_sent(n) + int(latency_ms * MS) for n in ns]
    return {
        "sub": sub,
        "stream_id": "s1",
        "kind": kind,
        "packets": 3 * len(ns),
        "bytes": 3000 * len(ns),
        "seq_gaps": 0,
        "incomplete": 0,
        "errors": 0,
        "mismatches": 0,
        "unmapped": 0,
        "n0": ns[0],
        "dn": [n - ns[0] for n in ns],
        "t0_ns": times[0],
        "dt_us": [(t - times[0]) // 1000 for t in times],
        "first": [0, _sent(0) + 20 * MS],
        "probes": [[ns[0], _sent(ns[0])]],
    }


def _readings(**over: Any) -> dict[str, Any]:
    publisher = {
        "sent": {
            "video": {"n0": 0, "sent_ns": [_sent(n) for n in range(40)]},
            "audio": {"n0": 0, "sent_ns": [_sent(n) for n in range(40)]},
        },
        "plis": [[_sent(0) - 10 * MS, 0, _sent(0)]],
        "uplink": {
            "loss_p": 0.0,
            "packets_sent": {"video": 120, "rtx": 0, "audio": 40},
            "packets_dropped": {"video": 0, "rtx": 0, "audio": 0},
            "frames_affected": {"video": [], "audio": []},
            "bursts_ns": [],
        },
    }
    reports = [
        {
            "receivers": [
                _receiver(0, 5.0, missing=frozenset(range(10, 15))),
                _receiver(1, 2.0),
                _receiver(0, 1.0, kind="audio"),
            ],
            "other_packets": 0,
        }
    ]
    readings: dict[str, Any] = {
        "window": 1.0,
        "t0_ns": T0,
        "t1_ns": T1,
        "fps": 30,
        "router_cpu": 0.25,
        "processes": [
            {"role": "publisher", "pid": 1, "cpu_s": 0.05},
            {"role": "subscriber", "pid": 2, "cpu_s": 0.20},
        ],
        "bench_cpu": 0.01,
        "machine": (0.6, 1.4),
        "cpus": {0: (0.3, 0.7), 1: (0.3, 0.7)},
        "router_cpus": {0},
        "load_cpus": {1},
        "rss": 100 * 2**20,
        "stats0": {},
        "stats1": {},
        "reports": reports,
        "publishers": {"s1": publisher},
    }
    readings.update(over)
    return readings


def test_latency_starts_when_the_last_packet_left_the_publisher() -> None:
    readings = _readings()
    # The publisher sent every video frame's last packet 3 ms after stamping it.
    readings["publishers"]["s1"]["wire"] = {
        "video": {"n": list(range(40)), "ns": [_sent(n) + 3 * MS for n in range(40)]},
        "audio": {"n": [], "ns": []},
    }
    step = step_figures(**readings)
    assert step["latency"]["video"]["max_ms"] == 2.0  # 5 ms - 3 ms
    assert step["latency"]["audio"]["p50_ms"] == 1.0  # no wire times: the stamp's
    assert step["publisher_delay"]["video"]["p50_ms"] == 3.0
    assert step["mapping"]["stamp_mismatches"] == 0  # probes still match the stamps


def test_latency_losses_and_freezes() -> None:
    step = step_figures(**_readings())
    video = step["latency"]["video"]
    assert video["n"] == 35 + 40
    assert video["p50_ms"] == 2.0  # 40 frames at 2 ms, 35 at 5 ms
    assert video["max_ms"] == 5.0
    assert step["latency"]["audio"]["p50_ms"] == 1.0
    # Expected: frames sent from T0 to 0.5 s before T1 (n = 4..18); receiver 0 missed 10-14.
    assert step["frames_lost"] == {"video": 5, "audio": 0}
    # Receiver 0 got frame 9 and then frame 15: six frame intervals.
    assert step["longest_freeze_ms"] == pytest.approx(6 * 33, abs=0.01)
    assert step["pli_rtt_ms"] == {"window": [], "join": [15.0, 12.0]}  # PLI before the window
    assert step["mapping"]["stamp_mismatches"] == 0
    assert step["cpu_per_packet_us"] == pytest.approx(1e6 * 0.25 / (3 * (35 + 40 + 40)), abs=0.01)
    gens = step["load_generators"]
    assert gens["cpu_percent_of_one_core"] == 25.0
    assert gens["max_process_percent"] == 20.0
    assert gens["cpus_busy_percent"] == 30.0
    assert step["validity"] == {"valid": True, "reasons": [], "warnings": []}
    assert "loss" not in step


def test_a_stamp_that_disagrees_with_the_publisher_counts() -> None:
    readings = _readings()
    readings["reports"][0]["receivers"][1]["probes"] = [[3, _sent(3) + 1]]
    step = step_figures(**readings)
    assert step["mapping"]["stamp_mismatches"] == 1
    assert step["validity"]["warnings"]


def test_saturated_generators_make_a_step_invalid() -> None:
    busy = _readings(processes=[{"role": "subscriber", "pid": 7, "cpu_s": 0.9}])
    step = step_figures(**busy)
    assert not step["validity"]["valid"]
    assert "subscriber process 7 at 90% of a core" in step["validity"]["reasons"][0]
    full = _readings(cpus={0: (0.3, 0.7), 1: (0.97, 0.03)})
    step = step_figures(**full)
    assert not step["validity"]["valid"]
    assert "97% busy" in step["validity"]["reasons"][0]
    shared = _readings(cpus={0: (0.6, 0.4), 1: (0.3, 0.7)})
    step = step_figures(**shared)
    assert step["validity"]["valid"]  # others on the router's CPU: a warning only
    assert "35% of the router's CPU" in step["validity"]["warnings"][0]
    starved = _readings(cpus={0: (0.6, 0.4), 1: (0.3, 0.7)}, router_wait=0.3)
    step = step_figures(**starved)
    assert not step["validity"]["valid"]  # ... unless the router waited for its CPU
    assert "the router waited 30% of the window" in step["validity"]["reasons"][0]


def test_loss_figures_hold_the_freeze_beyond_a_burst_to_the_bound() -> None:
    readings = _readings()
    uplink = readings["publishers"]["s1"]["uplink"]
    uplink["packets_dropped"] = {"video": 12, "rtx": 1, "audio": 2}
    uplink["frames_affected"] = {"video": [7, 10, 11, 12, 13, 14], "audio": [3]}
    burst = (_sent(10) - 2 * MS, _sent(14) + 10 * MS)
    uplink["bursts_ns"] = [list(burst)]
    readings["publishers"]["s1"]["plis"].append([_sent(14), 15, _sent(15)])
    step = step_figures(**readings, loss=True)
    loss = step["loss"]
    assert loss["packets_dropped"] == {"video": 12, "rtx": 1, "audio": 2}
    assert loss["frames_hit"] == 6
    # Frame 7 was repaired for both receivers; 10-14 reached receiver 1 only.
    assert loss["frames_hit_at_subscribers"] == 12
    assert loss["frames_recovered_at_subscribers"] == 2 + 5
    # The PLI in the window: sent at frame 14's time, key frame 15 arrived 2 and 5 ms
    # after its send time.
    assert step["pli_rtt_ms"]["window"] == [38.0, 35.0]
    assert loss["pli_rtt_ms"]["source"] == "window"
    assert loss["freeze_bound_ms"] == pytest.approx(36.5 + 1000 / 30, abs=0.01)
    assert loss["longest_freeze_ms"] == pytest.approx(198.0, abs=0.01)
    burst_ms = (burst[1] - burst[0]) / MS
    assert loss["outages_ms"] == [round(burst_ms, 1)]
    assert loss["longest_freeze_beyond_outage_ms"] == pytest.approx(198.0 - burst_ms, abs=0.01)
    assert loss["within_bound"] is True


def test_random_loss_is_held_to_the_bound_by_what_it_added_not_by_publisher_jitter() -> None:
    readings = _readings()
    publisher = readings["publishers"]["s1"]
    publisher["plis"] = [[_sent(0) - MS, 0, _sent(0)]]  # round trips 6 and 3 ms
    publisher["uplink"]["frames_affected"] = {"video": [7], "audio": []}
    publisher["sent"]["video"]["sent_ns"][20] += 6 * MS  # the publisher's timer, late
    receivers = [_receiver(0, 5.0), _receiver(1, 2.0)]
    for rx in receivers:
        rx["dt_us"][20] += 6000  # frame 20 arrives as late as it was sent
    receivers[1]["dt_us"][7] += 4000  # frame 7's repair: 4 ms more for receiver 1
    readings["reports"] = [{"receivers": receivers, "other_packets": 0}]
    step = step_figures(**readings, loss=True)
    loss = step["loss"]
    bound = 4.5 + 1000 / 30
    assert loss["freeze_bound_ms"] == pytest.approx(bound, abs=0.01)
    assert loss["freeze_added_by_loss_ms"]["max"] == pytest.approx(4.0, abs=0.01)
    assert loss["freeze_from_loss_ms"] == pytest.approx(1000 / 30 + 4.0, abs=0.01)
    assert loss["within_bound_from_loss"] is True
    # As seen, the late-sent frame 20 is the longest freeze (39 ms), over the bound.
    assert loss["longest_freeze_beyond_outage_ms"] == pytest.approx(39.0, abs=0.01)
    assert loss["within_bound"] is False
    step.update(mode="1%", validity={"valid": True, "reasons": [], "warnings": []})
    report = _report([])
    report["scenarios"]["loss"] = {"steps": [step]}
    (target,) = [t for t in targets(report) if t["name"].startswith("loss 1%")]
    assert target["met"] is True
    assert "4.0 ms the loss added" in target["detail"]


def _step(
    s: int, valid: bool = True, fps: float = 30.0, lost: int = 0, **lat: float
) -> dict[str, Any]:
    step = step_figures(**_readings())
    step = copy.deepcopy(step)
    step["subscribers"] = s
    step["validity"] = {"valid": valid, "reasons": [] if valid else ["busy"], "warnings": []}
    step["delivered_fps"] = {"mean": fps, "min": fps, "max": fps}
    step["frames_lost"] = {"video": lost, "audio": 0}
    step["latency"]["video"].update(lat)
    step["cpu_per_packet_us"] = 12.0
    return step


def _report(
    fanout: list[dict[str, Any]], mesh: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "config": {"seconds": 1.0, "subscriber_kind": "light"},
        "media": {"width": 640, "height": 480, "fps": 30, "video_bitrate_bps": 1e6},
        "pinning": {"router_cpus": [0], "load_generator_cpus": [1]},
        "scenarios": {"fanout": {"steps": fanout, "stopped": "all steps done"}},
    }
    if mesh is not None:
        report["scenarios"]["mesh"] = {"steps": mesh}
    report["targets"] = targets(report)
    return report


def test_targets_read_met_not_met_and_not_measured() -> None:
    mesh = _step(0, p99_ms=12.0)
    mesh["parties"] = 10
    report = _report([_step(1), _step(50, p50_ms=3.0, p99_ms=9.0), _step(100), _step(200)], [mesh])
    verdicts = {t["name"]: t["met"] for t in report["targets"]}
    assert list(verdicts.values()) == [True, True, True, True]
    table = format_table(report)
    assert "targets (issue 13):" in table
    assert "Janus 1.1" in table
    assert "largest S that holds: 200" in table

    report = _report([_step(1), _step(50, p50_ms=9.0, p99_ms=30.0), _step(100, fps=20.0)])
    met = [t["met"] for t in report["targets"]]
    assert met == [False, True, False, None]  # latency, µs/packet, S=200, no mesh run

    # The router lost the publisher on the way to 200: not met.
    report = _report([_step(1), _step(50), _step(100)])
    report["scenarios"]["fanout"]["failed"] = {"subscribers": 200, "joined": 130, "reason": "x"}
    (fanout,) = [t for t in targets(report) if "200 subscribers" in t["name"]]
    assert fanout["met"] is False
    assert "lost with 130 subscribers in (largest S that holds: 100)" in fanout["detail"]

    # Steps that are not valid measure nothing.
    report = _report([_step(1), _step(50, valid=False), _step(200, valid=False)])
    met = [t["met"] for t in report["targets"]]
    assert met[:3] == [None, None, None]
    assert "INVALID: busy" in format_table(report)
    assert not holds(_step(200, valid=False))
    assert not holds(_step(200, lost=1))
    full = _step(200)
    full["router"]["cpu_percent_of_one_core"] = 95.2  # no headroom: queues grow
    assert not holds(full)


def test_loss_modes_and_percentiles() -> None:
    assert parse_loss("1%").p == 0.01
    assert parse_loss("0.5%").label == "0.5%"
    assert parse_loss("burst300").burst_ms == 300
    assert parse_loss("burst300").label == "burst 300 ms"
    for bad in ("100%", "burst", "5", "x%"):
        with pytest.raises(ValueError, match="loss mode"):
            parse_loss(bad)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert math.isnan(percentile([], 50))
