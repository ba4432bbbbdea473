"""``e2ee bench router``: what the media router costs per forwarded packet, and how many
subscribers one router process holds at 30 fps.

::

    e2ee bench router [--publishers 1] [--subscribers 1,5,10,20,50] [--seconds 10]
                      [--json PATH] [--plot PATH.png] [--quick] [--profile PATH]

A real session server runs in its own process, with one E2EE session; P publisher
processes send pre-encoded, pre-encrypted-at-send VP8 (640x480, 30 fps, ~1 Mbit/s) and
Opus (50 frames/s) and a few subscriber processes (at most ``--per-process`` subscribers
each) subscribe to every publisher and count, decrypt and timestamp frames without
decoding; all on loopback (:mod:`e2ee.tools.bench.router_rig`,
:mod:`e2ee.tools.bench.router_processes`, :mod:`e2ee.tools.bench.router_worker`).  The
router gets one CPU to itself where there are two or more (``--no-pin``: no pinning, load
generators at nice 10).

For each count S of subscribers (added to those of the previous step, then a warm-up)
one window of ``--seconds`` is measured: router CPU per forwarded packet and frame,
delivered fps, frames lost, added latency, router memory, the load generators' and the
machine's CPU (:mod:`e2ee.tools.bench.router_report`).  Stepping stops when the mean
delivered video rate falls below 25 fps.  Progress goes to stderr, a table to stdout,
every figure with machine facts to ``--json``, CPU per packet and delivered fps against S
to ``--plot``.  ``--profile PATH`` runs the server under cProfile (enabled only for an
extra window after the last step, via SIGUSR1/SIGUSR2 in the bench's own launcher) and
writes pstats to PATH.

This module is the command: its options, the steps and the report document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2ee.tools.bench import _measure
from e2ee.tools.bench.router_report import (
    TARGET,
    TARGET_FPS,
    fmt,
    format_table,
    json_safe,
    plot,
    profile_summary,
    target,
)
from e2ee.tools.bench.router_rig import DEFAULT_SUBSCRIBERS, Config, Rig

__all__ = ["DEFAULT_SUBSCRIBERS", "TARGET_FPS", "main", "run"]

Progress = Callable[[str], None]

_METHOD = {
    "router_cpu": "utime+stime of the server process (all threads), /proc/PID/stat",
    "frames_forwarded": "router stats (GET /v1/sessions/{id}), per subscription track",
    "packets_forwarded": "RTP packets (RTX included) counted on arrival at the "
    "subscribers; estimate from frame sizes in packets_forwarded_estimate",
    "latency": "publisher CLOCK_MONOTONIC stamp inside the encrypted payload -> "
    "frame complete at the subscriber (marker packet in, no decode)",
    "lost": "gaps in the publishers' per-track frame sequence numbers at each "
    "subscriber during the window",
}


# -- the steps ---------------------------------------------------------------------------


def _step_line(step: dict[str, Any]) -> str:
    """One step's progress line."""
    r = step["router"]
    return (
        f"S={step['subscribers']}: router {r['cpu_percent_of_one_core']:.0f}% of a core, "
        f"{fmt(step['cpu_per_packet_us'])} µs/packet, "
        f"{fmt(step['cpu_per_frame_us'])} µs/frame, "
        f"video {step['delivered_fps']['mean']:.1f} fps (min "
        f"{step['delivered_fps']['min']:.1f}), p50/p99 "
        f"{fmt(step['latency']['video']['p50_ms'])}/"
        f"{fmt(step['latency']['video']['p99_ms'])} ms, lost "
        f"{step['frames_lost']['video']}/{step['frames_lost']['audio']}, "
        f"RSS {r['rss_mb']:.0f} MB, load generators "
        f"{step['load_generators']['cpu_percent_of_one_core']:.0f}% CPU, machine "
        f"{step['machine']['busy_percent']:.0f}% busy"
    )


async def _steps(rig: Rig, say: Progress, steps: list[dict[str, Any]]) -> str:
    """Grows and measures step by step into ``steps``; returns why it stopped."""
    cfg = rig.cfg
    for s in cfg.subscribers:
        joined = await rig.grow(s)
        say(
            f"S={s}: {s} subscriber(s) x {cfg.publishers} publisher(s) joined in "
            f"{joined['join_s']:.1f} s; warming up {cfg.warmup:g} s"
        )
        await asyncio.sleep(cfg.warmup)
        step = await rig.measure(cfg.seconds)
        step = {"subscribers": s, "publishers": cfg.publishers, **joined, **step}
        steps.append(step)
        say(_step_line(step))
        if step["delivered_fps"]["mean"] < TARGET_FPS:
            return (
                f"mean delivered video rate {step['delivered_fps']['mean']:.1f} fps "
                f"< {TARGET_FPS:g} at S={s}"
            )
    return "all steps done"


async def _profile(rig: Rig, say: Progress) -> dict[str, Any] | None:
    """cProfile the router for one more window (with ``--profile``)."""
    cfg = rig.cfg
    if cfg.profile is None or rig.server is None:
        return None
    say(f"profiling the router for {cfg.seconds:g} s (cProfile) ...")
    rig.server.signal(signal.SIGUSR1)
    await asyncio.sleep(cfg.seconds)
    rig.server.signal(signal.SIGUSR2)
    await asyncio.sleep(1.0)
    subs = sum(w.subscribers for w in rig.subscribers)
    profile: dict[str, Any] = {
        "path": str(cfg.profile),
        "subscribers": subs,
        "seconds": cfg.seconds,
    }
    with contextlib.suppress(OSError, ValueError, TypeError):
        profile["top_tottime"] = profile_summary(cfg.profile)
    return profile


async def run(cfg: Config, progress: Any = None) -> dict[str, Any]:
    """Runs the benchmark; returns the report (see the module docstring)."""
    say = progress or (lambda msg: print(f"[bench router] {msg}", file=sys.stderr, flush=True))
    tmp = Path(tempfile.mkdtemp(prefix="e2ee-bench-router-"))
    rig = Rig(cfg, tmp)
    steps: list[dict[str, Any]] = []
    started = _measure.now_iso()
    try:
        media = await rig.setup(say)
        stopped = await _steps(rig, say, steps)
        profile = await _profile(rig, say)
    finally:
        await rig.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return _document(rig, started, media, steps, stopped, profile)


def _document(
    rig: Rig,
    started: str,
    media: dict[str, Any],
    steps: list[dict[str, Any]],
    stopped: str,
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    """The report: every figure, the settings and the machine."""
    cfg = rig.cfg
    return {
        "benchmark": "router",
        "started": started,
        "machine": _measure.machine_info(),
        "config": {
            "publishers": cfg.publishers,
            "subscribers": list(cfg.subscribers),
            "seconds": cfg.seconds,
            "warmup_s": cfg.warmup,
            "subscribers_per_process": cfg.per_process,
            "quick": cfg.quick,
        },
        "pinning": {
            "router_cpus": sorted(rig.router_cpus) if rig.router_cpus else None,
            "load_generator_cpus": sorted(rig.load_cpus) if rig.load_cpus else None,
            "load_generator_nice": rig.nice,
        },
        "media": media,
        "method": dict(_METHOD),
        "steps": steps,
        "stopped": stopped,
        "target": {**TARGET, **target(steps, cfg.publishers)},
        "profile": profile,
    }


# -- the command line --------------------------------------------------------------------


def _subscriber_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError("subscriber counts must be increasing and positive")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="e2ee bench router",
        description="Router CPU per forwarded packet, delivered fps and added latency "
        "against the number of subscribers (a real server and separate load processes, "
        "all on loopback).",
    )
    p.add_argument("--publishers", type=int, default=1, help="publishers (1)")
    p.add_argument(
        "--subscribers",
        type=_subscriber_list,
        default=DEFAULT_SUBSCRIBERS,
        help="subscriber counts to step through (1,5,10,20,50)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per step (10)")
    p.add_argument("--warmup", type=float, help="seconds before each measurement (3)")
    p.add_argument("--per-process", type=int, default=10, help="subscribers per process (10)")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--plot", type=Path, help="write a PNG: CPU per packet and fps against S")
    p.add_argument("--quick", action="store_true", help="smoke test: P=1, S=1,2, ~1 s each")
    p.add_argument("--no-pin", action="store_true", help="do not pin the router to one CPU")
    p.add_argument("--profile", type=Path, help="cProfile the router after the last step")
    return p


def _config(args: argparse.Namespace) -> Config:
    cfg = Config(
        publishers=args.publishers,
        subscribers=args.subscribers,
        seconds=args.seconds,
        warmup=3.0 if args.warmup is None else args.warmup,
        per_process=args.per_process,
        pin=not args.no_pin,
        profile=args.profile,
    )
    if args.quick:
        cfg.publishers, cfg.subscribers, cfg.seconds, cfg.quick = 1, (1, 2), 1.0, True
        cfg.warmup = 0.5 if args.warmup is None else args.warmup
        cfg.media_seconds = 2.0
        cfg.join_timeout = 30.0
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.publishers < 1 or args.per_process < 1 or args.seconds <= 0:
        print("e2ee bench router: counts and durations must be positive", file=sys.stderr)
        return 2
    report = asyncio.run(run(_config(args)))
    print(format_table(report))
    if args.json:
        _measure.write_json(args.json, json_safe(report))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
