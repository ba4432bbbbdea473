"""``e2ee demo --nodes 3`` (issue 14): the real command starts one ``redis-server`` and three
``e2ee serve --cluster`` nodes itself, runs one call per node, and reports per node; with
no ``redis-server`` or no ``redis`` package it fails with one line saying what to
install."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2ee.tools.demo_cluster import format_cluster_report
from support.cli import LOOPBACK_ICE, e2ee
from support.redis_server import redis_server_binary

needs_redis = pytest.mark.skipif(
    redis_server_binary() is None or importlib.util.find_spec("redis") is None,
    reason="needs redis-server (apt-get install redis-server) and the redis package",
)


@needs_redis
def test_demo_over_three_nodes_puts_sessions_on_several_nodes_and_reports_each(
    tmp_path: Path,
) -> None:
    proc = e2ee(
        "demo", "--nodes", "3", "--seconds", "4", "--json", timeout=240, cwd=tmp_path, loopback=True
    )
    report = json.loads(proc.stdout)
    nodes = {n["node_id"]: n for n in report["nodes"]}
    assert set(nodes) == {"node-1", "node-2", "node-3"}
    assert len(report["sessions"]) == 3
    owners = {s["owner"] for s in report["sessions"]}
    assert len(owners) > 1, owners  # placement spread the sessions
    assert report["nodes_with_sessions"] == len(owners)
    for s in report["sessions"]:
        assert s["session"]["e2ee"] is True
        assert s["owner"] in nodes
        assert s["session"]["id"] in nodes[s["owner"]]["sessions"]
    # Each participant but the session's first entered through another node than the
    # first one: at least one join per session was redirected to the owner.
    assert sum(n["redirected_joins"] for n in nodes.values()) >= 1
    for n in nodes.values():
        if not n["sessions"]:
            continue
        assert n["participants"] == 2 * len(n["sessions"])
        # Decoded means the source picture or tone (the single-node demo's check).
        assert n["video_frames_decoded"] > 0
        assert n["audio_frames_decoded"] > 0
        assert n["pairs_decoding_video_and_audio"] == n["pairs"] == 2 * len(n["sessions"])
        assert n["planned_change_mismatch_events"] == 0
        assert n["eavesdropper_frames_decodable"] == 0
        assert n["checks_passed"] is True
    assert report["checks_passed"] is True
    # The table a person reads (what the command prints without --json).
    table = format_cluster_report(report)
    assert "3 sessions over 3 nodes" in table
    assert "all checks: passed" in table
    for node_id in owners:
        assert node_id in table


def test_demo_nodes_without_redis_server_says_what_to_install(tmp_path: Path) -> None:
    env = dict(os.environ, E2EE_REDIS_SERVER=str(tmp_path / "no-such-redis-server"))
    proc = subprocess.run(
        [sys.executable, "-m", "e2ee", "demo", "--nodes", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, **LOOPBACK_ICE},
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert "redis-server" in line
    assert "apt-get install redis-server" in line


def test_demo_nodes_without_the_redis_package_says_what_to_install(tmp_path: Path) -> None:
    # The package made unimportable in the command's own process.
    code = (
        "import sys; sys.modules['redis'] = None; from e2ee.tools.cli import main; "
        "sys.exit(main(['demo', '--nodes', '3']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert "pip install 'e2ee[cluster]'" in line


def test_demo_nodes_refuses_options_of_the_single_server_demo(tmp_path: Path) -> None:
    proc = e2ee("demo", "--nodes", "3", "--url", "http://127.0.0.1:1", check=False, cwd=tmp_path)
    assert proc.returncode == 2
    assert "--nodes" in proc.stderr
    proc = e2ee("demo", "--sessions", "2", check=False, cwd=tmp_path)
    assert proc.returncode == 2
    assert "--sessions goes with --nodes" in proc.stderr
