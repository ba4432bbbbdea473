"""The ``e2ee`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import e2ee

__all__ = ["main"]


def _selftest(_args: argparse.Namespace) -> int:
    """Known-answer tests of every suite, and what the CPU offers the backend."""
    try:
        n = e2ee.self_test()
    except e2ee.E2eeError as exc:
        print(f"e2ee {e2ee.__version__}: SELF-TEST FAILED: {exc}", file=sys.stderr)
        return 1
    hw = ", ".join(f"{name}={'yes' if ok else 'no'}" for name, ok in e2ee.cpu_features())
    print(f"e2ee {e2ee.__version__}: self-test ok ({n} cipher suites); {hw}")
    print(f"crypto: {e2ee.BACKEND}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2ee",
        description="End-to-end encrypted media through a router that cannot read it.",
    )
    parser.add_argument("--version", action="version", version=f"e2ee {e2ee.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("selftest", help="run the crypto core's known-answer tests")
    p.set_defaults(func=_selftest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
