"""The plot of ``e2ee bench router`` (``--plot PATH.png``): a row of panels per scenario run.

* fanout: router and load-generator CPU per packet, delivered fps and added latency
  against S (steps that were not valid drawn hollow);
* mesh: latency p50/p99 per party count, against the 20 ms target;
* loss: the longest freeze at the subscribers per loss mode, beside its bound (one PLI
  round trip plus one frame).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from e2ee.tools.bench.router_report import SOURCE_FPS, TARGET_FPS, TARGETS

__all__ = ["plot"]


def plot(report: dict[str, Any], path: Path) -> None:
    """Write the PNG (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = report["scenarios"]
    rows = [name for name in ("fanout", "mesh", "loss") if name in scen]
    fig, axes = plt.subplots(
        len(rows), 3, figsize=(15, 4.2 * len(rows)), layout="constrained", squeeze=False
    )
    for row, name in zip(axes, rows, strict=True):
        if name == "fanout":
            _fanout(row, scen["fanout"]["steps"])
        elif name == "mesh":
            _mesh(row, scen["mesh"]["steps"])
        else:
            _loss(row, scen["loss"]["steps"])
    cpu = report["machine"]["cpu"]["model"]
    fig.suptitle(
        f"e2ee bench router, {report['config']['subscriber_kind']} subscribers, "
        f"{report['config']['seconds']:g} s per step ({cpu})",
        fontsize="medium",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _series(ax: Any, xs: list[int], ys: list[float], valid: list[bool], **kw: Any) -> None:
    """A line through all points, filled markers for valid steps, hollow for invalid."""
    (line,) = ax.plot(xs, ys, **kw)
    bad = [(x, y) for x, y, ok in zip(xs, ys, valid, strict=True) if not ok]
    if bad:
        ax.plot(
            [b[0] for b in bad],
            [b[1] for b in bad],
            linestyle="none",
            marker=kw.get("marker", "o"),
            markerfacecolor="white",
            markeredgecolor=line.get_color(),
            markersize=9,
        )


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _fanout(axes: Any, steps: list[dict[str, Any]]) -> None:
    ax1, ax2, ax3 = axes
    xs = [s["subscribers"] for s in steps]
    ok = [s["validity"]["valid"] for s in steps]
    _series(
        ax1,
        xs,
        [_num(s["cpu_per_packet_us"]) for s in steps],
        ok,
        marker="o",
        label="router CPU per forwarded packet",
    )
    _series(
        ax1,
        xs,
        [_num(s["load_generators"]["subscriber_cpu_per_packet_us"]) for s in steps],
        ok,
        marker="s",
        label="subscribers' CPU per received packet",
    )
    ax1.axhline(TARGETS["us_per_packet"], color="green", linestyle="--", label="goal 15 µs")
    ax1.axhline(27, color="grey", linestyle=":", label="Janus 1.1 (issue): 27 µs")
    ax1.set_ylabel("µs of CPU per packet")
    ax1.set_title("fanout: CPU per packet (hollow: step not valid)")
    _series(
        ax2,
        xs,
        [s["delivered_fps"]["mean"] for s in steps],
        ok,
        marker="o",
        label="mean over subscribers",
    )
    _series(
        ax2,
        xs,
        [s["delivered_fps"]["min"] for s in steps],
        ok,
        marker="v",
        label="slowest subscriber",
    )
    ax2.axhline(SOURCE_FPS, color="grey", linestyle=":", label=f"source {SOURCE_FPS} fps")
    ax2.axhline(TARGET_FPS, color="red", linestyle="--", label="stop below 25 fps")
    ax2.set_ylim(0, SOURCE_FPS * 1.15)
    ax2.set_ylabel("video frames/s per subscriber")
    ax2.set_title("fanout: delivered video frame rate")
    for q, marker in (("p50_ms", "o"), ("p99_ms", "^")):
        _series(
            ax3,
            xs,
            [_num(s["latency"]["video"][q]) for s in steps],
            ok,
            marker=marker,
            label=f"video {q[:3]}",
        )
    ax3.axhline(TARGETS["p50_ms"], color="green", linestyle="--", label="p50 goal 5 ms")
    ax3.axhline(TARGETS["p99_ms"], color="orange", linestyle="--", label="p99 goal 15 ms")
    ax3.set_yscale("log")
    ax3.set_ylabel("publisher send -> subscriber, ms")
    ax3.set_title("fanout: added latency")
    for ax in axes:
        ax.set_xlabel("subscribers (S)")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.grid(True, alpha=0.35)
        ax.legend(fontsize="small")
    ax1.set_yscale("log")  # S=1 carries the fixed costs alone: hundreds of µs


def _bars(ax: Any, labels: list[str], series: dict[str, list[float]]) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks(range(len(labels)), labels)
    ax.grid(True, axis="y", alpha=0.35)


def _mesh(axes: Any, steps: list[dict[str, Any]]) -> None:
    ax, ax2, ax3 = axes
    labels = [
        f"{s['parties']} parties" + ("" if s["validity"]["valid"] else " (invalid)") for s in steps
    ]
    _bars(
        ax,
        labels,
        {
            "video p50": [_num(s["latency"]["video"]["p50_ms"]) for s in steps],
            "video p99": [_num(s["latency"]["video"]["p99_ms"]) for s in steps],
        },
    )
    ax.axhline(TARGETS["mesh_p99_ms"], color="orange", linestyle="--", label="p99 goal 20 ms")
    ax.set_ylabel("ms")
    ax.set_title("mesh: added latency")
    ax.legend(fontsize="small")
    _bars(
        ax2,
        labels,
        {
            "router": [s["router"]["cpu_percent_of_one_core"] for s in steps],
            "load generators": [s["load_generators"]["cpu_percent_of_one_core"] for s in steps],
        },
    )
    ax2.set_ylabel("% of one core")
    ax2.set_title("mesh: CPU")
    ax2.legend(fontsize="small")
    _bars(ax3, labels, {"router µs/packet": [_num(s["cpu_per_packet_us"]) for s in steps]})
    ax3.set_title("mesh: router CPU per forwarded packet")
    ax3.set_ylabel("µs")


def _loss(axes: Any, steps: list[dict[str, Any]]) -> None:
    ax, ax2, ax3 = axes
    labels = [s["mode"] + ("" if s["validity"]["valid"] else " (invalid)") for s in steps]
    loss = [s.get("loss") or {} for s in steps]
    _bars(
        ax,
        labels,
        {
            "longest freeze": [_num(x.get("longest_freeze_ms")) for x in loss],
            "longest freeze beyond the loss": [
                _num(x.get("longest_freeze_beyond_outage_ms")) for x in loss
            ],
            "bound: PLI round trip + 1 frame": [_num(x.get("freeze_bound_ms")) for x in loss],
        },
    )
    ax.set_ylabel("ms")
    ax.set_title("loss: longest freeze at the subscribers")
    ax.legend(fontsize="small")
    _bars(
        ax2,
        labels,
        {
            "frames hit upstream (x subscribers)": [
                x.get("frames_hit_at_subscribers", 0) for x in loss
            ],
            "recovered": [x.get("frames_recovered_at_subscribers", 0) for x in loss],
            "lost": [s["frames_lost"]["video"] for s in steps],
        },
    )
    ax2.set_title("loss: video frames")
    ax2.legend(fontsize="small")
    _bars(
        ax3,
        labels,
        {
            "p50": [_num(s["latency"]["video"]["p50_ms"]) for s in steps],
            "p99": [_num(s["latency"]["video"]["p99_ms"]) for s in steps],
        },
    )
    ax3.set_ylabel("ms")
    ax3.set_title("loss: added latency")
    ax3.legend(fontsize="small")
