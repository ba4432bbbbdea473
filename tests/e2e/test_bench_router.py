"""``e2ee bench router --quick``: a smoke test of the router benchmark (well-formed output,
real traffic through a real server process; never its speed)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from e2ee.tools.bench import router as bench_router
from e2ee.tools.bench.router_processes import cpu_seconds, rss_bytes
from e2ee.tools.bench.router_report import percentile
from e2ee.tools.bench.router_worker import MAGIC, STAMP, clear_bytes, load_media, prepare_media
from support.cli import e2ee

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_quick_run_writes_table_json_and_plot(tmp_path: Path) -> None:
    out_json = tmp_path / "router.json"
    out_png = tmp_path / "router.png"
    proc = e2ee(
        "bench",
        "router",
        "--quick",
        "--json",
        str(out_json),
        "--plot",
        str(out_png),
        check=False,
        timeout=90,
        cwd=tmp_path,
        loopback=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "µs/packet" in proc.stdout
    assert "S=1:" in proc.stderr  # progress lines
    assert "S=2:" in proc.stderr

    report = json.loads(out_json.read_text())
    assert report["benchmark"] == "router"
    assert report["config"]["quick"] is True
    assert report["config"]["publishers"] == 1
    assert report["machine"]["cpu"]["model"]
    assert report["media"]["video_frames"] > 0
    assert report["media"]["video_bitrate_bps"] > 0
    assert "met" in report["target"]
    steps = report["steps"]
    assert [s["subscribers"] for s in steps] == [1, 2]
    for step in steps:
        router = step["router"]
        assert router["cpu_s"] >= 0
        assert router["rss_mb"] > 0
        assert router["frames_forwarded"]["video"] > 0
        assert router["frames_forwarded"]["audio"] > 0
        assert router["frames_decoded"] == 0  # the router never decodes
        assert step["packets_forwarded"] > 0
        assert step["packets_forwarded_estimate"] > 0
        assert step["cpu_per_packet_us"] is None or step["cpu_per_packet_us"] >= 0
        assert step["delivered_fps"]["mean"] > 0
        assert step["frames_received_by_subscribers"]["video"] > 0
        assert step["decrypt_errors"] == 0  # stamps came through E2EE intact
        for kind in ("video", "audio"):
            lat = step["latency"][kind]
            assert lat["n"] > 0
            assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert step["frames_lost"]["video"] >= 0
        assert step["load_generators"]["subscriber_processes"] >= 1
    assert out_png.read_bytes()[:8] == PNG_SIGNATURE


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


def test_helpers() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0
    assert math.isnan(percentile([], 50))
    assert cpu_seconds(os.getpid()) >= 0
    assert rss_bytes(os.getpid()) > 0
    with pytest.raises(SystemExit):
        bench_router.main(["--subscribers", "5,1"])
