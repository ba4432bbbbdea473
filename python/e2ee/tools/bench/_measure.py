"""Small helpers shared by the ``e2ee bench`` commands: timing, machine facts, output.

* :func:`calls_per_batch` and :func:`time_batch`: time a batch of calls (sized to a few
  milliseconds, so the clock's resolution and the loop cost vanish) and divide;
* :func:`interleaved`: round-robin timing of several candidates, every repetition timing
  each candidate once in a fresh random order, so drift (frequency scaling, a noisy
  neighbour) hits them all alike; :class:`Stats` summarises the repetitions;
* :func:`steady_malloc`: keeps glibc from handing large buffers back to the kernel between
  calls, so a figure does not depend on the allocator's history;
* :func:`machine_info`: CPU model and flags, core count, Python and platform;
* :func:`write_json` and :func:`loglog_plot` (matplotlib, Agg; imported only when called).
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CPU_FLAGS",
    "Series",
    "Stats",
    "calls_per_batch",
    "cpu_info",
    "interleaved",
    "loglog_plot",
    "machine_info",
    "now_iso",
    "steady_malloc",
    "time_batch",
    "write_json",
]

#: The /proc/cpuinfo flags that matter for AES, GHASH and SHA speed.
CPU_FLAGS = (
    "aes",
    "pclmulqdq",
    "sha_ni",
    "sha512",
    "avx2",
    "avx512f",
    "vaes",
    "vpclmulqdq",
)


# -- timing ------------------------------------------------------------------------------


def time_batch(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``fn``, from one batch of ``calls`` calls (the GC paused)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / calls


def calls_per_batch(fn: Callable[[], object], target: float = 0.003) -> int:
    """How many calls of ``fn`` take about ``target`` seconds (at least 1).

    Calls ``fn`` once to warm up, then doubles a trial batch until it lasts a quarter of
    the target, and scales from there.
    """
    fn()
    calls = 1
    while True:
        per_call = time_batch(fn, calls)
        if per_call * calls >= target / 4 or calls >= 1 << 24:
            break
        calls *= 2
    return max(1, round(target / max(per_call, 1e-12)))


@dataclass(frozen=True)
class Stats:
    """A summary of repeated measurements (same unit as the samples)."""

    median: float
    p25: float
    p75: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Iterable[float]) -> Stats:
        data = sorted(samples)
        if not data:
            raise ValueError("no samples")
        if len(data) == 1:
            p25 = p75 = data[0]
        else:
            p25, _, p75 = statistics.quantiles(data, n=4, method="inclusive")
        return cls(statistics.median(data), p25, p75, data[0], data[-1], len(data))

    def scaled(self, factor: float) -> Stats:
        """Every figure multiplied by ``factor`` (e.g. seconds to µs)."""
        return Stats(
            self.median * factor,
            self.p25 * factor,
            self.p75 * factor,
            self.min * factor,
            self.max * factor,
            self.n,
        )

    def inverse(self, numerator: float) -> Stats:
        """``numerator / x`` for each figure (time to throughput; order flips)."""
        return Stats(
            numerator / self.median,
            numerator / self.p75,
            numerator / self.p25,
            numerator / self.max,
            numerator / self.min,
            self.n,
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def interleaved(
    candidates: Mapping[str, Callable[[], object]],
    repeat: int,
    *,
    target: float = 0.003,
    rng: random.Random | None = None,
) -> dict[str, tuple[Stats, int]]:
    """Time every candidate ``repeat`` times, round-robin in shuffled order.

    Each timing is one batch of calls lasting about ``target`` seconds, divided by the
    number of calls.  Returns ``{name: (seconds-per-call Stats, calls per batch)}``.
    """
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    rng = rng or random.Random()
    batch = {name: calls_per_batch(fn, target) for name, fn in candidates.items()}
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates)
    for _ in range(repeat):
        rng.shuffle(order)
        for name in order:
            samples[name].append(time_batch(candidates[name], batch[name]))
    return {name: (Stats.of(samples[name]), batch[name]) for name in candidates}


def steady_malloc(limit: int = 32 << 20) -> str | None:
    """Serve allocations up to ``limit`` bytes from the heap and never trim it (glibc only).

    glibc adapts its mmap and trim thresholds to the allocation history, so the same code
    can page-fault its fresh output buffer on every call (hundreds of µs for 1 MB) or not
    at all, depending on what ran before.  Fixing both thresholds removes that noise for
    every candidate alike.  Returns a description of what was set, or ``None`` when this
    is not glibc (nothing is changed then).
    """
    if platform.libc_ver()[0] != "glibc":
        return None
    import ctypes

    m_trim_threshold, m_mmap_threshold = -1, -3
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(m_mmap_threshold, limit) and libc.mallopt(m_trim_threshold, 2 * limit)
    except (OSError, AttributeError):
        return None
    if not ok:
        return None
    return f"glibc mallopt: M_MMAP_THRESHOLD={limit}, M_TRIM_THRESHOLD={2 * limit}"


# -- machine -----------------------------------------------------------------------------


def _proc_cpuinfo() -> tuple[str | None, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, set()
    model: str | None = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and model is None:
            model = value.strip() or None
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=2, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def cpu_info(relevant: Sequence[str] = CPU_FLAGS) -> dict[str, Any]:
    """``{"model": str, "flags": [...]}``: the CPU model and which ``relevant`` flags it has.

    From /proc/cpuinfo on Linux; elsewhere the model comes from ``sysctl`` (macOS, BSD) or
    :mod:`platform`, and flags may be unknown (``None``).
    """
    model, flags = _proc_cpuinfo()
    flags_known = bool(flags)
    if sys.platform == "darwin" or (model is None and sys.platform.startswith("freebsd")):
        model = model or _sysctl("machdep.cpu.brand_string") or _sysctl("hw.model")
        if not flags:
            keys = ("machdep.cpu.features", "machdep.cpu.leaf7_features")
            raw = " ".join(filter(None, (_sysctl(k) for k in keys)))
            flags = {f.lower().replace(".", "_") for f in raw.split()}
            flags_known = bool(flags)
    model = model or platform.processor() or platform.machine() or "unknown"
    return {
        "model": model,
        "flags": [f for f in relevant if f in flags] if flags_known else None,
        "flags_checked": list(relevant),
    }


def machine_info(relevant: Sequence[str] = CPU_FLAGS) -> dict[str, Any]:
    """CPU, cores, OS and Python: what a benchmark figure depends on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on macOS or Windows
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu_info(relevant),
        "cpus_logical": os.cpu_count(),
        "cpus_usable": usable,
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }


def now_iso() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


# -- output ------------------------------------------------------------------------------


def write_json(path: Path | str, data: Any) -> None:
    """Write ``data`` as indented JSON (NaN and infinity refused), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


@dataclass
class Series:
    """One line of a plot."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    style: dict[str, Any] = field(default_factory=dict)  # matplotlib plot() keywords


def loglog_plot(
    path: Path | str,
    panels: Sequence[tuple[str, Sequence[Series]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    xticks: Mapping[float, str] | None = None,
) -> None:
    """Draw ``panels`` (``(title, series)`` each, side by side, shared y axis) log-log.

    Uses matplotlib's Agg backend, so no display is needed; raises ``ModuleNotFoundError``
    without matplotlib.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = max(1, len(panels))
    fig, axes = plt.subplots(
        1, count, figsize=(5.5 * count, 4.5), sharey=True, squeeze=False, layout="constrained"
    )
    for ax, (panel_title, series) in zip(axes[0], panels, strict=False):
        for s in series:
            ax.plot(s.x, s.y, label=s.label, **({"marker": "o", "markersize": 3} | s.style))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
        ax.grid(True, which="major", alpha=0.4)
        ax.grid(True, which="minor", alpha=0.15)
        if xticks:
            ax.set_xticks(list(xticks), list(xticks.values()))
            ax.tick_params(axis="x", which="minor", labelbottom=False)
        ax.legend(fontsize="small")
    axes[0][0].set_ylabel(ylabel)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
