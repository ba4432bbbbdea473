"""``e2ee bench router --quick``: a smoke test of every scenario of the router benchmark
(well-formed output, real traffic through a real server process and real load processes;
never its speed)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from e2ee.tools.bench import router as bench_router
from e2ee.tools.bench.router_processes import cpu_seconds, cpu_times, rss_bytes
from e2ee.tools.bench.router_worker import MAGIC, STAMP, clear_bytes, load_media, prepare_media
from support.cli import e2ee

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(tmp_path: Path, *args: str, timeout: float = 150) -> tuple[str, str, dict[str, Any]]:
    out_json = tmp_path / "router.json"
    proc = e2ee(
        "bench",
        "router",
        "--quick",
        "--json",
        str(out_json),
        *args,
        check=False,
        timeout=timeout,
        cwd=tmp_path,
        loopback=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout, proc.stderr, json.loads(out_json.read_text())


def _check_step(step: dict[str, Any]) -> None:
    """What every step of every scenario reports."""
    router = step["router"]
    assert router["cpu_s"] >= 0
    assert router["rss_mb"] > 0
    assert router["frames_decoded"] == 0  # the router never decodes
    assert step["packets_forwarded"] > 0
    assert step["cpu_per_packet_us"] is None or step["cpu_per_packet_us"] >= 0
    assert step["delivered_fps"]["mean"] > 0
    assert step["frames_received_by_subscribers"]["video"] > 0
    assert step["decrypt_errors"] == 0  # stamps came through E2EE intact
    # The light path's RTP-timestamp mapping agreed with the decrypted stamps and with
    # the publisher's own record of when it sent each frame.
    assert step["mapping"]["probes"] > 0
    assert step["mapping"]["stamp_mismatches"] == 0
    assert step["mapping"]["mismatches"] == 0
    assert step["publisher_delay"]["video"]["n"] > 0  # the publisher's own lag, apart
    for kind in ("video", "audio"):
        lat = step["latency"][kind]
        assert lat["n"] > 0
        assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    gens = step["load_generators"]
    assert gens["subscriber_processes"] >= 1
    assert gens["publisher_processes"] >= 1
    assert gens["processes"]
    assert all(p["cpu_percent"] >= 0 for p in gens["processes"])
    assert gens["subscriber_cpu_per_packet_us"] > 0
    assert 0 <= gens["cpus_busy_percent"] <= 100
    validity = step["validity"]
    assert isinstance(validity["valid"], bool)
    assert validity["valid"] == (not validity["reasons"])


def test_quick_run_of_every_scenario(tmp_path: Path) -> None:
    out_png = tmp_path / "router.png"
    stdout, stderr, report = _run(tmp_path, "--scenario", "all", "--plot", str(out_png))
    for heading in ("fanout: 1 publisher", "mesh: every party", "loss: 1 publisher"):
        assert heading in stdout
    assert "targets (issue 13):" in stdout
    assert "Janus" in stdout
    assert "S=2:" in stderr  # progress lines
    assert out_png.read_bytes()[:8] == PNG_SIGNATURE

    assert report["benchmark"] == "router"
    assert report["config"]["quick"] is True
    assert report["config"]["subscriber_kind"] == "light"
    assert report["config"]["receiver"] == "native"  # frames found in Rust
    assert "light (native receiver) subscribers" in stdout
    assert report["machine"]["cpu"]["model"]
    assert report["media"]["video_frames"] > 0
    assert {t["name"] for t in report["targets"]}
    assert all(t["met"] in (True, False, None) for t in report["targets"])
    scen = report["scenarios"]

    fanout = scen["fanout"]["steps"]
    assert [s["subscribers"] for s in fanout] == [1, 2]
    for step in fanout:
        _check_step(step)
        assert step["router"]["frames_forwarded"]["video"] > 0
        reader = step["load_generators"]["socket_reader"]  # the light path's one epoll
        assert reader["kernel_timestamps"] is True
        assert reader["datagrams_per_wakeup"] >= 1
        assert reader["cpu_per_datagram_us"] > 0

    (mesh,) = scen["mesh"]["steps"]
    _check_step(mesh)
    assert mesh["parties"] == 3
    assert mesh["receivers"] == 3 * 2 * 2  # 3 parties x 2 others x (video, audio)
    assert mesh["load_generators"]["publisher_processes"] == 3

    loss = scen["loss"]["steps"]
    assert [s["mode"] for s in loss] == ["5%", "burst 300 ms"]
    for step in loss:
        _check_step(step)
        figures = step["loss"]
        dropped = figures["packets_dropped"]
        assert dropped["video"] + dropped["audio"] > 0  # the uplink really lost packets
        assert figures["frames_hit"] > 0
        assert figures["frames_recovered_at_subscribers"] >= 0
        assert figures["frames_recovered_at_subscribers"] <= figures["frames_hit_at_subscribers"]
        assert figures["longest_freeze_ms"] > 0
        assert figures["freeze_bound_ms"] > 0  # a PLI round trip was measured
        assert figures["within_bound"] in (True, False)
    burst = loss[1]["loss"]
    assert burst["outages_ms"] == [300.0]
    # Nothing arrives during the burst: the freeze spans it, and what is held to the
    # bound is only the part after it.
    assert burst["longest_freeze_ms"] >= 250
    assert burst["longest_freeze_beyond_outage_ms"] < burst["longest_freeze_ms"]


def test_quick_run_with_the_full_receive_path(tmp_path: Path) -> None:
    stdout, _stderr, report = _run(tmp_path, "--subscriber-kind", "full", "--subscribers", "2")
    assert "full subscribers" in stdout
    assert report["config"]["subscriber_kind"] == "full"
    (step,) = report["scenarios"]["fanout"]["steps"]
    assert step["subscribers"] == 2
    _check_step(step)


def test_quick_run_with_the_python_receiver(tmp_path: Path) -> None:
    # The light path's Python receiver, kept to compare with the native one.
    stdout, _stderr, report = _run(tmp_path, "--receiver", "python", "--subscribers", "2")
    assert "light (python receiver) subscribers" in stdout
    assert report["config"]["receiver"] == "python"
    (step,) = report["scenarios"]["fanout"]["steps"]
    _check_step(step)
    assert step["load_generators"]["socket_reader"]["kernel_timestamps"] is True


def test_media_loop_and_stamp(tmp_path: Path) -> None:
    path = tmp_path / "media.bin"
    summary = prepare_media(path, seconds=0.5, width=160, height=120, bitrate=200_000)
    media = load_media(path)
    assert len(media.video) == summary["video_frames"] > 0
    assert media.keyframes[:1] == [0]  # the loop starts on a key frame
    assert len(media.audio) > 0
    key = media.video[0]
    assert clear_bytes(True, key) == 10
    assert clear_bytes(False, media.audio[0]) == 1
    stamped = key[:10] + STAMP.pack(MAGIC, 7, 123) + key[10:]
    assert STAMP.unpack_from(stamped, clear_bytes(True, stamped)) == (MAGIC, 7, 123)


def test_proc_readers_and_option_errors() -> None:
    assert cpu_seconds(os.getpid()) >= 0
    assert rss_bytes(os.getpid()) > 0
    times = cpu_times()
    assert times
    assert all(busy >= 0 and idle >= 0 for busy, idle in times.values())
    for bad in (
        ["--subscribers", "5,1"],
        ["--scenario", "nope"],
        ["--loss", "110%"],
        ["--loss", "burst"],
        ["--parties", "0"],
        ["--receiver", "cython"],
    ):
        with pytest.raises(SystemExit):
            bench_router.main(bad)
