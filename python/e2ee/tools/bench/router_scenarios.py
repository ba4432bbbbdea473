"""The scenarios of ``e2ee bench router``, each on a fresh :class:`~e2ee.tools.bench.router_rig.Rig`
(its own server and session) and each a list of measured steps:

* ``fanout`` (:func:`fanout`): 1 publisher to S subscribers, S stepping up (subscribers
  added to those of the previous step, then a warm-up, then one window); stepping stops
  when the mean delivered rate falls below 25 fps or the router's core is full (a step
  that is not valid is marked so, and stepping goes on);
* ``mesh`` (:func:`mesh`): P parties, each publishing and subscribing to the P-1 others
  (P x (P-1) forwarded streams), one window per party count;
* ``loss`` (:func:`loss`): 1 publisher to S subscribers, one window per loss mode on the
  publisher's uplink (``N%`` random, ``burstMS`` one burst starting a second into the
  window), the loss lifted and the stream settled between modes.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e2ee.tools.bench.router_report import CORE_FULL_PERCENT, TARGET_FPS, fmt
from e2ee.tools.bench.router_rig import PublisherLost, Rig

__all__ = ["LossMode", "fanout", "loss", "mesh", "parse_loss"]

Progress = Callable[[str], None]

_LOSS = re.compile(r"^(?:(?P<p>\d+(?:\.\d+)?)%|burst(?P<ms>\d+))$")


@dataclass(frozen=True)
class LossMode:
    label: str
    p: float = 0.0
    burst_ms: float = 0.0


def parse_loss(text: str) -> LossMode:
    """``1%`` (random loss), ``burst300`` (one 300 ms burst) or ``0%`` (none)."""
    m = _LOSS.match(text.strip())
    if not m:
        raise ValueError(f"loss mode {text!r}: expected N% or burstMS")
    if m["ms"]:
        return LossMode(f"burst {int(m['ms'])} ms", burst_ms=float(m["ms"]))
    p = float(m["p"]) / 100
    if not 0 <= p < 1:
        raise ValueError(f"loss mode {text!r}: the rate must be below 100%")
    return LossMode(f"{m['p']}%", p=p)


def _line(label: str, step: dict[str, Any]) -> str:
    """One step's progress line."""
    r, g = step["router"], step["load_generators"]
    lat = step["latency"]["video"]
    valid = (
        "valid"
        if step["validity"]["valid"]
        else "INVALID: " + "; ".join(step["validity"]["reasons"])
    )
    return (
        f"{label}: router {r['cpu_percent_of_one_core']:.0f}% of a core, "
        f"{fmt(step['cpu_per_packet_us'])} µs/packet, video {step['delivered_fps']['mean']:.1f} "
        f"fps (min {step['delivered_fps']['min']:.1f}), p50/p99 {fmt(lat['p50_ms'])}/"
        f"{fmt(lat['p99_ms'])} ms, lost {step['frames_lost']['video']}/"
        f"{step['frames_lost']['audio']}, RSS {r['rss_mb']:.0f} MB, event loop lag p99/max "
        f"{fmt(r['loop_lag_ms']['p99'])}/{fmt(r['loop_lag_ms']['max'])} ms; load generators "
        f"{g['cpu_percent_of_one_core']:.0f}% CPU (busiest process {g['max_process_percent']:.0f}%,"
        f" {fmt(g['subscriber_cpu_per_packet_us'])} µs/packet received), their CPU(s) "
        f"{g['cpus_busy_percent']:.0f}% busy; {valid}"
    )


async def fanout(rig: Rig, say: Progress) -> dict[str, Any]:
    cfg = rig.cfg
    await rig.setup(1, say)
    steps: list[dict[str, Any]] = []
    stopped = "all steps done"
    failed: dict[str, Any] | None = None
    for s in cfg.subscribers:
        try:
            joined = await rig.add([list(rig.streams)] * (s - rig.subscriber_count))
        except PublisherLost as exc:
            stopped = f"S={s}: {exc}"
            failed = {"subscribers": s, "joined": rig.subscriber_count, "reason": str(exc)}
            say(stopped)
            break
        say(f"S={s}: joined in {joined['join_s']:.1f} s; warming up {cfg.warmup:g} s")
        await asyncio.sleep(cfg.warmup)
        step = {"subscribers": s, **joined, **await rig.measure(cfg.seconds)}
        steps.append(step)
        say(_line(f"S={s}", step))
        if step["delivered_fps"]["mean"] < TARGET_FPS:
            stopped = (
                f"mean delivered video rate {step['delivered_fps']['mean']:.1f} fps "
                f"< {TARGET_FPS:g} at S={s}"
            )
            break
        if step["router"]["cpu_percent_of_one_core"] >= CORE_FULL_PERCENT:
            stopped = f"the router's core is full at S={s}"
            break
    profile = await _profile(rig, say)
    return {"steps": steps, "stopped": stopped, "failed": failed, "profile": profile}


async def _profile(rig: Rig, say: Progress) -> dict[str, Any] | None:
    """cProfile the router for one more window (with ``--profile``)."""
    from e2ee.tools.bench.router_report import profile_summary

    cfg = rig.cfg
    if cfg.profile is None or rig.server is None:
        return None
    say(f"profiling the router for {cfg.seconds:g} s (cProfile) ...")
    rig.server.signal(signal.SIGUSR1)
    await asyncio.sleep(cfg.seconds)
    rig.server.signal(signal.SIGUSR2)
    await asyncio.sleep(1.0)
    profile: dict[str, Any] = {
        "path": str(cfg.profile),
        "subscribers": rig.subscriber_count,
        "seconds": cfg.seconds,
    }
    try:
        profile["top_tottime"] = profile_summary(cfg.profile)
    except (OSError, ValueError, TypeError) as exc:
        profile["error"] = str(exc)
    return profile


async def mesh(
    rig_for: Callable[[str], Rig], say: Progress, parties: tuple[int, ...]
) -> dict[str, Any]:
    """One fresh rig per party count (``rig_for(label)`` makes it; closed here)."""
    steps: list[dict[str, Any]] = []
    for p in parties:
        rig = rig_for(f"mesh{p}")
        try:
            await rig.setup(p, say)
            streams = rig.streams
            try:
                joined = await rig.add([[s for s in streams if s != own] for own in streams])
            except PublisherLost as exc:
                say(f"{p} parties: {exc}")
                failed = {"parties": p, "joined": rig.subscriber_count, "reason": str(exc)}
                return {"steps": steps, "stopped": f"{p} parties: {exc}", "failed": failed}
            say(
                f"{p} parties: {p * (p - 1)} subscriptions joined in {joined['join_s']:.1f} s; "
                f"warming up {rig.cfg.warmup:g} s"
            )
            await asyncio.sleep(rig.cfg.warmup)
            step = {"parties": p, **joined, **await rig.measure(rig.cfg.seconds)}
        finally:
            await rig.close()
        steps.append(step)
        say(_line(f"{p} parties", step))
    return {"steps": steps, "stopped": "all steps done"}


async def loss(rig: Rig, say: Progress) -> dict[str, Any]:
    cfg = rig.cfg
    modes = [parse_loss(m) for m in cfg.loss]
    await rig.setup(1, say)
    publisher = rig.publishers[0]
    try:
        joined = await rig.add([list(rig.streams)] * cfg.loss_subscribers)
    except PublisherLost as exc:
        say(f"loss: {exc}")
        return {"steps": [], "subscribers": cfg.loss_subscribers, "stopped": str(exc)}
    say(f"loss: {cfg.loss_subscribers} subscribers joined in {joined['join_s']:.1f} s")
    burst_in = 0.3 if cfg.quick else 1.0
    settle = 0.5 if cfg.quick else 2.0
    steps: list[dict[str, Any]] = []
    for mode in modes:
        seconds = cfg.seconds
        started = None
        if mode.burst_ms:
            seconds = max(seconds, burst_in + mode.burst_ms / 1000 + (1.5 if cfg.quick else 3.0))

            async def begin(ms: float = mode.burst_ms) -> None:
                await publisher.call({"cmd": "loss", "burst_ms": ms, "burst_in_s": burst_in})

            started = begin
        else:
            await publisher.call({"cmd": "loss", "p": mode.p})
            await asyncio.sleep(cfg.warmup)
        step = {"mode": mode.label, **joined, **await rig.measure(seconds, started, loss=True)}
        await publisher.call({"cmd": "loss"})  # lifted
        steps.append(step)
        figures = step.get("loss") or {}
        say(
            _line(f"loss {mode.label}", step)
            + f"; dropped {figures.get('packets_dropped')}, longest freeze "
            f"{fmt(figures.get('longest_freeze_ms'))} ms, beyond the loss "
            f"{fmt(figures.get('longest_freeze_beyond_outage_ms'))} ms (bound "
            f"{fmt(figures.get('freeze_bound_ms'))} ms; at a lost packet "
            f"{fmt(figures.get('longest_freeze_at_loss_ms'))} ms, with none lost "
            f"{fmt(figures.get('longest_freeze_without_loss_ms'))} ms); repaired frames' "
            f"latency {figures.get('hit_frame_latency_ms')}; router ingress "
            f"{step['router'].get('ingress')}"
        )
        await asyncio.sleep(settle)
    return {"steps": steps, "subscribers": cfg.loss_subscribers, "stopped": "all modes done"}
