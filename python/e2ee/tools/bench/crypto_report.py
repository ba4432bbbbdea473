"""How ``e2ee bench crypto`` shows its document: Markdown tables (columns aligned, so
also readable as plain text: against the `cryptography` baseline, then against the
libcrypto floor with the goals met or not, then the threads) and a log-log plot of MB/s
against frame size, one panel per suite (matplotlib, through
:func:`e2ee.tools.bench._measure.loglog_plot`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2ee.crypto.sframe import CipherSuite
from e2ee.tools.bench import _measure
from e2ee.tools.bench._measure import Series
from e2ee.tools.bench.crypto_timing import (
    FLOOR_GOALS,
    IMPLEMENTATIONS,
    OPERATIONS,
    find,
    label,
)

__all__ = ["floor_lines", "plot", "table"]

STYLE = {
    "e2ee": {"color": "tab:blue"},
    "e2ee_into": {"color": "tab:cyan"},
    "floor": {"color": "tab:gray"},
    "media": {"color": "tab:green"},
    "baseline": {"color": "tab:red"},
    "encrypt": {"linestyle": "-"},
    "decrypt": {"linestyle": "--"},
}
NAMES = {
    "e2ee": "e2ee core",
    "e2ee_into": "e2ee core, into a reused buffer",
    "media": "e2ee media layer",
    "baseline": "cryptography baseline",
    "floor": "libcrypto floor (net of calls)",
}

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
_FLOOR_HEAD = [
    "suite",
    "size",
    "op",
    "e2ee_into µs",
    "e2ee µs",
    "floor µs",
    "floor as called µs",
    "into / floor",
    "e2ee / floor",
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


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _floor_row(suite: int, size: int, op: str, results: list[dict[str, Any]]) -> list[str]:
    r = {x["impl"]: x for x in find(results, suite=suite, size=size, op=op)}
    into, e, f = r["e2ee_into"], r["e2ee"], r["floor"]
    net = f["net_us"]
    return [
        str(suite),
        label(size),
        op,
        _num(into["us"]["median"]),
        _num(e["us"]["median"]),
        "n/a" if net is None else _num(net),
        _num(f["us"]["median"]),
        _times(into.get("vs_floor")),
        _times(e.get("vs_floor")),
    ]


def floor_lines(doc: dict[str, Any]) -> list[str]:
    """The floor table, the goal lines and the backend e2ee chose, as text lines."""
    floor = doc.get("floor")
    if floor is None:  # a record made before the floor existed prints as it always did
        return []
    lines = [""]
    if not floor["available"]:
        return [*lines, f"No libcrypto floor in this run: {floor['reason']}."]
    rows = [
        _floor_row(suite, size, op, doc["results"])
        for suite in doc["settings"]["suites"]
        for size in doc["settings"]["sizes"]
        for op in OPERATIONS
    ]
    lines += [
        f"Against the floor: {floor['version']} ({floor['library']}) doing the same frames, "
        "keyed once, into a reused buffer; floor = libcrypto's own time (as called from "
        "Python, less the same calls stubbed); x = e2ee time / floor time.",
        "",
        _markdown(_FLOOR_HEAD, rows, right=set(range(len(_FLOOR_HEAD))) - {2}),
        "",
    ]
    for g in floor["goals"]:
        verdict = {True: "met", False: "NOT MET", None: "floor not resolved"}[g["met"]]
        lines.append(
            f"goal: suite {g['suite']}, {label(g['size'])} {g['op']}: e2ee_into at "
            f"{_times(g['vs_floor'])} the floor (at most {g['limit']:g}x): {verdict}"
        )
    if not floor["goals"]:
        wanted = " and ".join(label(size) for size, _ in FLOOR_GOALS)
        lines.append(f"goal: not measured in this run (the goals are at {wanted})")
    chosen = "; ".join(f"{k}: {v}" for k, v in doc["e2ee"]["backend_info"].items())
    lines += ["", f"e2ee backend on this CPU: {chosen}."]
    return lines


def table(doc: dict[str, Any]) -> str:
    """The results as a Markdown table (columns aligned, so also readable as plain text)."""
    rows = [
        _row(suite, size, op, doc["results"])
        for suite in doc["settings"]["suites"]
        for size in doc["settings"]["sizes"]
        for op in OPERATIONS
    ]
    lines = [_markdown(_HEAD, rows, right=set(range(len(_HEAD))) - {2})]
    lines += floor_lines(doc)
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
                if impl == "floor":  # libcrypto's own time, where resolved
                    points = [(r["size"], r["size"] / r["net_us"]) for r in rows if r["net_us"]]
                else:
                    points = [(r["size"], r["mb_per_s"]["median"]) for r in rows]
                if not points:
                    continue
                series.append(
                    Series(
                        f"{NAMES[impl]}, {op}",
                        [x for x, _ in points],
                        [y for _, y in points],
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
        title=f"SFrame from Python: e2ee {doc['e2ee']['version']} vs cryptography and libcrypto; "
        f"{m['cpu']['model']}, Python {m['python']}",
        xticks={s: label(s) for s in doc["settings"]["sizes"]},
    )
