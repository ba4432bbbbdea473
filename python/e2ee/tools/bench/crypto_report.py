"""How ``e2ee bench crypto`` shows its document: a Markdown table (columns aligned, so
also readable as plain text) and a log-log plot of MB/s against frame size, one panel per
suite (matplotlib, through :func:`e2ee.tools.bench._measure.loglog_plot`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2ee.crypto.sframe import CipherSuite
from e2ee.tools.bench import _measure
from e2ee.tools.bench._measure import Series
from e2ee.tools.bench.crypto_timing import IMPLEMENTATIONS, OPERATIONS, find, label

__all__ = ["plot", "table"]

STYLE = {
    "e2ee": {"color": "tab:blue"},
    "media": {"color": "tab:green"},
    "baseline": {"color": "tab:red"},
    "encrypt": {"linestyle": "-"},
    "decrypt": {"linestyle": "--"},
}
NAMES = {"e2ee": "e2ee core", "media": "e2ee media layer", "baseline": "cryptography baseline"}

_HEAD = [
    "suite",
    "size",
    "op",
    "e2ee µs",
    "e2ee MB/s",
    "media µs",
    "media - e2ee µs",
    "baseline µs",
    "baseline MB/s",
    "e2ee vs baseline",
    "media vs baseline",
]
_THREAD_HEAD = ["suite", "size", "1 thread MB/s", "2 threads MB/s", "2 / 1"]


def _num(value: float, digits: int = 2) -> str:
    """``digits`` decimals below 100, none from 100 on (thousands separated)."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _row(suite: int, size: int, op: str, results: list[dict[str, Any]]) -> list[str]:
    r = {x["impl"]: x for x in find(results, suite=suite, size=size, op=op)}
    e, m, b = r["e2ee"], r["media"], r["baseline"]
    return [
        str(suite),
        label(size),
        op,
        _num(e["us"]["median"]),
        _num(e["mb_per_s"]["median"], 1),
        _num(m["us"]["median"]),
        f"{m['us']['median'] - e['us']['median']:+.2f}",
        _num(b["us"]["median"]),
        _num(b["mb_per_s"]["median"], 1),
        f"{e['ratio_to_baseline']:.1f}x",
        f"{m['ratio_to_baseline']:.1f}x",
    ]


def _thread_row(t: dict[str, Any]) -> list[str]:
    return [
        str(t["suite"]),
        label(t["size"]),
        _num(t["mb_per_s"]["1"]["median"]),
        _num(t["mb_per_s"]["2"]["median"]),
        f"{t['speedup_2_threads']:.2f}x",
    ]


def table(doc: dict[str, Any]) -> str:
    """The results as a Markdown table (columns aligned, so also readable as plain text)."""
    rows = [
        _row(suite, size, op, doc["results"])
        for suite in doc["settings"]["suites"]
        for size in doc["settings"]["sizes"]
        for op in OPERATIONS
    ]
    lines = [_markdown(_HEAD, rows, right=set(range(len(_HEAD))) - {2})]
    thread_rows = [_thread_row(t) for t in doc["threads"]]
    if thread_rows:
        lines += ["", "e2ee encrypt, one Encryptor per thread:", ""]
        lines.append(_markdown(_THREAD_HEAD, thread_rows, right=set(range(len(_THREAD_HEAD)))))
    m = doc["machine"]
    lines += [
        "",
        f"Medians of {doc['settings']['repeat']} interleaved timings; ratio = baseline time / "
        f"time.  {m['cpu']['model']}, {m['cpus_usable']} CPUs, Python {m['python']}, "
        f"e2ee {doc['e2ee']['version']}.",
    ]
    return "\n".join(lines)


def _markdown(head: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)]
    return "\n".join([line(head), "|" + "|".join(rule) + "|", *(line(r) for r in rows)])


def plot(doc: dict[str, Any], path: Path) -> None:
    """Throughput against frame size, log-log, one panel per suite."""
    panels = []
    for suite in doc["settings"]["suites"]:
        series = []
        for impl in IMPLEMENTATIONS:
            for op in OPERATIONS:
                rows = sorted(
                    find(doc["results"], suite=suite, impl=impl, op=op), key=lambda r: r["size"]
                )
                series.append(
                    Series(
                        f"{NAMES[impl]}, {op}",
                        [r["size"] for r in rows],
                        [r["mb_per_s"]["median"] for r in rows],
                        STYLE[impl] | STYLE[op],
                    )
                )
        panels.append((f"suite {suite} ({CipherSuite(suite).name})", series))
    m = doc["machine"]
    _measure.loglog_plot(
        path,
        panels,
        xlabel="frame size (bytes)",
        ylabel="MB/s (median)",
        title=f"SFrame from Python: e2ee {doc['e2ee']['version']} vs cryptography; "
        f"{m['cpu']['model']}, Python {m['python']}",
        xticks={s: label(s) for s in doc["settings"]["sizes"]},
    )
