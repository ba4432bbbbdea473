"""The README's speed tables are the records in docs/bench/ as the bench commands print
them, and its quick start stays two commands.

The tables are rendered from the JSON records by the same functions ``e2ee bench crypto``
and ``e2ee bench router`` print with, so a new record, or a change of the printed
columns, fails here until the README shows it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from e2ee.tools.bench.crypto_report import table
from e2ee.tools.bench.router_report import format_table

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RECORDS = ROOT / "docs" / "bench"


def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_crypto_tables_are_the_record() -> None:
    printed = table(json.loads((RECORDS / "crypto.json").read_text(encoding="utf-8")))
    assert printed.strip() in readme()


def test_router_table_is_what_bench_router_prints_for_the_record() -> None:
    printed = format_table(json.loads((RECORDS / "router.json").read_text(encoding="utf-8")))
    assert f"```text\n{printed}\n```" in readme()


def test_bench_commands_do_not_overwrite_the_records() -> None:
    commands = re.findall(r"^\.venv/bin/e2ee bench .*$", readme(), re.MULTILINE)
    assert commands
    assert not [c for c in commands if "docs/bench" in c]


def test_quick_start_is_two_commands() -> None:
    quick = re.search(r"## Quick start\n\n```sh\n(.*?)```", readme(), re.DOTALL)
    assert quick
    commands = [line.split("#")[0].strip() for line in quick[1].splitlines()]
    assert commands == ["./scripts/serve", "./scripts/test"]
