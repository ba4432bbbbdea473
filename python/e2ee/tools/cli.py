"""The ``e2ee`` command.

e2ee serve [--host 127.0.0.1] [--port 8080] [--data-dir PATH] [--dev]
           [--media-address ADDR] [--stun-server URL]
e2ee session create [--e2ee] [--relayed] [--suite N] [--kdf-iterations N] ...
e2ee session list|show ID|delete ID [--url URL] [--data-dir PATH]
e2ee token SESSION_ID --role publisher [--ttl SECONDS] [--data TEXT]
e2ee demo [--participants 3] [--seconds 10] [--json] [--browser [N]] [--nodes 3]
e2ee bench crypto|router|soak|cluster ...
e2ee selftest

Every command fails with one line on stderr (what went wrong, what to do) and exit code 2
for a wrong command line, 1 for a failure; ``--debug`` shows the traceback instead
(:mod:`e2ee.tools.cli_errors`).  Importing this module needs none of the optional
dependencies: ``selftest`` and ``bench crypto`` run without the server extra, and the
other commands say which extra to install.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import e2ee
from e2ee.tools.archive_cmd import add_archive_commands
from e2ee.tools.cli_args import DEFAULT_DATA_DIR, at_least, positive_seconds, server_url
from e2ee.tools.cli_errors import (
    CommandError,
    Parser,
    UsageError,
    configure_logging,
    install_hint,
    require_extra,
    run_async,
    run_command,
)
from e2ee.tools.rest_client import NoServerData, load_credentials
from e2ee.tools.serve_cmd import add_serve_command
from e2ee.tools.sessions_cmd import add_session_commands

__all__ = ["NoServerData", "build_parser", "load_credentials", "main"]


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


def _token(args: argparse.Namespace) -> int:
    require_extra("server", "e2ee token")
    from e2ee.server.tokens import mint_token

    try:
        creds = load_credentials(args.data_dir, args.session_id)
    except NoServerData as exc:
        raise CommandError(f"{exc}: pass the --data-dir the server was started with") from None
    except LookupError as exc:
        raise CommandError(f"{exc}: `e2ee session list` shows the sessions") from None
    try:
        token = mint_token(
            creds.api_key,
            creds.api_secret,
            args.session_id,
            role=args.role,
            ttl=args.ttl,
            data=args.data,
        )
    except (ValueError, TypeError) as exc:  # TokenError is a ValueError
        raise CommandError(str(exc)) from None
    print(token)
    return 0


def _demo(args: argparse.Namespace) -> int:
    require_extra("server", "e2ee demo")
    if args.nodes:
        return _cluster_demo(args)
    if args.sessions is not None:
        raise UsageError("--sessions goes with --nodes (a single server runs one session)")
    if args.participants is None:
        args.participants = 3
    if args.url is None and args.data_dir is not None:
        raise UsageError(
            "--data-dir goes with --url (without --url the demo starts its own "
            "server in a temporary directory)"
        )
    if args.url is not None and args.data_dir is None:
        raise UsageError(
            "--url needs --data-dir, the data directory that server was started "
            "with (its API secret signs the demo's tokens)"
        )
    if args.browser > args.participants:
        raise UsageError(
            f"--browser {args.browser} is more than the {args.participants} participants"
        )
    configure_logging(verbose=getattr(args, "verbose", False), debug=getattr(args, "debug", False))
    if args.browser:
        return _browser_demo(args)
    from e2ee.tools.demo import format_report, run_demo

    report = run_async(
        run_demo(
            args.participants,
            args.seconds,
            url=args.url,
            data_dir=args.data_dir,
            progress=not args.json,
        )
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _cluster_demo(args: argparse.Namespace) -> int:
    if args.url is not None or args.data_dir is not None or args.browser:
        raise UsageError("--nodes starts its own cluster: it does not go with --url or --browser")
    from e2ee.tools.demo_cluster import format_cluster_report, run_cluster_demo
    from e2ee.tools.redis_proc import require_cluster_tools

    require_cluster_tools("e2ee demo --nodes")
    configure_logging(verbose=getattr(args, "verbose", False), debug=getattr(args, "debug", False))
    report = run_async(
        run_cluster_demo(
            args.nodes,
            args.sessions,
            2 if args.participants is None else args.participants,
            args.seconds,
            progress=not args.json,
        )
    )
    print(json.dumps(report, indent=2) if args.json else format_cluster_report(report))
    return 0


def _browser_demo(args: argparse.Namespace) -> int:
    require_extra("test", "e2ee demo --browser")
    from e2ee.tools.browser_demo import format_browser_report, run_browser_demo

    report = run_async(
        run_browser_demo(
            args.participants,
            args.seconds,
            browsers=args.browser,
            url=args.url,
            data_dir=args.data_dir,
            progress=not args.json,
        )
    )
    print(json.dumps(report, indent=2) if args.json else format_browser_report(report))
    return 0


def _bench(args: argparse.Namespace) -> int:
    import importlib

    if args.target in ("router", "soak", "cluster"):  # their servers run in child processes
        require_extra("server", f"e2ee bench {args.target}")
    try:  # a benchmark may import its dependencies late, once its options are parsed
        module = importlib.import_module(f"e2ee.tools.bench.{args.target}")
        code: int = module.main(args.bench_args)
    except ModuleNotFoundError as exc:
        raise CommandError(install_hint(exc, f"e2ee bench {args.target}")) from exc
    return code


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("e2ee-media")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="e2ee",
        description="End-to-end encrypted media through a router that cannot read it.",
    )
    parser.add_argument("--version", action="version", version=f"e2ee {_version()}")
    parser.add_verbose()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    add_serve_command(sub)
    add_session_commands(sub)
    add_archive_commands(sub)

    p = sub.add_parser("token", help="mint a participant token from the server's data dir")
    p.add_argument("session_id")
    p.add_argument(
        "--role",
        choices=["subscriber", "publisher", "moderator"],
        default="publisher",
        help="what the participant may do (default: %(default)s)",
    )
    p.add_argument(
        "--ttl", type=int, default=6 * 3600, help="seconds, at most 24 h (default: %(default)s)"
    )
    p.add_argument("--data", default="", help="connection data, visible to everyone (<= 1000)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="the server's data directory (default: %(default)s)",
    )
    p.set_defaults(func=_token)

    p = sub.add_parser(
        "demo",
        help="a measured E2EE call through a real router",
        description="A measured end-to-end encrypted call through a real router: N "
        "participants publish synthetic video and audio, everyone subscribes to everyone, "
        "secrets change twice, and an eavesdropper on the router tries to decode.  Starts "
        "its own server in a temporary directory unless --url is given.",
    )
    p.add_argument(
        "--participants",
        type=at_least(2, "participants: a call has two sides"),
        default=None,
        metavar="N",
        help="how many take part (default: 3), with --nodes in each session (default 2)",
    )
    p.add_argument(
        "--seconds",
        type=positive_seconds,
        default=10.0,
        metavar="S",
        help="how long the call lasts (default: %(default)s)",
    )
    p.add_argument(
        "--nodes",
        type=at_least(2, "nodes: a cluster has several"),
        default=0,
        metavar="N",
        help="run over N `e2ee serve --cluster` nodes and one redis-server it starts",
    )
    p.add_argument(
        "--sessions",
        type=at_least(1, "session"),
        metavar="N",
        help="with --nodes: how many sessions, spread over the nodes (default: the nodes)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--url", type=server_url, help="use this server instead of starting one")
    p.add_argument("--data-dir", type=Path, help="with --url: that server's data directory")
    p.add_argument(
        "--browser",
        type=at_least(1, "browser"),
        nargs="?",
        const=1,
        default=0,
        metavar="N",
        help="N of the participants (default 1) are Chromium pages running e2ee.js",
    )
    p.add_verbose()
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "bench",
        help="benchmarks: `e2ee bench crypto|router|soak|cluster ...` (see --help of each)",
        description="Benchmarks; the arguments after the target are its own: "
        "`e2ee bench router --help`.",
    )
    p.add_argument("target", choices=["crypto", "router", "soak", "cluster"])
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="the benchmark's arguments")
    p.set_defaults(func=_bench)

    p = sub.add_parser("selftest", help="run the crypto core's known-answer tests")
    p.set_defaults(func=_selftest)
    _add_credentials(sub)
    return parser


def _add_credentials(sub: argparse._SubParsersAction[Parser]) -> None:
    """``e2ee credentials`` (:mod:`e2ee.tools.credentials`); that module needs the server
    extra, so without it the command only says what to install."""
    try:
        from e2ee.tools.credentials import add_credentials_parser
    except ModuleNotFoundError as exc:
        missing = exc
        p = sub.add_parser("credentials", help="show or rotate the project's API secret")
        p.add_argument("action", nargs=argparse.REMAINDER)

        def fail(_args: argparse.Namespace) -> int:
            raise CommandError(install_hint(missing, "e2ee credentials"))

        p.set_defaults(func=fail)
        return
    add_credentials_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return run_command(args.func, args)
