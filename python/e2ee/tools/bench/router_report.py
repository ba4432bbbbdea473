"""The figures of ``e2ee bench router`` and how they are shown: a table, JSON, a plot.

Per step of S subscribers (:func:`step_figures`, from one measured window):

* router CPU: utime+stime of the server process (all threads) from /proc/PID/stat over
  the measured window; share = CPU seconds / window (% of one core);
* forwarded frames: the router's own counters (``frames_forwarded`` per subscription and
  track, read with ``GET /v1/sessions/{id}``, the REST view of ``Router.stats()``);
* forwarded RTP packets: counted as they arrive at the subscribers (every RTP packet, RTX
  included; not the router's RTCP), cross-checked with an estimate from the received
  frame sizes (aiortc's VP8 packetizer: 1296 payload bytes per packet; Opus: one packet
  per frame);
* CPU per forwarded packet and per forwarded frame = router CPU / those counts (the
  router's whole CPU: ingress from the publishers, RTCP and signaling included);
* delivered video fps per subscriber, frames lost (gaps in the publishers' sequence
  numbers at the subscribers), added latency p50/p99 (publisher send -> subscriber frame
  complete, from a CLOCK_MONOTONIC stamp inside the encrypted payload), router RSS
  (/proc/PID/status), the load generators' CPU and the machine's idle time.

Then :func:`format_table` (stdout), :func:`plot` (CPU per packet and delivered fps against
S), :func:`target` (the issue's target met or not), :func:`profile_summary` (the top of a
cProfile dump) and :func:`json_safe` (NaN to null for the JSON writer).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SOURCE_FPS",
    "TARGET",
    "TARGET_FPS",
    "fmt",
    "format_table",
    "json_safe",
    "percentile",
    "plot",
    "profile_summary",
    "step_figures",
    "target",
]

#: Stepping stops when the mean delivered video rate falls below this.
TARGET_FPS = 25.0
SOURCE_FPS = 30
#: The issue's target: 1 publisher to 50 subscribers, 30 fps, p99 < 50 ms, nothing lost.
TARGET = {"publishers": 1, "subscribers": 50, "fps": 30, "p99_ms": 50.0, "lost": 0}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[k])


# -- one step ----------------------------------------------------------------------------


def _forwarded(stats: dict[str, Any]) -> dict[str, int]:
    """Frames forwarded by kind, summed over the live subscriptions' tracks."""
    out = {"video": 0, "audio": 0}
    for sub in (stats.get("subscriptions") or {}).values():
        for track in sub.get("tracks", {}).values():
            out[track.get("kind", "video")] += int(track.get("frames_forwarded", 0))
    return out


def _router(
    router_cpu: float, window: float, rss: int, stats0: dict[str, Any], stats1: dict[str, Any]
) -> dict[str, Any]:
    """The router's own figures over the window."""
    f0, f1 = _forwarded(stats0), _forwarded(stats1)
    fwd = {k: f1[k] - f0[k] for k in f0}

    def delta(key: str) -> int:
        return int(stats1.get(key, 0)) - int(stats0.get(key, 0))

    return {
        "cpu_s": round(router_cpu, 3),
        "cpu_percent_of_one_core": round(100 * router_cpu / window, 1),
        "rss_mb": round(rss / 2**20, 1),
        "frames_forwarded": {**fwd, "total": fwd["video"] + fwd["audio"]},
        "frames_received": delta("frames_received"),
        "bytes_forwarded": delta("bytes_forwarded"),
        "frames_dropped": delta("frames_dropped"),
        "keyframe_requests": delta("keyframe_requests"),
        "frames_decoded": int(stats1.get("frames_decoded", 0)),
    }


def _latency(reports: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Send-to-receive latency percentiles by kind, over every subscriber, in ms."""
    lat: dict[str, dict[str, float]] = {}
    for kind in ("video", "audio"):
        values = sorted(v for r in reports for v in r["latencies_us"][kind])
        lat[kind] = {
            "n": len(values),
            "p50_ms": percentile(values, 50) / 1000,
            "p90_ms": percentile(values, 90) / 1000,
            "p99_ms": percentile(values, 99) / 1000,
            "max_ms": (values[-1] / 1000) if values else math.nan,
        }
    return {k: {n: round(v, 2) for n, v in d.items()} for k, d in lat.items()}


def _rates(receivers: list[dict[str, Any]], window: float) -> list[float]:
    """Frames per second of each receiver, sorted."""
    return sorted(rx["frames"] / window for rx in receivers)


def step_figures(
    *,
    window: float,
    router_cpu: float,
    gen_cpu: float,
    machine: tuple[float, float],
    rss: int,
    stats0: dict[str, Any],
    stats1: dict[str, Any],
    reports: list[dict[str, Any]],
    publishers: list[dict[str, Any]],
) -> dict[str, Any]:
    """The figures of one step (see the module docstring) from one window's readings."""
    router = _router(router_cpu, window, rss, stats0, stats1)
    fwd_total = router["frames_forwarded"]["total"]
    receivers = [rx for r in reports for rx in r["receivers"]]
    video = [rx for rx in receivers if rx["kind"] == "video"]
    audio = [rx for rx in receivers if rx["kind"] == "audio"]
    windows = [r["window_s"] for r in reports] or [window]
    sub_window = sum(windows) / len(windows)
    fps, afps = _rates(video, sub_window), _rates(audio, sub_window)
    packets = sum(rx["packets"] for rx in receivers)
    return {
        "window_s": round(window, 3),
        "router": router,
        "packets_forwarded": packets,
        "packets_forwarded_estimate": sum(rx["packets_estimate"] for rx in receivers),
        "packets_per_s": round(packets / window, 1),
        "cpu_per_packet_us": round(1e6 * router_cpu / packets, 2) if packets else None,
        "cpu_per_frame_us": round(1e6 * router_cpu / fwd_total, 2) if fwd_total else None,
        "delivered_fps": {
            "mean": round(sum(fps) / len(fps), 2) if fps else 0.0,
            "min": round(fps[0], 2) if fps else 0.0,
            "max": round(fps[-1], 2) if fps else 0.0,
        },
        "audio_fps": {
            "mean": round(sum(afps) / len(afps), 2) if afps else 0.0,
            "min": round(afps[0], 2) if afps else 0.0,
        },
        "latency": _latency(reports),
        "frames_lost": {
            "video": sum(rx["lost"] for rx in video),
            "audio": sum(rx["lost"] for rx in audio),
        },
        "frames_received_by_subscribers": {
            "video": sum(rx["frames"] for rx in video),
            "audio": sum(rx["frames"] for rx in audio),
        },
        "decrypt_errors": sum(rx["errors"] for rx in receivers),
        "incomplete_frames": sum(rx["incomplete"] for rx in receivers),
        "load_generators": {
            "cpu_s": round(gen_cpu, 3),
            "cpu_percent_of_one_core": round(100 * gen_cpu / window, 1),
            "subscriber_processes": len(reports),
            "publisher_processes": len(publishers),
        },
        "machine": _machine(machine, router_cpu, gen_cpu, window),
        "publishers": publishers,
    }


def _machine(
    machine: tuple[float, float], router_cpu: float, gen_cpu: float, window: float
) -> dict[str, Any]:
    busy, idle = machine
    return {
        "cpus": os.cpu_count() or 1,
        "busy_percent": round(100 * busy / max(busy + idle, 1e-9), 1),
        # CPU used by anything but the router and the load generators (the bench
        # process itself, the kernel's softirq work, other programs), % of one core.
        "other_cpu_percent_of_one_core": round(
            100 * max(0.0, busy - router_cpu - gen_cpu) / window, 1
        ),
    }


# -- the target and the profile ------------------------------------------------------------


def target(steps: list[dict[str, Any]], publishers: int) -> dict[str, Any]:
    """Whether the issue's :data:`TARGET` was met, at the first step with S >= 50."""
    at = [s for s in steps if s["subscribers"] >= TARGET["subscribers"]]
    if publishers != TARGET["publishers"] or not at:
        reached = max((s["subscribers"] for s in steps), default=0)
        return {
            "met": False,
            "detail": f"not measured (P={publishers}, largest S={reached})",
        }
    s = at[0]
    p99 = s["latency"]["video"]["p99_ms"]
    lost = s["frames_lost"]["video"] + s["frames_lost"]["audio"]
    fps = s["delivered_fps"]["min"]
    cpu = s["router"]["cpu_percent_of_one_core"]
    met = fps >= SOURCE_FPS - 1 and p99 < TARGET["p99_ms"] and lost == 0 and cpu < 100
    return {
        "met": met,
        "detail": f"S={s['subscribers']}: min fps {fps:.1f}, p99 {p99:.1f} ms, lost {lost}, "
        f"router CPU {cpu:.0f}% of one core",
    }


def profile_summary(path: Path, top: int = 40) -> list[dict[str, Any]]:
    """The ``top`` functions of a pstats file by own time."""
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(filename).name}:{line}({name})",
                "path": filename,
                "calls": nc,
                "tottime_s": round(tt, 4),
                "cumtime_s": round(ct, 4),
                "tottime_share": round(tt / total, 4) if total else None,
            }
        )
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    return rows[:top]


# -- output ------------------------------------------------------------------------------

_COLUMNS = (
    ("S", 4),
    ("router CPU %", 12),
    ("µs/packet", 10),
    ("µs/frame", 9),
    ("packets/s", 10),
    ("fps mean/min", 13),
    ("lat p50 ms", 10),
    ("lat p99 ms", 10),
    ("lost v/a", 9),
    ("RSS MB", 7),
    ("gen CPU %", 9),
)


def fmt(v: Any, digits: int = 1) -> str:
    """A figure for the table: ``-`` when there is none."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _row(step: dict[str, Any]) -> tuple[str, ...]:
    r = step["router"]
    lat = step["latency"]["video"]
    fps = step["delivered_fps"]
    return (
        str(step["subscribers"]),
        fmt(r["cpu_percent_of_one_core"]),
        fmt(step["cpu_per_packet_us"]),
        fmt(step["cpu_per_frame_us"]),
        fmt(step["packets_per_s"], 0),
        f"{fps['mean']:.1f}/{fps['min']:.1f}",
        fmt(lat["p50_ms"]),
        fmt(lat["p99_ms"]),
        f"{step['frames_lost']['video']}/{step['frames_lost']['audio']}",
        fmt(r["rss_mb"], 0),
        fmt(step["load_generators"]["cpu_percent_of_one_core"], 0),
    )


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"e2ee bench router: {report['config']['publishers']} publisher(s), VP8 "
        f"{report['media']['width']}x{report['media']['height']} @ {report['media']['fps']} fps "
        f"~{report['media']['video_bitrate_bps'] / 1e6:.2f} Mbit/s + Opus 50/s, "
        f"{report['config']['seconds']:g} s per step; "
        f"router pinned to CPU {report['pinning']['router_cpus'] or 'none'}",
        "  ".join(name.rjust(width) for name, width in _COLUMNS),
    ]
    for step in report["steps"]:
        row = _row(step)
        lines.append("  ".join(v.rjust(w) for v, (_, w) in zip(row, _COLUMNS, strict=True)))
    lines.append(f"stopped: {report['stopped']}")
    t = report["target"]
    lines.append(
        f"target (1 publisher -> 50 subscribers, 30 fps, p99 < 50 ms, no loss): "
        f"{'MET' if t['met'] else 'NOT MET'} ({t['detail']})"
    )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Router CPU per packet and per frame, and delivered fps, against S (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = report["steps"]
    xs = [s["subscribers"] for s in steps]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    _cpu_panel(ax1, steps)
    _fps_panel(ax2, steps)
    for ax in (ax1, ax2):
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.tick_params(axis="x", which="minor", labelbottom=False)
        ax.grid(True, alpha=0.35)
        ax.legend(fontsize="small")
    cpu = report["machine"]["cpu"]["model"]
    fig.suptitle(
        f"e2ee bench router: {report['config']['publishers']} publisher(s), "
        f"{report['config']['seconds']:g} s per step ({cpu})",
        fontsize="medium",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cpu_panel(ax: Any, steps: list[dict[str, Any]]) -> None:
    xs = [s["subscribers"] for s in steps]
    per_packet = [s["cpu_per_packet_us"] or math.nan for s in steps]
    per_frame = [s["cpu_per_frame_us"] or math.nan for s in steps]
    ax.plot(xs, per_packet, marker="o", label="router CPU per forwarded RTP packet")
    ax.plot(xs, per_frame, marker="s", label="router CPU per forwarded frame")
    ax.set_xscale("log")
    ax.set_xlabel("subscribers per publisher (S)")
    ax.set_ylabel("µs of router CPU")
    ax.set_title("Router CPU per forwarded packet / frame")
    ax.set_ylim(bottom=0)


def _fps_panel(ax: Any, steps: list[dict[str, Any]]) -> None:
    xs = [s["subscribers"] for s in steps]
    fps_mean = [s["delivered_fps"]["mean"] for s in steps]
    fps_min = [s["delivered_fps"]["min"] for s in steps]
    ax.plot(xs, fps_mean, marker="o", label="mean over subscribers")
    ax.plot(xs, fps_min, marker="v", label="slowest subscriber")
    ax.axhline(SOURCE_FPS, color="grey", linestyle=":", label="source 30 fps")
    ax.axhline(TARGET_FPS, color="red", linestyle="--", label="stop below 25 fps")
    ax.set_xscale("log")
    ax.set_xlabel("subscribers per publisher (S)")
    ax.set_ylabel("video frames/s per subscriber")
    ax.set_title("Delivered video frame rate")
    ax.set_ylim(0, SOURCE_FPS * 1.15)


def json_safe(value: Any) -> Any:
    """NaN (no samples) becomes null: the JSON writer refuses NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
