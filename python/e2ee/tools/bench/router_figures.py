"""The figures of one measured window of ``e2ee bench router`` (:func:`step_figures`).

From the readings of :meth:`e2ee.tools.bench.router_rig.Rig.measure`:

* router CPU: utime+stime of the server process (all threads) from /proc/PID/stat over
  the window; share = CPU seconds / window (% of one core);
* forwarded RTP packets: counted as they arrive at the subscribers (every RTP packet,
  RTX included; not the router's RTCP); CPU per forwarded packet = router CPU / that
  count (the router's whole CPU: ingress, RTCP and signaling included), per forwarded
  frame = router CPU / the router's ``frames_forwarded`` (or the frames delivered, if the
  router does not count them);
* every frame at every subscriber: the publisher's frame number ``n`` and its arrival
  time (:mod:`e2ee.tools.bench.router_worker.window`), matched with the time the
  publisher sent frame ``n``'s last packet (same host, CLOCK_MONOTONIC;
  :mod:`e2ee.tools.bench.router_worker.uplink`): added latency p50/p90/p99/max per kind
  (``publisher_delay``: from the frame's stamp to that packet, the publisher's own
  lag); delivered fps per subscriber (arrivals in the window / window); frames lost =
  frames the publisher sent between the window's start and :data:`GRACE_S` before its
  end that a subscriber never got; freezes = the longest time between two delivered video
  frames at one subscriber (window edges included);
* key frame requests: each PLI reaching the publisher (its first arrival) to the arrival
  of the key frame that answered it at each subscriber of the stream ("PLI round trip");
* the loss scenario: the publisher's uplink counts (packets dropped; frames that lost a
  packet, "hit"; hit frames delivered anyway, "recovered") and the bound the longest
  freeze is held to: the median PLI round trip plus one frame interval;
* the load generators, the machine and the step's validity (whether the window measured
  the router, not the generators or other processes):
  :mod:`e2ee.tools.bench.router_load_figures`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

from e2ee.tools.bench.router_load_figures import (
    generator_figures,
    machine_figures,
    socket_reader_figures,
    step_validity,
)

__all__ = ["GRACE_S", "percentile", "step_figures"]

#: Frames sent later than this before a window's end are not expected in it.
GRACE_S = 0.5


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[k])


def _summary_ms(values_us: list[int]) -> dict[str, float]:
    v = sorted(values_us)
    return {
        "n": len(v),
        "p50_ms": round(percentile(v, 50) / 1000, 2),
        "p90_ms": round(percentile(v, 90) / 1000, 2),
        "p99_ms": round(percentile(v, 99) / 1000, 2),
        "max_ms": round((v[-1] / 1000) if v else math.nan, 2),
    }


# -- the router ----------------------------------------------------------------------------


def _forwarded(stats: dict[str, Any]) -> dict[str, int]:
    """Frames forwarded by kind, summed over the live subscriptions' tracks."""
    out = {"video": 0, "audio": 0}
    for sub in (stats.get("subscriptions") or {}).values():
        for track in (sub.get("tracks") or {}).values():
            kind = track.get("kind", "video")
            out[kind] = out.get(kind, 0) + int(track.get("frames_forwarded", 0) or 0)
    return out


def _track_sum(stats: dict[str, Any], key: str) -> int:
    """A per-track counter of the router, summed over its tracks."""
    return sum(
        int(track.get(key, 0) or 0)
        for stream in (stats.get("streams") or {}).values()
        for track in (stream.get("tracks") or {}).values()
    )


def _track_max(stats: dict[str, Any], key: str) -> float | None:
    """A per-track figure of the router, the largest over its tracks (None: no track)."""
    values = [
        float(track[key])
        for stream in (stats.get("streams") or {}).values()
        for track in (stream.get("tracks") or {}).values()
        if track.get(key) is not None
    ]
    return max(values) if values else None


#: The ingress's loss counters (:meth:`e2ee.sfu.ingress.Forwarder.stats`): frames given
#: up, NACK packets the router sent itself, NACKed packets that came, late last packets.
_INGRESS_COUNTERS = ("gaps", "nacks_sent", "nack_repairs", "tail_nacks")


def _router(
    router_cpu: float, window: float, rss: int, stats0: dict[str, Any], stats1: dict[str, Any]
) -> dict[str, Any]:
    f0, f1 = _forwarded(stats0), _forwarded(stats1)
    fwd = {k: f1.get(k, 0) - f0.get(k, 0) for k in ("video", "audio")}

    def delta(key: str) -> int:
        return int(stats1.get(key, 0) or 0) - int(stats0.get(key, 0) or 0)

    return {
        "cpu_s": round(router_cpu, 3),
        "cpu_percent_of_one_core": round(100 * router_cpu / window, 1),
        "rss_mb": round(rss / 2**20, 1),
        "frames_forwarded": {**fwd, "total": fwd["video"] + fwd["audio"]},
        "frames_received": delta("frames_received"),
        "bytes_forwarded": delta("bytes_forwarded"),
        "frames_dropped": delta("frames_dropped"),
        "keyframe_requests": delta("keyframe_requests"),
        "plis_sent": _track_sum(stats1, "plis_sent") - _track_sum(stats0, "plis_sent"),
        "ingress": {
            **{k: _track_sum(stats1, k) - _track_sum(stats0, k) for k in _INGRESS_COUNTERS},
            # The NACK timers' state at the window's end (the assembler's own estimates).
            "tail_wait_ms": _track_max(stats1, "tail_wait_ms"),
            "nack_rtt_ms": _track_max(stats1, "nack_rtt_ms"),
        },
        "frames_decoded": int(stats1.get("frames_decoded", 0) or 0),
    }


# -- what the subscribers got ----------------------------------------------------------------


class _Track:
    """One receiver's window, expanded: absolute frame numbers and arrival times."""

    def __init__(self, rx: dict[str, Any], t0_ns: int, t1_ns: int) -> None:
        self.rx = rx
        self.kind: str = rx["kind"]
        self.stream: str = rx["stream_id"]
        base_n, base_t = rx["n0"], rx["t0_ns"]
        self.ns = [base_n + d for d in rx["dn"]]
        self.times = [base_t + d * 1000 for d in rx["dt_us"]]
        inside = [(n, t) for n, t in zip(self.ns, self.times, strict=True) if t0_ns <= t <= t1_ns]
        self.inside_ns = {n for n, _ in inside}
        self.inside_times: list[int] = sorted(t for _, t in inside)
        self.arrival = dict(zip(self.ns, self.times, strict=True))

    def longest_gap_ns(
        self, t0_ns: int, t1_ns: int, outages: list[tuple[int, int]] | None = None
    ) -> int:
        """The longest time between two delivered frames (window edges included), less
        any part of it inside an ``outage`` (a burst of loss: nothing can arrive then)."""
        edges = [t0_ns, *self.inside_times, t1_ns]
        return max(
            b - a - sum(max(0, min(b, ob) - max(a, oa)) for oa, ob in outages or ())
            for a, b in itertools.pairwise(edges)
        )

    def longest_gaps_by_cause_ns(
        self, affected: set[int], outages: list[tuple[int, int]]
    ) -> tuple[int, int]:
        """The longest gaps between two delivered frames (less outages), split: those
        that end on, or skip, a frame that lost a packet on the uplink (``affected``),
        and the others (nothing was lost there: the machine or the network was late)."""
        inside = sorted((self.arrival[n], n) for n in self.inside_ns)
        with_loss = without = 0
        for (ta, na), (tb, nb) in itertools.pairwise(inside):
            gap = tb - ta - sum(max(0, min(tb, ob) - max(ta, oa)) for oa, ob in outages)
            if any(k in affected for k in range(na + 1, nb + 1)):
                with_loss = max(with_loss, gap)
            else:
                without = max(without, gap)
        return with_loss, without


class _Sent:
    """A publisher's times of one kind: when frame ``n`` was stamped (encrypted), and
    when its last packet went to the wire (``wire``, the latency's start: the
    publisher's own delays in between are not the router's)."""

    def __init__(self, record: dict[str, Any], wire: dict[str, list[int]] | None) -> None:
        self.n0: int = record["n0"]
        self.ns: list[int] = record["sent_ns"]
        self.wire = dict(zip(wire["n"], wire["ns"], strict=True)) if wire else {}

    def stamp(self, n: int) -> int | None:
        i = n - self.n0
        return self.ns[i] if 0 <= i < len(self.ns) else None

    def get(self, n: int) -> int | None:
        """Frame ``n``'s send time: its last packet's, else its stamp's."""
        return self.wire.get(n) or self.stamp(n)

    def delays_us(self) -> list[int]:
        """Stamp to last packet sent, per frame (how late the publisher sent)."""
        out = []
        for n, ns in self.wire.items():
            stamp = self.stamp(n)
            if stamp is not None:
                out.append((ns - stamp) // 1000)
        return out

    def expected(self, t0_ns: int, t_end_ns: int) -> set[int]:
        lo = bisect.bisect_left(self.ns, t0_ns)
        hi = bisect.bisect_left(self.ns, t_end_ns)
        return set(range(self.n0 + lo, self.n0 + hi))


def _pli_rtts(
    tracks: list[_Track], publishers: dict[str, dict[str, Any]], t0_ns: int, t1_ns: int
) -> dict[str, list[float]]:
    """PLI round trips in ms: ``window`` (PLIs in the window) and ``join`` (before it,
    answered by a subscriber's first frame)."""
    out: dict[str, list[float]] = {"window": [], "join": []}
    for stream, pub in publishers.items():
        video = [t for t in tracks if t.stream == stream and t.kind == "video"]
        for pli_ns, n_key, _sent in pub.get("plis", []):
            where = "window" if t0_ns <= pli_ns <= t1_ns else "join"
            for t in video:
                arrival = t.arrival.get(n_key)
                first = t.rx.get("first")
                if arrival is None and first and first[0] == n_key:
                    arrival = first[1]
                if arrival is not None and arrival >= pli_ns:
                    out[where].append(round((arrival - pli_ns) / 1e6, 2))
    return out


def _loss(
    tracks: list[_Track],
    publishers: dict[str, dict[str, Any]],
    expected: dict[tuple[str, str], set[int]],
    rtts: dict[str, list[float]],
    fps: int,
    window_ns: tuple[int, int],
    longest_ms: float,
    sent: dict[tuple[str, str], _Sent],
) -> dict[str, Any]:
    """The loss scenario's figures (uplink drops, recovery, freezes against the bound).

    The bound is held against each freeze less the part of it inside a loss burst (when
    nothing can arrive): what the router adds after the loss ends."""
    dropped = {"video": 0, "rtx": 0, "audio": 0}
    hit = recovered = hit_total = 0
    hit_latency: list[float] = []  # publisher to subscriber, of the frames repaired
    # At each repaired frame: the subscriber's gap since the frame before it, less the
    # publisher's own gap between sending the two (its timer's jitter is no router's).
    added: list[float] = []
    outages = [
        (int(a), int(b))
        for pub in publishers.values()
        for a, b in (pub.get("uplink") or {}).get("bursts_ns", [])
    ]
    beyond = [t.longest_gap_ns(*window_ns, outages) / 1e6 for t in tracks if t.kind == "video"]
    longest_beyond = max(beyond, default=math.nan)
    by_cause = [
        t.longest_gaps_by_cause_ns(
            set(
                ((publishers.get(t.stream) or {}).get("uplink") or {})
                .get("frames_affected", {})
                .get("video", [])
            ),
            outages,
        )
        for t in tracks
        if t.kind == "video"
    ]
    for stream, pub in publishers.items():
        uplink = pub.get("uplink") or {}
        for k, v in (uplink.get("packets_dropped") or {}).items():
            dropped[k] = dropped.get(k, 0) + int(v)
        affected = set((uplink.get("frames_affected") or {}).get("video", []))
        affected &= expected.get((stream, "video"), set())
        hit += len(affected)
        s = sent.get((stream, "video"))
        for t in tracks:
            if t.stream == stream and t.kind == "video":
                hit_total += len(affected)
                recovered += len(affected & set(t.ns))
                order = sorted(t.ns)
                for n in affected & set(t.ns):
                    at = s.get(n) if s is not None else None
                    if at is None or s is None:
                        continue
                    hit_latency.append((t.arrival[n] - at) / 1e6)
                    i = bisect.bisect_left(order, n)
                    before = s.get(order[i - 1]) if i > 0 else None
                    if before is not None:
                        gap = t.arrival[n] - t.arrival[order[i - 1]]
                        added.append((gap - (at - before)) / 1e6)
    rtt = rtts["window"] or rtts["join"]
    rtt_p50 = statistics.median(rtt) if rtt else math.nan
    bound = rtt_p50 + 1000 / fps
    added_max = max(added, default=math.nan)
    return {
        "packets_dropped": dropped,
        "frames_hit": hit,
        "frames_hit_at_subscribers": hit_total,
        "frames_recovered_at_subscribers": recovered,
        "pli_rtt_ms": {
            "source": "window" if rtts["window"] else "join",
            "n": len(rtt),
            "p50": round(rtt_p50, 2),
            "max": max(rtt) if rtt else math.nan,
        },
        "freeze_bound_ms": round(bound, 2),
        "hit_frame_latency_ms": {
            "n": len(hit_latency),
            "p50": round(statistics.median(hit_latency), 2) if hit_latency else math.nan,
            "max": round(max(hit_latency), 2) if hit_latency else math.nan,
        },
        "longest_freeze_ms": round(longest_ms, 2),
        "outages_ms": [round((b - a) / 1e6, 1) for a, b in outages],
        "longest_freeze_beyond_outage_ms": round(longest_beyond, 2),
        # Diagnostics (the bound is still held against the freeze above): the longest
        # freeze that a lost packet caused (it ends on or skips a hit frame) and the
        # longest with no loss involved (a busy machine delivering late).
        "longest_freeze_at_loss_ms": round(max((a for a, _ in by_cause), default=0) / 1e6, 2),
        "longest_freeze_without_loss_ms": round(max((b for _, b in by_cause), default=0) / 1e6, 2),
        # What the loss added to a freeze, the publisher's own frame spacing taken out;
        # held against the bound as one frame interval plus it.
        "freeze_added_by_loss_ms": {
            "n": len(added),
            "p50": round(statistics.median(added), 2) if added else math.nan,
            "max": round(added_max, 2),
        },
        "freeze_from_loss_ms": round(1000 / fps + added_max, 2),
        "within_bound_from_loss": None
        if math.isnan(bound) or math.isnan(added_max)
        else bool(1000 / fps + added_max <= bound),
        "subscribers_over_bound": sum(1 for g in beyond if g > bound),
        "within_bound": None
        if math.isnan(bound) or math.isnan(longest_beyond)
        else bool(longest_beyond <= bound),
    }


# -- one step ----------------------------------------------------------------------------------


def step_figures(
    *,
    window: float,
    t0_ns: int,
    t1_ns: int,
    fps: int,
    router_cpu: float,
    processes: list[dict[str, Any]],
    router_wait: float = 0.0,
    bench_cpu: float,
    machine: tuple[float, float],
    cpus: dict[int, tuple[float, float]],
    router_cpus: set[int] | None,
    load_cpus: set[int] | None,
    rss: int,
    stats0: dict[str, Any],
    stats1: dict[str, Any],
    reports: list[dict[str, Any]],
    publishers: dict[str, dict[str, Any]],
    loop_lag_ms: list[float] | None = None,
    loss: bool = False,
) -> dict[str, Any]:
    """The figures of one step (see the module docstring) from one window's readings
    (``loss``: with the loss scenario's)."""
    router = _router(router_cpu, window, rss, stats0, stats1)
    # Ready to run but waiting for its CPU (held by other processes): its latency suffers.
    router["runqueue_wait_percent"] = round(100 * router_wait / window, 1)
    lags = sorted(loop_lag_ms or [])
    router["loop_lag_ms"] = {
        "n": len(lags),
        "p50": percentile(lags, 50),
        "p99": percentile(lags, 99),
        "max": lags[-1] if lags else math.nan,
    }
    tracks = [_Track(rx, t0_ns, t1_ns) for r in reports for rx in r["receivers"]]
    sent = {
        (stream, kind): _Sent(pub["sent"][kind], (pub.get("wire") or {}).get(kind))
        for stream, pub in publishers.items()
        for kind in ("video", "audio")
    }
    end = t1_ns - int(GRACE_S * 1e9)
    expected = {key: s.expected(t0_ns, end) for key, s in sent.items()}
    latency: dict[str, list[int]] = {"video": [], "audio": []}
    lost = {"video": 0, "audio": 0}
    stamp_mismatches = 0
    gaps_ms: list[float] = []
    fps_list: dict[str, list[float]] = {"video": [], "audio": []}
    for t in tracks:
        s = sent.get((t.stream, t.kind))
        if s is None:
            continue
        for n, arrival in zip(t.ns, t.times, strict=True):
            at = s.get(n)
            if at is not None:
                latency[t.kind].append((arrival - at) // 1000)
        for n, stamp in t.rx["probes"]:
            if s.stamp(n) not in (None, stamp):
                stamp_mismatches += 1
        lost[t.kind] += len(expected[(t.stream, t.kind)] - set(t.ns))
        fps_list[t.kind].append(len(t.inside_times) / window)
        if t.kind == "video":
            gaps_ms.append(t.longest_gap_ns(t0_ns, t1_ns) / 1e6)
    packets = sum(t.rx["packets"] for t in tracks)
    other = sum(int(r.get("other_packets", 0)) for r in reports)
    fwd_total = router["frames_forwarded"]["total"] or sum(len(t.inside_times) for t in tracks)
    rtts = _pli_rtts(tracks, publishers, t0_ns, t1_ns)
    sent_packets = sum(
        sum((pub.get("uplink") or {}).get("packets_sent", {}).values())
        for pub in publishers.values()
    )
    readers = [r["reader"] for r in reports if r.get("reader")]
    gens = generator_figures(
        processes, bench_cpu, window, cpus, load_cpus, packets + other, sent_packets
    )
    gens["socket_reader"] = socket_reader_figures(readers, window)
    router_core_other = None
    if router_cpus:
        busy = sum(cpus[c][0] for c in router_cpus if c in cpus)
        router_core_other = round(max(0.0, 100 * (busy - router_cpu) / window), 1)
    mapping = sum(t.rx["mismatches"] + t.rx["unmapped"] for t in tracks) + stamp_mismatches
    video_fps = sorted(fps_list["video"])
    audio_fps = sorted(fps_list["audio"])
    longest = max(gaps_ms, default=math.nan)
    figures: dict[str, Any] = {
        "window_s": round(window, 3),
        "router": router,
        "packets_forwarded": packets + other,
        "packets_per_s": round((packets + other) / window, 1),
        "cpu_per_packet_us": round(1e6 * router_cpu / (packets + other), 2)
        if packets + other
        else None,
        "cpu_per_frame_us": round(1e6 * router_cpu / fwd_total, 2) if fwd_total else None,
        "delivered_fps": {
            "mean": round(statistics.fmean(video_fps), 2) if video_fps else 0.0,
            "min": round(video_fps[0], 2) if video_fps else 0.0,
            "max": round(video_fps[-1], 2) if video_fps else 0.0,
        },
        "audio_fps": {
            "mean": round(statistics.fmean(audio_fps), 2) if audio_fps else 0.0,
            "min": round(audio_fps[0], 2) if audio_fps else 0.0,
        },
        "latency": {kind: _summary_ms(v) for kind, v in latency.items()},
        "publisher_delay": {
            kind: _summary_ms([d for (_, k), s in sent.items() if k == kind for d in s.delays_us()])
            for kind in ("video", "audio")
        },
        "frames_lost": lost,
        "frames_expected": {
            kind: sum(len(expected[(t.stream, kind)]) for t in tracks if t.kind == kind)
            for kind in ("video", "audio")
        },
        "frames_received_by_subscribers": {
            kind: sum(len(t.inside_times) for t in tracks if t.kind == kind)
            for kind in ("video", "audio")
        },
        "longest_freeze_ms": round(longest, 2),
        "pli_rtt_ms": rtts,
        "receivers": len(tracks),
        "decrypt_errors": sum(t.rx["errors"] for t in tracks),
        "incomplete_frames": sum(t.rx["incomplete"] for t in tracks),
        "seq_gaps": sum(t.rx["seq_gaps"] for t in tracks),
        "mapping": {
            "mismatches": sum(t.rx["mismatches"] for t in tracks),
            "unmapped": sum(t.rx["unmapped"] for t in tracks),
            "stamp_mismatches": stamp_mismatches,
            "probes": sum(len(t.rx["probes"]) for t in tracks),
        },
        "load_generators": gens,
        "machine": machine_figures(machine, router_cpu, gens["cpu_s"], window),
        "router_cpu_others_percent": router_core_other,
        "validity": step_validity(
            gens, router_core_other, mapping, router["runqueue_wait_percent"]
        ),
        "publishers": {
            stream: {k: v for k, v in pub.items() if k not in ("sent", "plis", "wire")}
            for stream, pub in publishers.items()
        },
    }
    if loss:
        figures["loss"] = _loss(
            tracks, publishers, expected, rtts, fps, (t0_ns, t1_ns), longest, sent
        )
    return figures
