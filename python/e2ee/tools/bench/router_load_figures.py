"""Whether one window of ``e2ee bench router`` measured the router: the load generators'
and the machine's figures, and the step's validity (:func:`step_validity`).

Called by :func:`e2ee.tools.bench.router_figures.step_figures` with the readings of
:meth:`e2ee.tools.bench.router_rig.Rig.measure`:

* the load generators: each process's CPU, their CPU per packet (subscribers: per packet
  received; publishers: per packet sent), how busy their CPUs were, and what the
  subscribers' socket readers did (wakeups, datagrams per wakeup, CPU per datagram);
* the machine: how busy it was, and the CPU used by anything but the router and the
  load generators;
* the step's validity: invalid when a generator process used more than
  :data:`MAX_PROCESS_PERCENT` of a core or the generators' CPUs were more than
  :data:`MAX_CPUS_BUSY_PERCENT` busy (then the figures would measure the generators, not
  the router), or when the router itself waited for its CPU more than
  :data:`MAX_ROUTER_WAIT_PERCENT` of the window (/proc/PID/schedstat: other processes
  held it).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "MAX_CPUS_BUSY_PERCENT",
    "MAX_PROCESS_PERCENT",
    "MAX_ROUTER_WAIT_PERCENT",
    "ROUTER_CPU_SHARED_PERCENT",
    "generator_figures",
    "machine_figures",
    "socket_reader_figures",
    "step_validity",
]

#: A load process above this share of a core makes a step invalid.
MAX_PROCESS_PERCENT = 85.0
#: The load generators' CPUs busier than this (all processes on them) make a step invalid.
MAX_CPUS_BUSY_PERCENT = 95.0
#: Other processes using more than this share of the router's CPU: a warning.
ROUTER_CPU_SHARED_PERCENT = 10.0
#: The router waiting for its CPU (held by other processes) more than this share of the
#: window makes a step invalid: its latency would be the machine's, not its own.
MAX_ROUTER_WAIT_PERCENT = 20.0


def generator_figures(
    processes: list[dict[str, Any]],
    bench_cpu: float,
    window: float,
    cpus: dict[int, tuple[float, float]],
    load_cpus: set[int] | None,
    packets_received: int,
    packets_sent: int,
) -> dict[str, Any]:
    """The load generators' CPU over the window, per process and per packet."""
    per = [
        {
            **p,
            "cpu_s": round(p["cpu_s"], 3),
            "cpu_percent": round(100 * p["cpu_s"] / window, 1),
            "runqueue_wait_percent": round(100 * p.get("wait_s", 0.0) / window, 1),
        }
        for p in processes
    ]
    subs = sum(p["cpu_s"] for p in processes if p["role"] == "subscriber")
    pubs = sum(p["cpu_s"] for p in processes if p["role"] == "publisher")
    total = subs + pubs
    load = sorted(load_cpus) if load_cpus else sorted(cpus)
    busy = sum(cpus[c][0] for c in load if c in cpus)
    idle = sum(cpus[c][1] for c in load if c in cpus)
    # What else ran on those CPUs (other programs; unpinned, the router too), % of one core.
    others = max(0.0, busy - total - bench_cpu) / window
    return {
        "cpu_s": round(total, 3),
        "cpu_percent_of_one_core": round(100 * total / window, 1),
        "subscriber_cpu_per_packet_us": round(1e6 * subs / packets_received, 2)
        if packets_received
        else None,
        "publisher_cpu_per_packet_us": round(1e6 * pubs / packets_sent, 2)
        if packets_sent
        else None,
        "max_process_percent": max((p["cpu_percent"] for p in per), default=0.0),
        "max_runqueue_wait_percent": max((p["runqueue_wait_percent"] for p in per), default=0.0),
        "processes": per,
        "subscriber_processes": sum(1 for p in processes if p["role"] == "subscriber"),
        "publisher_processes": sum(1 for p in processes if p["role"] == "publisher"),
        "bench_cpu_percent": round(100 * bench_cpu / window, 1),
        "cpus": load,
        "cpus_busy_percent": round(100 * busy / max(busy + idle, 1e-9), 1),
        "cpus_others_percent": round(100 * others, 1),
    }


def socket_reader_figures(readers: list[dict[str, Any]], window: float) -> dict[str, Any]:
    """The subscribers' socket readers (the light receive paths) over the window."""
    wakeups = sum(r["wakeups"] for r in readers)
    return {
        "wakeups_per_s": round(wakeups / window, 1),
        "datagrams_per_wakeup": round(sum(r["datagrams"] for r in readers) / wakeups, 1)
        if wakeups
        else None,
        "kernel_timestamps": all(r["kernel_timestamps"] for r in readers) if readers else None,
        # GSO sends of the router that arrived whole (UDP_GRO, the native receiver).
        "gro_datagrams_per_s": round(sum(r.get("gro_datagrams", 0) for r in readers) / window, 1),
        # CPU inside the reader (reading, RTP handling, probes) per datagram: the light
        # path's own cost, without aiortc's per-connection work (RTCP, ICE consent).
        "cpu_per_datagram_us": round(
            1e6
            * sum(r.get("cpu_s", 0.0) for r in readers)
            / max(1, sum(r["datagrams"] for r in readers)),
            2,
        )
        if readers
        else None,
    }


def machine_figures(
    machine: tuple[float, float], router_cpu: float, gen_cpu: float, window: float
) -> dict[str, Any]:
    """How busy the whole machine was over the window."""
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


def step_validity(
    gens: dict[str, Any],
    router_core_other: float | None,
    mapping_errors: int,
    router_wait: float = 0.0,
) -> dict[str, Any]:
    """``valid`` with the ``reasons`` it is not, and ``warnings`` that do not void it."""
    reasons: list[str] = []
    warnings: list[str] = []
    for p in gens["processes"]:
        if p["cpu_percent"] > MAX_PROCESS_PERCENT:
            reasons.append(
                f"{p['role']} process {p['pid']} at {p['cpu_percent']:.0f}% of a core "
                f"(> {MAX_PROCESS_PERCENT:.0f}%)"
            )
    if gens["cpus_busy_percent"] > MAX_CPUS_BUSY_PERCENT:
        reasons.append(
            f"load generators' CPU(s) {gens['cpus']} {gens['cpus_busy_percent']:.0f}% busy "
            f"(> {MAX_CPUS_BUSY_PERCENT:.0f}%; the generators "
            f"{gens['cpu_percent_of_one_core']:.0f}% of a core, other processes "
            f"{gens['cpus_others_percent']:.0f}%)"
        )
    if router_wait > MAX_ROUTER_WAIT_PERCENT:
        reasons.append(
            f"the router waited {router_wait:.0f}% of the window for its CPU "
            f"(> {MAX_ROUTER_WAIT_PERCENT:.0f}%; other processes held it)"
        )
    elif router_core_other is not None and router_core_other > ROUTER_CPU_SHARED_PERCENT:
        warnings.append(
            f"other processes used {router_core_other:.0f}% of the router's CPU (the router "
            f"waited {router_wait:.0f}% of the window for it)"
        )
    if gens["max_runqueue_wait_percent"] > ROUTER_CPU_SHARED_PERCENT:
        warnings.append(
            f"a load process waited {gens['max_runqueue_wait_percent']:.0f}% of the window "
            "for a CPU"
        )
    if mapping_errors:
        warnings.append(f"{mapping_errors} frame-number mapping disagreements or unmapped frames")
    return {"valid": not reasons, "reasons": reasons, "warnings": warnings}
