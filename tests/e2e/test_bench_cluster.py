"""``e2ee bench cluster`` (issue 14): a tiny real run (3 sessions over 3 real nodes and a
real ``redis-server``, real clients in a load process) gives a well-formed report: every
pair joined through redirects and decoded, sessions were spread, the kill -9 of an owner
was followed by every affected pair decoding again.  Never its speed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from e2ee.tools.bench.cluster_report import format_table, pair_recovery
from support.cli import e2ee
from support.redis_server import redis_server_binary


@pytest.mark.skipif(
    redis_server_binary() is None or importlib.util.find_spec("redis") is None,
    reason="needs redis-server (apt-get install redis-server) and the redis package",
)
def test_tiny_cluster_bench_reports_joins_placement_and_failover(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    proc = e2ee(
        "bench",
        "cluster",
        "--sessions=3",
        "--per-process=6",
        "--settle=1",
        "--failover-timeout=90",
        "--no-netns",
        "--out",
        str(out),
        check=False,
        timeout=240,
        cwd=tmp_path,
        loopback=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[bench cluster] kill -9 of node-" in proc.stderr  # progress lines
    assert "| failover median / max, s |" in proc.stdout  # the Markdown table

    report = json.loads(out.read_text())
    assert report["benchmark"] == "cluster"
    assert report["machine"]["cpu"]["model"]
    assert report["config"]["sessions"] == 3

    join = report["join"]
    assert join["joins"] >= 6
    assert join["connect_ms"]["p50"] > 0
    assert join["join_ms"]["p99"] >= join["join_ms"]["p50"]
    # Partners enter through different nodes: at least one of each pair is redirected.
    assert join["redirects"] >= 3
    assert report["frames"] > 0

    nodes = {n["node_id"]: n for n in report["nodes"]}
    assert len(nodes) == 3
    assert sum(n["sessions"] for n in nodes.values()) == 3
    assert report["unplaced_sessions"] == 0

    f = report["failover"]
    assert f["killed"] in nodes
    assert f["affected_pairs"] == nodes[f["killed"]]["sessions"] >= 1
    assert f["recovered_pairs"] == f["affected_pairs"]
    assert f["max_s"] is not None
    assert f["max_s"] >= f["median_s"] > 0
    assert isinstance(f["goal_met"], bool)
    # The killed node owns nothing afterwards; the sessions live on the survivors.
    assert nodes[f["killed"]]["sessions_after_failover"] == 0
    assert "goal: every pair within 5 s" in format_table(report)


def test_pair_recovery_waits_for_both_sides() -> None:
    pairs = [("s1", "a", "b"), ("s2", "c", "d")]
    first = {"a": 12.0, "b": 13.5, "c": 11.0, "d": None}
    subscribed = {"a": 11.0, "b": 11.5, "c": 10.5, "d": 10.6}
    got = pair_recovery(pairs, first, subscribed, killed_at=10.0)
    assert got[0]["seconds"] == 3.5
    assert got[0]["subscribed_s"] == 1.5
    assert got[1]["seconds"] is None  # d has not decoded yet
    assert got[1]["subscribed_s"] == 0.6
