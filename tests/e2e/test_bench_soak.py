"""``e2ee bench soak``: a short real run (4 honest participants, 2 abusive ones, a real
server process) gives a well-formed report in which honest media flowed and the abuse
was refused; the server's loop-lag endpoint needs project auth.  Never its speed."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from e2ee.server.looplag import LoopLagProbe
from e2ee.server.tokens import project_auth_token
from e2ee.tools.bench.router_processes import Server
from e2ee.tools.bench.soak_abuse import rejections
from e2ee.tools.bench.soak_flow import Flow
from e2ee.tools.bench.soak_report import format_table
from support.cli import e2ee


def test_short_soak_reports_media_continuity_server_figures_and_refused_abuse(
    tmp_path: Path,
) -> None:
    out = tmp_path / "soak.json"
    proc = e2ee(
        "bench",
        "soak",
        "--honest=4",
        "--abusive=2",
        "--seconds=15",
        "--warmup=4",
        "--abuse-phase=3",
        "--sample-every=1",
        "--progress-every=5",
        "--churn=0.5",
        "--churn-every=6",
        "--no-netns",
        "--out",
        str(out),
        check=False,
        timeout=150,
        cwd=tmp_path,
        loopback=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "s: honest" in proc.stderr  # progress lines
    assert "| loop lag p50 / p99 / max" in proc.stdout  # the Markdown table

    report = json.loads(out.read_text())
    assert report["benchmark"] == "soak"
    assert report["config"]["honest"] == 4
    assert report["machine"]["cpu"]["model"]

    # Honest media flowed, on every pair, and was measured.
    c = report["continuity"]
    assert c["pairs"] == 4
    assert c["frames"] > 0
    assert report["join"]["joins"] >= 4
    assert report["join"]["connect_ms"]["p50"] > 0
    assert c["max_gap_s"] is not None

    # The server was sampled, its loop lag read from /v1/metrics.
    server = report["server"]
    assert server["rss_mb"]["warm"] > 0
    assert server["open_files"]["end"] > 0
    assert server["after_leave"]["fds"] > 0
    assert report["loop_lag_ms"]["after_warmup"]["n"] > 0
    assert len(report["samples"]) >= 5
    if len(os.sched_getaffinity(0)) >= 2:  # the server got a CPU the load did not
        pinning = report["pinning"]
        assert len(pinning["server"]) == 1
        assert not set(pinning["server"]) & set(pinning["load"])

    # The abuse happened and was refused.
    # (The two abusers start at the first two kinds and move on every 3 s or so.)
    abuse = report["abuse"]
    assert abuse["signal_flood"]["outcomes"].get("rate_limited", 0) > 0
    assert abuse["subscribe_no_answer"]["actions"] > 0
    ran = [kind for kind, a in abuse.items() if a["actions"] and kind != "slowloris"]
    assert len(ran) >= 3, abuse
    for kind in ran:
        assert abuse[kind]["rejections"] > 0, (kind, abuse[kind])
    assert set(report["goal"]["checks"])
    assert isinstance(report["goal"]["met"], bool)
    assert "| signal_flood |" in format_table(report)


def test_flow_counts_the_longest_gap_and_the_trailing_one_at_the_end() -> None:
    f = Flow("a", "b", started=0.0)
    for t in (1.0, 1.1, 1.2, 2.0, 2.1):  # the first frame is no gap
        f.tick(t)
    assert abs(f.max_gap - 0.8) < 1e-9
    f.end(4.1, "run ended", trailing=True)  # 2 s since the last frame
    assert abs(f.max_gap - 2.0) < 1e-9
    left = Flow("a", "b", started=0.0)
    left.tick(1.0)
    left.end(3.0, "partner left", trailing=False)
    assert left.max_gap == 0.0
    never = Flow("a", "b", started=0.0)
    never.end(30.0, "run ended", trailing=True)
    assert never.never_received(30.0)


def test_rejections_count_refusals_not_accepted_answers() -> None:
    counts = {"ok": 3, "connected": 2, "rate_limited": 2, "close:4029": 1}
    counts |= {"no_formats/answer": 1, "over_64KiB/bad_request": 4}
    assert rejections(counts) == 7


@pytest.mark.asyncio
async def test_loop_lag_probe_sees_a_blocked_loop() -> None:
    probe = LoopLagProbe(interval=0.01)
    probe.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # the loop cannot run the probe's timer meanwhile
        await asyncio.sleep(0.05)
    finally:
        probe.stop()
    snap = probe.snapshot()
    # Blocked 300 ms: its timer ran at least 250 ms late, however loaded the machine.
    assert snap["max_ms"] >= 250
    assert max(snap["recent_ms"]) == snap["max_ms"]
    assert len(snap["recent_cpu_share"]) == snap["count"]


@pytest.mark.asyncio
async def test_metrics_needs_project_auth_and_reports_loop_lag() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = await Server.start(Path(tmp) / "server", None, None)
        try:
            url = server.url + "/v1/metrics"
            auth = {"Authorization": f"Bearer {project_auth_token(*server.credentials())}"}
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as resp:
                    assert resp.status == 401
                for _ in range(100):  # the probe ticks every 50 ms from startup
                    async with http.get(url, headers=auth) as resp:
                        assert resp.status == 200
                        lag = (await resp.json())["loop_lag"]
                    if lag["count"]:
                        break
                    await asyncio.sleep(0.05)
                assert lag["count"] > 0
                assert len(lag["recent_ms"]) == len(lag["recent_cpu_share"]) > 0
                async with http.get(url, params={"since": lag["count"]}, headers=auth) as r2:
                    later = (await r2.json())["loop_lag"]
                # Only what was sampled since: never more than the new count.
                assert len(later["recent_ms"]) == later["count"] - lag["count"]
        finally:
            await server.stop()
