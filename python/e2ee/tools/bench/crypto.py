"""``e2ee bench crypto``: SFrame encrypt and decrypt speed from Python, against a baseline.

For each cipher suite (default 6 and 5) and frame size (default 100 B, 1,200 B, 10 KB,
100 KB, 1 MB) it times one-frame encrypt and decrypt of the Rust core (``e2ee``, and
``e2ee_into`` writing into a reused buffer), the media layer (``media``: VP8 delta frames,
3 clear bytes), SFrame written on Python's ``cryptography`` (``baseline``) and the floor:
the same frames done by the system's libcrypto, keyed once (``floor``,
:mod:`e2ee.tools.bench.crypto_floor`); then 1- and 2-thread throughput on 100 KB frames;
how, in :mod:`e2ee.tools.bench.crypto_timing`.  Every figure is a median over ``--repeat``
interleaved timings; ratios to the baseline are baseline time / candidate time (above 1:
faster than the baseline), ratios to the floor e2ee time / floor time (the goals: at most
1.1 at 1 MB, 1.3 at 100 B), each goal printed as met or not.

Results go to stdout, progress to stderr; ``--json`` keeps every figure with its spread and
the machine, ``--plot`` draws MB/s against frame size (needs matplotlib;
:mod:`e2ee.tools.bench.crypto_report`).  This module is the command: its options and what
it writes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from e2ee.crypto.sframe import CipherSuite
from e2ee.tools.bench import _measure
from e2ee.tools.bench.crypto_report import plot, table
from e2ee.tools.bench.crypto_timing import CLEAR, Settings, progress, run

__all__ = ["main", "run"]

DEFAULT_SUITES = (6, 5)
DEFAULT_SIZES = (100, 1_200, 10_000, 100_000, 1_000_000)
DEFAULT_REPEAT = 61


# -- argument parsing --------------------------------------------------------------------


_BENCH_EXTRA = "pip install -e '.[bench]' in a checkout of e2ee"


def _size(text: str) -> int:
    """``1200``, ``1_200``, ``10k``, ``10KB``, ``1M`` or ``1MB`` (decimal units) to bytes."""
    t = text.strip().upper().replace("_", "").removesuffix("B")
    scale = {"K": 1_000, "M": 1_000_000}.get(t[-1:], 1)
    if scale > 1:
        t = t[:-1]
    try:
        value = float(t) * scale
    except ValueError:
        raise ValueError(f"not a size: {text!r}") from None
    if value != int(value) or not CLEAR < value <= 64_000_000:
        raise ValueError(f"size must be a whole number of bytes from {CLEAR + 1} to 64M: {text!r}")
    return int(value)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(_size(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return tuple(sorted(set(sizes)))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2ee bench crypto",
        description="SFrame encrypt/decrypt speed: the e2ee core, its media layer, a "
        "`cryptography` baseline and the system libcrypto's floor for the same work, per "
        "suite and frame size, plus 1- and 2-thread throughput.",
    )
    parser.add_argument(
        "--suites",
        type=int,
        nargs="+",
        choices=[int(s) for s in CipherSuite],
        metavar="N",
        help="cipher suites, 1 to 8 (default: 6 5)",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        metavar="LIST",
        help="frame sizes in bytes, comma-separated; k and M suffixes allowed "
        "(default: 100,1200,10000,100000,1000000)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        metavar="N",
        help=f"timings per figure, the median is reported (default: {DEFAULT_REPEAT}; --quick: 5)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON")
    parser.add_argument(
        "--plot", type=Path, metavar="PATH.png", help="plot MB/s against frame size (matplotlib)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: one size (1,200 B) per suite, few repeats, about a second",
    )
    parser.add_argument(
        "--malloc-as-is",
        action="store_true",
        help="leave glibc's malloc thresholds alone (by default they are fixed, so that large "
        "outputs do not page-fault on some calls and not others)",
    )
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)  # reproducible shuffles
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    suites = tuple(dict.fromkeys(args.suites or DEFAULT_SUITES))
    if args.quick:
        return Settings(
            suites=suites,
            sizes=args.sizes or (1_200,),
            repeat=args.repeat or 5,
            batch=0.001,
            thread_repeat=min(args.repeat or 3, 3),
            thread_batch=0.004,
            quick=True,
            seed=args.seed,
            steady_malloc=not args.malloc_as_is,
        )
    return Settings(
        suites=suites,
        sizes=args.sizes or DEFAULT_SIZES,
        repeat=args.repeat or DEFAULT_REPEAT,
        batch=0.003,
        thread_repeat=max(5, (args.repeat or DEFAULT_REPEAT) // 2),
        thread_batch=0.03,
        quick=False,
        seed=args.seed,
        steady_malloc=not args.malloc_as_is,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        parser.error(f"--plot: the file name must end in .png: {args.plot}")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ModuleNotFoundError:
            parser.error(f"--plot needs matplotlib ({_BENCH_EXTRA})")
    try:
        import cryptography  # noqa: F401
    except ModuleNotFoundError:
        parser.error(f"the baseline needs `cryptography` ({_BENCH_EXTRA})")
    doc = run(_settings(args))
    print(table(doc))
    if args.json is not None:
        _measure.write_json(args.json, doc)
        progress(f"wrote {args.json}")
    if args.plot is not None:
        plot(doc, args.plot)
        progress(f"wrote {args.plot}")
    return 0
