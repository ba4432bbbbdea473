"""``e2ee demo --nodes N``: the demo's call (:mod:`e2ee.tools.demo`) in several sessions at
once, over N ``e2ee serve --cluster`` nodes sharing one ``redis-server``, all started
here in a temporary directory on loopback (docs/cluster.md).

Each session is the single-node demo's call: its participants publish synthetic video
and audio, everyone subscribes to everyone else, the secret changes twice, and an
eavesdropper on the owner's router tries to decode.  Participant ``j`` of session ``k``
enters through node ``(k + j) mod N`` (the other nodes as further entry URLs), so most
joins are redirected to the session's owner.  Sessions are placed one after another,
each once the previous owner's heartbeat reports its connections, so placement (the
least-loaded live node) spreads them over the nodes.

The report is per node: the sessions it owned, their participants, the frames they
decoded (content checked: the source picture or tone) and the checks of each call
(every pair decoded video and audio, no mismatch during the planned change, nothing
real for the eavesdropper), with every session's full single-node report beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2ee.client.session import Session
from e2ee.rtc import net
from e2ee.tools.cluster_nodes import ClusterView, NodeProc, start_nodes, stop_nodes
from e2ee.tools.demo import FIRST_SECRET, DemoCall
from e2ee.tools.redis_proc import RedisProcess, require_cluster_tools
from e2ee.tools.synthetic import SyntheticAudioTrack, SyntheticVideoTrack

__all__ = ["format_cluster_report", "run_cluster_demo"]

#: Seconds to wait for an owner's heartbeat to report a session's connections.
PLACEMENT_WAIT = 5.0


class _ClusterCall(DemoCall):
    """A demo call whose participants enter through different nodes."""

    def __init__(self, nodes: list[NodeProc], index: int, data_dir: Path, creds: Any) -> None:
        super().__init__(nodes[index % len(nodes)].url, data_dir, creds)
        self.nodes = nodes
        self.index = index
        self.redirects = 0

    def entries(self, j: int) -> list[str]:
        n = len(self.nodes)
        return [self.nodes[(self.index + j + i) % n].url for i in range(n)]

    async def join(self, participants: int, seconds: float) -> None:
        """As the single-node call, each participant entering through its own node; the
        call's URL then becomes the owner's (the eavesdropper's raw WebSocket does not
        follow redirects)."""
        self.names = [f"p{i + 1}" for i in range(participants)]
        grace = max(10.0, seconds)
        for j, name in enumerate(self.names):
            s = Session(
                self.entries(j),
                self.sid,
                self.token("publisher", name),
                encryption_secret=FIRST_SECRET,
                grace_period=grace,
            )
            s.on("redirected", self._redirected)
            await s.connect()
            self.sessions.append(s)
        self.url = self.sessions[0].url
        for name, s in zip(self.names, self.sessions, strict=True):
            pub = await s.publish(
                video=SyntheticVideoTrack(), audio=SyntheticAudioTrack(), name=name
            )
            self.stream_of[name] = pub.stream_id

    def _redirected(self, _msg: Any) -> None:
        self.redirects += 1

    def owner_id(self) -> str:
        return next(n.node_id for n in self.nodes if n.url == self.url)


async def _place(
    calls: list[_ClusterCall],
    view: ClusterView,
    participants: int,
    seconds: float,
    say: Callable[[str], None],
) -> None:
    """Creates and joins the sessions one after another (see the module docstring)."""
    hosted: dict[str, int] = {}
    for call in calls:
        await call.create_session()
        await call.join(participants, seconds)
        owner = call.owner_id()
        hosted[owner] = hosted.get(owner, 0) + participants
        say(
            f"session {call.sid}: {participants} participants on {owner} "
            f"({call.redirects} redirected)"
        )
        deadline = time.monotonic() + PLACEMENT_WAIT
        while time.monotonic() < deadline:
            if (await view.connections(owner) or 0) >= hosted[owner]:
                break
            await asyncio.sleep(0.1)


async def _run_one(call: _ClusterCall, seconds: float, say: Callable[[str], None]) -> Any:
    await call.subscribe_everyone()
    await call.collect()
    await call.change_secrets(seconds, lambda msg: say(f"{call.sid}: {msg}"))
    report = call.report(seconds, await call.router_stats())
    await call.stop_collectors()
    return report


def _checks(report: dict[str, Any]) -> dict[str, Any]:
    pairs = report["pairs"]
    return {
        "pairs_decoding_video_and_audio": sum(
            1 for p in pairs if p["video_frames_decoded"] > 0 and p["audio_frames_decoded"] > 0
        ),
        "pairs": len(pairs),
        "planned_change_mismatch_events": report["planned_change"]["mismatch_events"],
        "eavesdropper_frames_decodable": report["eavesdropper"]["frames_decodable"],
        "router_frames_decoded": report["router"]["frames_decoded"],
    }


def _passed(c: dict[str, Any]) -> bool:
    return bool(
        c["pairs_decoding_video_and_audio"] == c["pairs"]
        and c["planned_change_mismatch_events"] == 0
        and c["eavesdropper_frames_decodable"] == 0
        and c["router_frames_decoded"] == 0
    )


def _per_node(
    nodes: list[NodeProc], calls: list[_ClusterCall], reports: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    out = []
    for node in nodes:
        mine = [(c, r) for c, r in zip(calls, reports, strict=True) if c.owner_id() == node.node_id]
        checks = [_checks(r) for _, r in mine]
        out.append(
            {
                "node_id": node.node_id,
                "url": node.url,
                "sessions": [c.sid for c, _ in mine],
                "participants": sum(len(c.names) for c, _ in mine),
                "redirected_joins": sum(c.redirects for c, _ in mine),
                "video_frames_decoded": sum(
                    p["video_frames_decoded"] for _, r in mine for p in r["pairs"]
                ),
                "audio_frames_decoded": sum(
                    p["audio_frames_decoded"] for _, r in mine for p in r["pairs"]
                ),
                "router_frames_forwarded": sum(r["router"]["frames_forwarded"] for _, r in mine),
                "pairs": sum(c["pairs"] for c in checks),
                "pairs_decoding_video_and_audio": sum(
                    c["pairs_decoding_video_and_audio"] for c in checks
                ),
                "planned_change_mismatch_events": sum(
                    c["planned_change_mismatch_events"] for c in checks
                ),
                "eavesdropper_frames_decodable": sum(
                    c["eavesdropper_frames_decodable"] for c in checks
                ),
                "checks_passed": all(_passed(c) for c in checks),
            }
        )
    return out


async def run_cluster_demo(
    nodes: int = 3,
    sessions: int | None = None,
    participants: int = 2,
    seconds: float = 10.0,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs the cluster demo and returns its report (see the module docstring).
    ``sessions`` defaults to ``nodes``.  Everything it starts (Redis, the nodes, the
    clients) is stopped and the temporary directory removed before it returns, also
    when it fails or is cancelled."""
    if nodes < 2:
        raise ValueError("the cluster demo needs at least 2 nodes")
    if participants < 2:
        raise ValueError("the demo needs at least 2 participants")
    if not seconds > 0:
        raise ValueError("the demo needs a duration above 0 seconds")
    count = nodes if sessions is None else sessions
    if count < 1:
        raise ValueError("the cluster demo needs at least 1 session")
    binary = require_cluster_tools("e2ee demo --nodes")
    net.restrict_ice_addresses([os.environ.get(net.ENV_VAR, "127.0.0.1").split(",")[0]])

    def say(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="e2ee-demo-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        redis = RedisProcess(tmp / "redis", binary)
        procs: list[NodeProc] = []
        calls: list[_ClusterCall] = []
        view: ClusterView | None = None
        try:
            redis.start()
            say(f"redis-server at {redis.url}; starting {nodes} nodes ...")
            procs = await start_nodes(redis.url, nodes, tmp / "nodes")
            say(", ".join(f"{n.node_id} at {n.url}" for n in procs))
            view = ClusterView(redis.url)
            creds = await view.credentials()
            calls = [_ClusterCall(procs, k, tmp, creds) for k in range(count)]
            await _place(calls, view, participants, seconds, say)
            say(f"{count} sessions placed; subscribing everyone to everyone ...")
            reports = list(await asyncio.gather(*(_run_one(c, seconds, say) for c in calls)))
            per_node = _per_node(procs, calls, reports)
            return {
                "nodes": per_node,
                "sessions": [
                    {"owner": c.owner_id(), "redirected_joins": c.redirects, **r}
                    for c, r in zip(calls, reports, strict=True)
                ],
                "seconds": seconds,
                "nodes_with_sessions": sum(1 for n in per_node if n["sessions"]),
                "checks_passed": all(n["checks_passed"] for n in per_node),
            }
        finally:
            for call in calls:
                with contextlib.suppress(Exception):
                    await call.close()
            if view is not None:
                with contextlib.suppress(Exception):
                    await view.close()
            await stop_nodes(procs)
            redis.stop()


def format_cluster_report(report: dict[str, Any]) -> str:
    """The per-node report as a table a person reads."""
    lines = [
        f"{len(report['sessions'])} sessions over {len(report['nodes'])} nodes "
        f"({report['nodes_with_sessions']} with sessions), {report['seconds']:g} s each",
        "",
        f"{'node':<8} {'sessions':>8} {'people':>6} {'redirected':>10} {'video ok':>8} "
        f"{'audio ok':>8} {'pairs ok':>8} {'planned mm':>10} {'eve real':>8} {'checks':>6}",
    ]
    for n in report["nodes"]:
        lines.append(
            f"{n['node_id']:<8} {len(n['sessions']):>8} {n['participants']:>6} "
            f"{n['redirected_joins']:>10} {n['video_frames_decoded']:>8} "
            f"{n['audio_frames_decoded']:>8} "
            f"{n['pairs_decoding_video_and_audio']:>4}/{n['pairs']:<3} "
            f"{n['planned_change_mismatch_events']:>10} "
            f"{n['eavesdropper_frames_decodable']:>8} "
            f"{'ok' if n['checks_passed'] else 'FAIL':>6}"
        )
    lines += ["", "sessions:"]
    for s in report["sessions"]:
        e = s["eavesdropper"]
        lines.append(
            f"  {s['session']['id']} on {s['owner']}: {len(s['pairs'])} pairs, router "
            f"{s['router']['frames_forwarded']} frames forwarded, {s['router']['frames_decoded']}"
            f" decoded; eavesdropper {e['frames_received']} received, "
            f"{e['frames_decodable']} real"
        )
    lines += [
        "",
        "video/audio ok: frames showing the source picture or tone, summed over the pairs; "
        "pairs ok: pairs that decoded both; planned mm: mismatch events during the planned "
        "change (expected 0); eve real: frames the eavesdropper decoded to the real picture "
        "or tone (expected 0)",
        f"all checks: {'passed' if report['checks_passed'] else 'FAILED'}",
    ]
    return "\n".join(lines)
