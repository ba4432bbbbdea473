"""The report of ``e2ee bench cluster``: join latency, sessions per node, failover time.

:func:`summarize` turns what the run measured into the JSON report; :func:`format_table`
is its Markdown.  The failover goal (issue 14) is every affected pair decoding again
within :data:`FAILOVER_GOAL_S` of the ``kill -9``.
"""

from __future__ import annotations

import statistics
from typing import Any

from e2ee.tools.bench.soak_report import distribution

__all__ = ["FAILOVER_GOAL_S", "format_table", "pair_recovery", "summarize"]

#: Seconds from the kill to every affected pair decoding again (issue 14's goal).
FAILOVER_GOAL_S = 5.0


def pair_recovery(
    pairs: list[tuple[str, str, str]],
    first: dict[str, float | None],
    subscribed: dict[str, float | None],
    killed_at: float,
) -> list[dict[str, Any]]:
    """Per affected pair (session, a, b): seconds from the kill until both of its
    subscribers decode again (``seconds``), and until both subscribed again
    (``subscribed_s``); ``None``: one of them did not."""

    def both(times: dict[str, float | None], a: str, b: str) -> float | None:
        ta, tb = times.get(a), times.get(b)
        return None if ta is None or tb is None else round(max(ta, tb) - killed_at, 3)

    return [
        {
            "session": sid,
            "participants": [a, b],
            "seconds": both(first, a, b),
            "subscribed_s": both(subscribed, a, b),
        }
        for sid, a, b in pairs
    ]


def summarize(
    *,
    config: dict[str, Any],
    nodes: list[str],
    owners_before: dict[str, str | None],
    owners_after: dict[str, str | None],
    honest: list[dict[str, Any]],
    failover: dict[str, Any] | None,
) -> dict[str, Any]:
    joins = [j for h in honest for j in h["joins"]]
    redirects = sum(sum(h.get("redirects", {}).values()) for h in honest)
    per_node = [
        {
            "node_id": n,
            "sessions": sum(1 for o in owners_before.values() if o == n),
            "sessions_after_failover": sum(1 for o in owners_after.values() if o == n),
        }
        for n in nodes
    ]
    report: dict[str, Any] = {
        "config": config,
        "nodes": per_node,
        "unplaced_sessions": sum(1 for o in owners_before.values() if o is None),
        "join": {
            "joins": len(joins),
            "redirects": redirects,
            "connect_ms": distribution([j["connect_ms"] for j in joins]),
            "join_ms": distribution([j["connect_ms"] + j["publish_ms"] for j in joins]),
            # From subscribe to the first decoded frame, every subscription of the run.
            "first_frame_ms": distribution(
                [f["first_frame_ms"] for h in honest for f in h["flows"] if f["first_frame_ms"]]
            ),
        },
        "frames": sum(f["frames"] for h in honest for f in h["flows"]),
        "drops": _merge([h["drops"] for h in honest]),
        "errors": _merge([h["errors"] for h in honest]),
    }
    if failover is not None:
        times = [p["seconds"] for p in failover["pairs"] if p["seconds"] is not None]
        recovered = len(times) == len(failover["pairs"]) > 0
        worst = max(times) if times else None
        subs = [p["subscribed_s"] for p in failover["pairs"] if p["subscribed_s"] is not None]
        failover = {
            **failover,
            "affected_pairs": len(failover["pairs"]),
            "recovered_pairs": len(times),
            "median_s": round(statistics.median(times), 3) if times else None,
            "max_s": worst,
            # The part before the new subscription (reconnect, placement, publish again).
            "subscribed_median_s": round(statistics.median(subs), 3) if subs else None,
            "goal_s": FAILOVER_GOAL_S,
            "goal_met": bool(recovered and worst is not None and worst < FAILOVER_GOAL_S),
        }
    report["failover"] = failover
    return report


def _merge(counts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def _ms(d: dict[str, Any]) -> str:
    return "-" if d["p50"] is None else f"{d['p50']:.0f} / {d['p99']:.0f} / {d['max']:.0f}"


def format_table(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    cfg, join = report["config"], report["join"]
    lines = [
        f"## e2ee bench cluster: {cfg['sessions']} sessions x 2 participants over "
        f"{cfg['nodes']} nodes",
        "",
        "| measure | value |",
        "|---|---|",
        f"| joins / redirects followed (joins and reconnects) | {join['joins']} / "
        f"{join['redirects']} |",
        f"| connect p50 / p99 / max, ms (redirects included) | {_ms(join['connect_ms'])} |",
        f"| join + publish p50 / p99 / max, ms | {_ms(join['join_ms'])} |",
        f"| subscribe to first frame p50 / p99 / max, ms | {_ms(join['first_frame_ms'])} |",
        f"| frames decoded (all pairs) | {report['frames']} |",
    ]
    f = report["failover"]
    if f is not None:

        def s(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        lines += [
            f"| killed (kill -9) | {f['killed']} ({f['affected_pairs']} pairs on it) |",
            f"| affected pairs decoding again | {f['recovered_pairs']} / {f['affected_pairs']} |",
            f"| failover median / max, s | {s(f['median_s'])} / {s(f['max_s'])} |",
            f"| of which until subscribed again (median), s | {s(f['subscribed_median_s'])} |",
            f"| goal: every pair within {f['goal_s']:g} s | "
            f"{'met' if f['goal_met'] else 'NOT met'} |",
        ]
    lines += ["", "| node | sessions | after failover |", "|---|---|---|"]
    for n in report["nodes"]:
        lines.append(f"| {n['node_id']} | {n['sessions']} | {n['sessions_after_failover']} |")
    if report["unplaced_sessions"]:
        lines.append(f"\n{report['unplaced_sessions']} session(s) had no owner before the kill")
    if report["errors"]:
        lines += ["", "errors: " + "; ".join(f"{k} (x{v})" for k, v in report["errors"].items())]
    return "\n".join(lines)
