"""Turns a pytest-benchmark JSON file into the README's table: median µs per frame for
e2ee and the baseline side by side, MB/s, and the ratio (baseline / e2ee, > 1 is faster).

    pytest benches --benchmark-only --benchmark-json=bench-results/sframe.json
    python benches/report.py bench-results/sframe.json [--suites 6 5]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

GROUP = re.compile(r"suite(?P<suite>\d)-(?P<size>\w+)-(?P<op>encrypt|decrypt)")
SIZES = {"100B": 100, "1200B": 1_200, "10KB": 10_000, "100KB": 100_000, "1MB": 1_000_000}


def table(path: Path, suites: list[int]) -> str:
    data = json.loads(path.read_text())
    medians: dict[tuple[int, str, str], dict[str, float]] = {}
    for bench in data["benchmarks"]:
        m = GROUP.fullmatch(bench["group"] or "")
        if not m:
            continue
        impl = bench["param"].rsplit("-", 1)[-1] if bench.get("param") else bench["name"]
        impl = "aesgcm" if "aesgcm" in bench["name"] else impl
        key = (int(m["suite"]), m["size"], m["op"])
        medians.setdefault(key, {})[impl] = bench["stats"]["median"] * 1e6
    lines = [
        "| suite | size | op | e2ee µs | e2ee MB/s | baseline µs | baseline / e2ee |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for suite in suites:
        for size, n in SIZES.items():
            for op in ("encrypt", "decrypt"):
                row = medians.get((suite, size, op))
                if not row or "e2ee" not in row or "baseline" not in row:
                    continue
                e, b = row["e2ee"], row["baseline"]
                extra = f" (AESGCM alone: {row['aesgcm']:.1f} µs)" if "aesgcm" in row else ""
                lines.append(
                    f"| {suite} | {size} | {op} | {e:.2f} | {n / e:,.0f} | {b:.2f} | "
                    f"{b / e:.1f}x{extra} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("--suites", type=int, nargs="+", default=[6, 5])
    args = parser.parse_args()
    print(table(args.json, args.suites))


if __name__ == "__main__":
    main()
