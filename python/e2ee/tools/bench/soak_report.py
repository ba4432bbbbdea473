"""The figures and the table of ``e2ee bench soak``.

:func:`summarize` turns what the run collected (the server's samples, its loop lags, the
honest and abusive workers' reports) into the report; :func:`format_table` prints it as
Markdown.  The goal (issue 11): no honest pair loses media for more than
:data:`MAX_GAP_S`, the server's RSS and open files flat after the warm-up (the end
within :data:`FLAT_TOLERANCE` of its value after it), loop lag p99 under
:data:`LAG_P99_MS`, and no honest participant dropped by the server.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from e2ee.tools.bench.router_report import fmt, percentile
from e2ee.tools.bench.soak_abuse import KINDS, rejections

__all__ = [
    "FLAT_TOLERANCE",
    "LAG_P99_MS",
    "MAX_GAP_S",
    "distribution",
    "format_table",
    "summarize",
]

MAX_GAP_S = 1.0
FLAT_TOLERANCE = 0.10
LAG_P99_MS = 50.0
#: A lag sample whose interval had the server on a CPU less than this share of the time.
STARVED_SHARE = 0.5


def distribution(values: list[float]) -> dict[str, float | None]:
    v = sorted(values)
    if not v:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {
        "n": len(v),
        "p50": round(percentile(v, 50), 2),
        "p99": round(percentile(v, 99), 2),
        "max": round(v[-1], 2),
    }


def _flat(samples: list[dict[str, Any]], key: str, warmup: float) -> dict[str, Any]:
    """The mean of the first fifth of the samples after the warm-up (``warm``) and of the
    last fifth (``end``; means, because abusive clients make single samples jump), and
    the max in between; ``flat`` when ``end`` is within the tolerance of ``warm``."""
    after = [float(s[key]) for s in samples if s["t"] >= warmup and s.get(key) is not None]
    if not after:
        return {"warm": None, "end": None, "max": None, "growth": None, "flat": None}
    k = max(1, len(after) // 5)
    warm, end = sum(after[:k]) / k, sum(after[-k:]) / k
    growth = (end - warm) / warm if warm else 0.0
    return {
        "warm": round(warm, 1),
        "end": round(end, 1),
        "max": max(after),
        "samples_averaged": k,
        "growth": round(growth, 4),
        "flat": growth <= FLAT_TOLERANCE,
    }


def _continuity(flows: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    """Per honest pair (publisher -> subscriber, over all its subscriptions); and the
    long gaps with when they ended, in s since the run's start (``t0``, monotonic): gaps
    many pairs share at one time point at the server, scattered ones at the clients."""
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for f in flows:
        p = pairs.setdefault(
            (f["publisher"], f["subscriber"]),
            {"pair": f"{f['publisher']}->{f['subscriber']}", "max_gap_s": 0.0, "frames": 0},
        )
        p["max_gap_s"] = max(p["max_gap_s"], f["max_gap_s"])
        p["frames"] += f["frames"]
    worst = sorted(pairs.values(), key=lambda p: -p["max_gap_s"])
    return {
        "pairs": len(pairs),
        "subscriptions": len(flows),
        "frames": sum(f["frames"] for f in flows),
        "pairs_over_1s": sum(1 for p in pairs.values() if p["max_gap_s"] > MAX_GAP_S),
        "max_gap_s": worst[0]["max_gap_s"] if worst else None,
        "gap_s": distribution([p["max_gap_s"] for p in pairs.values()]),
        "never_received": sum(1 for f in flows if f["never_received"]),
        "worst": worst[:5],
        "long_gaps": sorted(
            (
                {
                    "t": round(end - t0, 2),
                    "gap_s": round(gap, 3),
                    "pair": f"{f['publisher']}->{f['subscriber']}",
                }
                for f in flows
                for end, gap in f.get("long_gaps", ())
            ),
            key=lambda g: g["t"],
        ),
        "ends": dict(Counter(f["end"] for f in flows)),
        "flows": [{k: v for k, v in f.items() if k != "long_gaps"} for f in flows],
    }


def _abuse(counts: list[dict[str, dict[str, int]]]) -> dict[str, Any]:
    kinds: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
    for c in counts:
        for kind, outcomes in c.items():
            kinds.setdefault(kind, Counter()).update(outcomes)
    return {
        kind: {
            "outcomes": dict(sorted(c.items())),
            "rejections": rejections(dict(c)),
            "actions": sum(c.values()),
        }
        for kind, c in kinds.items()
    }


def summarize(
    *,
    config: dict[str, Any],
    samples: list[dict[str, Any]],
    lags: list[tuple[float, float, float]],
    honest: list[dict[str, Any]],
    gc_pauses: list[tuple[float, int, float, float]] | None = None,
    abuse: list[dict[str, dict[str, int]]],
    after_leave: dict[str, Any] | None,
    t0: float = 0.0,
) -> dict[str, Any]:
    warmup = config["warmup_s"]
    flows = [f for h in honest for f in h["flows"]]
    joins = [j for h in honest for j in h["joins"]]
    drops: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for h in honest:
        drops.update(h["drops"])
        errors.update(h["errors"])
    lag_after = [(ms, share) for t, ms, share in lags if t >= warmup]
    report: dict[str, Any] = {
        "config": config,
        "join": {
            "joins": len(joins),
            "rejoins": sum(h["rejoins"] for h in honest),
            "connect_ms": distribution([j["connect_ms"] for j in joins]),
            "publish_ms": distribution([j["publish_ms"] for j in joins]),
            "first_frame_ms": distribution(
                [f["first_frame_ms"] for f in flows if f["first_frame_ms"] is not None]
            ),
        },
        "continuity": _continuity(flows, t0),
        "honest_dropped": dict(drops),
        "honest_errors": dict(errors.most_common(10)),
        "honest_ice_consent_expired": sum(h.get("ice_consent_expired", 0) for h in honest),
        "server": {
            "rss_mb": _flat(samples, "rss_mb", warmup),
            "open_files": _flat(samples, "fds", warmup),
            "after_leave": after_leave,
            "cpu_percent_of_one_core": _cpu(samples),
        },
        "loop_lag_ms": {
            "after_warmup": distribution([ms for ms, _ in lag_after]),
            "all": distribution([ms for _, ms, _ in lags]),
            "over_limit_after_warmup": sum(1 for ms, _ in lag_after if ms > LAG_P99_MS),
            # The server had a CPU less than half of such an interval: it waited for a
            # CPU other processes held (a loaded machine); it was not busy itself.
            "over_limit_starved": sum(
                1 for ms, share in lag_after if ms > LAG_P99_MS and share < STARVED_SHARE
            ),
        },
        "gc_pauses_after_warmup": _gc(gc_pauses or [], warmup),
        "client_loop_lag_ms": distribution([ms for h in honest for ms in h.get("loop_lag_ms", [])]),
        # When a client process's own loop stood still 200 ms or more (s since the start):
        # a pair's gap that lines up with one is that client's, not the server's.
        "client_loop_stalls": sorted(
            (round(t - t0, 2), ms, i)
            for i, h in enumerate(honest)
            for t, ms in h.get("loop_stalls", ())
        ),
        "abuse": _abuse(abuse),
        "samples": samples,
    }
    report["goal"] = _goal(report)
    return report


def _gc(pauses: list[tuple[float, int, float, float]], warmup: float) -> dict[str, Any]:
    """The collector's pauses after warm-up: a full collection holds the GIL, so every
    loop callback waits for it (:class:`e2ee.server.gcpause.GcPauseProbe`)."""
    after = [(g, wall, cpu) for t, g, wall, cpu in pauses if t >= warmup]
    full = [(wall, cpu) for g, wall, cpu in after if g == 2]
    return {
        "young": sum(1 for g, _, _ in after if g < 2),
        "full": len(full),
        "full_ms": distribution([wall for wall, _ in full]),
        "full_cpu_ms": distribution([cpu for _, cpu in full]),
        "young_ms": distribution([wall for g, wall, _ in after if g < 2]),
    }


def _gc_line(gc: dict[str, Any] | None) -> str:
    if not gc:
        return "not measured"
    return (
        f"{gc['full']} / {gc['young']}, {fmt(gc['full_ms']['max'])} "
        f"({fmt(gc['full_cpu_ms']['max'])}) ms; young p99 {fmt(gc['young_ms']['p99'])} ms"
    )


def _cpu(samples: list[dict[str, Any]]) -> float | None:
    if len(samples) < 2 or samples[-1]["t"] <= samples[0]["t"]:
        return None
    busy = float(samples[-1]["cpu_s"]) - float(samples[0]["cpu_s"])
    seconds = float(samples[-1]["t"]) - float(samples[0]["t"])
    return round(100 * busy / seconds, 1)


def _goal(r: dict[str, Any]) -> dict[str, Any]:
    c, s, lag = r["continuity"], r["server"], r["loop_lag_ms"]["after_warmup"]
    checks = {
        f"no honest pair lost media > {MAX_GAP_S:g} s": c["pairs_over_1s"] == 0
        and c["never_received"] == 0
        and c["frames"] > 0,
        "no honest participant dropped": not r["honest_dropped"],
        "server RSS flat after warm-up": bool(s["rss_mb"]["flat"]),
        "server open files flat after warm-up": bool(s["open_files"]["flat"]),
        f"loop lag p99 < {LAG_P99_MS:g} ms": lag["p99"] is not None and lag["p99"] < LAG_P99_MS,
    }
    return {"checks": checks, "met": all(checks.values())}


def _pinning(pinning: dict[str, list[int]] | None) -> str:
    if not pinning:
        return "not pinned (shared)"
    return f"{pinning['server']} / {pinning['load']}"


def format_table(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    cfg, j, c = report["config"], report["join"], report["continuity"]
    s, lag = report["server"], report["loop_lag_ms"]
    rss, fds = s["rss_mb"], s["open_files"]

    def dist(d: dict[str, Any], unit: str) -> str:
        return f"{fmt(d['p50'])} / {fmt(d['p99'])} / {fmt(d['max'])} {unit} (n={d['n']})"

    lines = [
        f"## e2ee bench soak: {cfg['honest']} honest + {cfg['abusive']} abusive, "
        f"{cfg['seconds']:g} s (warm-up {cfg['warmup_s']:g} s)",
        "",
        "| measure | value |",
        "|---|---|",
        f"| joins (rejoins) | {j['joins']} ({j['rejoins']}) |",
        f"| connect p50 / p99 / max | {dist(j['connect_ms'], 'ms')} |",
        f"| publish p50 / p99 / max | {dist(j['publish_ms'], 'ms')} |",
        f"| first frame p50 / p99 / max | {dist(j['first_frame_ms'], 'ms')} |",
        f"| honest pairs / subscriptions / frames | {c['pairs']} / {c['subscriptions']} / "
        f"{c['frames']} |",
        f"| longest gap of any pair | {fmt(c['max_gap_s'], 3)} s |",
        f"| pairs with a gap > {MAX_GAP_S:g} s | {c['pairs_over_1s']} |",
        f"| subscriptions that never received | {c['never_received']} |",
        f"| honest participants dropped | {sum(report['honest_dropped'].values())} "
        f"{report['honest_dropped'] or ''} |",
        f"| honest peer connections whose ICE consent expired | "
        f"{report['honest_ice_consent_expired']} |",
        f"| server RSS warm / end / max | {fmt(rss['warm'])} / {fmt(rss['end'])} / "
        f"{fmt(rss['max'])} MB ({_growth(rss)}) |",
        f"| server open files warm / end / max | {fmt(fds['warm'], 0)} / {fmt(fds['end'], 0)}"
        f" / {fmt(fds['max'], 0)} ({_growth(fds)}) |",
        f"| server before anyone joined | {_after(s.get('before_join'))} |",
        f"| server after everyone left | {_after(s['after_leave'])} |",
        f"| server CPU (machine busy) | {fmt(s['cpu_percent_of_one_core'])} % of one core "
        f"({fmt(report.get('machine_busy_percent'))} % of all CPUs) |",
        f"| CPUs: server / load processes | {_pinning(report.get('pinning'))} |",
        f"| loop lag p50 / p99 / max (after warm-up) | {dist(lag['after_warmup'], 'ms')} |",
        f"| lags > {LAG_P99_MS:g} ms after warm-up (of which server off-CPU) | "
        f"{lag['over_limit_after_warmup']} ({lag['over_limit_starved']}) |",
        f"| server GC pauses after warm-up: full / young collections, longest full "
        f"(CPU) | {_gc_line(report.get('gc_pauses_after_warmup'))} |",
        f"| honest clients' own loop lag p50 / p99 / max | "
        f"{dist(report['client_loop_lag_ms'], 'ms')} |",
        "",
        "| abuse | actions | rejections | outcomes |",
        "|---|---|---|---|",
    ]
    for kind, a in report["abuse"].items():
        outcomes = ", ".join(f"{k} {n}" for k, n in a["outcomes"].items())
        lines.append(f"| {kind} | {a['actions']} | {a['rejections']} | {outcomes} |")
    lines += ["", "| goal | met |", "|---|---|"]
    for check, ok in report["goal"]["checks"].items():
        lines.append(f"| {check} | {'yes' if ok else '**no**'} |")
    lines.append(f"| **all** | {'yes' if report['goal']['met'] else '**no**'} |")
    return "\n".join(lines)


def _growth(d: dict[str, Any]) -> str:
    if d["growth"] is None:
        return "no sample after warm-up"
    return f"{d['growth'] * 100:+.1f} %, {'flat' if d['flat'] else 'NOT flat'}"


def _after(a: dict[str, Any] | None) -> str:
    if not a:
        return "-"
    return f"RSS {fmt(a['rss_mb'])} MB, {a['fds']} open files"
