"""The ``e2ee`` command.

e2ee serve [--host 127.0.0.1] [--port 8080] [--data-dir PATH] [--dev]
           [--media-address ADDR] [--stun-server URL]
e2ee session create [--e2ee] [--relayed] [--suite N] [--kdf-iterations N] ...
e2ee token SESSION_ID --role publisher [--ttl SECONDS] [--data TEXT]
e2ee demo [--participants 3] [--seconds 10] [--json] [--browser [N]]
e2ee selftest
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import e2ee
from e2ee.server.store import DEFAULT_DATA_DIR, Credentials, SQLiteStore, db_path

__all__ = ["NoServerData", "load_credentials", "main"]

DEFAULT_URL = "http://127.0.0.1:8080"


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


def _needs(extra: str) -> None:
    """Exits with a clear message when an optional dependency set is not installed."""
    import importlib.util

    missing = [m for m in ("aiohttp", "aiortc", "jwt") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(
            f"e2ee: this command needs {', '.join(missing)}: pip install 'e2ee-media[{extra}]'"
        )


def _ip_literal(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {value!r}") from None


def _serve(args: argparse.Namespace) -> int:
    # No self-test here: the serving process never loads the crypto core (it routes
    # media it cannot read); scripts/serve runs `e2ee selftest` first, in its own process.
    _needs("server")
    from e2ee import server

    if args.dev:
        from e2ee.server.dev import check_dev_host

        try:
            check_dev_host(args.host)
        except ValueError as exc:
            raise SystemExit(f"e2ee: {exc}") from None
    rtc_configuration = None
    if args.stun_server:
        from aiortc import RTCConfiguration, RTCIceServer

        rtc_configuration = RTCConfiguration(iceServers=[RTCIceServer(urls=args.stun_server)])
    server.run(
        args.host,
        args.port,
        args.data_dir,
        dev=args.dev,
        media_addresses=args.media_address,
        rtc_configuration=rtc_configuration,
    )
    return 0


class NoServerData(LookupError):
    """The data directory holds no server database."""


def load_credentials(
    data_dir: str | os.PathLike[str], session_id: str | None = None
) -> Credentials:
    """The project credentials of the server whose data directory is ``data_dir`` (for
    ``e2ee session create`` and ``e2ee token``).  Raises :class:`NoServerData` if there is
    no server database there and, with ``session_id``, :class:`LookupError` if the server
    has no such session."""
    path = db_path(data_dir)
    if not path.is_file():
        raise NoServerData(f"no e2ee server data in {data_dir} (no {path.name})")
    store = SQLiteStore(path)
    try:
        if session_id is not None and store.get_session_sync(session_id) is None:
            raise LookupError(f"no session {session_id!r} in {data_dir}")
        return store.get_or_create_credentials_sync()
    finally:
        store.close_sync()


def _session_create(args: argparse.Namespace) -> int:
    _needs("server")
    import aiohttp

    from e2ee.server.tokens import project_auth_token

    body: dict[str, Any] = {
        "media_mode": "relayed" if args.relayed else "routed",
        "e2ee": args.e2ee,
    }
    for name in ("suite", "kdf_iterations", "max_participants"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    try:
        creds = load_credentials(args.data_dir)
    except NoServerData:
        raise SystemExit(
            f"e2ee: no server data in {args.data_dir}: start `e2ee serve` there first"
        ) from None

    async def create() -> tuple[int, Any]:
        token = project_auth_token(creds.api_key, creds.api_secret)
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{args.url}/v1/sessions", json=body, headers=headers) as r,
        ):
            return r.status, await r.json()

    try:
        status, reply = asyncio.run(create())
    except OSError as exc:
        print(f"e2ee: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if status != 201:
        print(f"e2ee: {reply.get('code', status)}: {reply.get('message', reply)}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2) if args.json else reply["id"])
    return 0


def _token(args: argparse.Namespace) -> int:
    _needs("server")
    from e2ee.server.tokens import mint_token

    try:
        creds = load_credentials(args.data_dir, args.session_id)
        token = mint_token(
            creds.api_key,
            creds.api_secret,
            args.session_id,
            role=args.role,
            ttl=args.ttl,
            data=args.data,
        )
    except (LookupError, ValueError, TypeError) as exc:  # TokenError is a ValueError
        print(f"e2ee: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0


def _demo(args: argparse.Namespace) -> int:
    _needs("server")
    if args.browser:
        return _browser_demo(args)
    from e2ee.tools.demo import format_report, run_demo

    report = asyncio.run(
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


def _browser_demo(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        raise SystemExit("e2ee: demo --browser needs Playwright: pip install 'e2ee-media[test]'")
    from e2ee.tools.browser_demo import format_browser_report, run_browser_demo

    report = asyncio.run(
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

    try:
        module = importlib.import_module(f"e2ee.tools.bench.{args.target}")
    except ModuleNotFoundError as exc:
        raise SystemExit(f"e2ee: bench {args.target} needs {exc.name}") from exc
    code: int = module.main(args.bench_args)
    return code


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("e2ee-media")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2ee",
        description="End-to-end encrypted media through a router that cannot read it.",
    )
    parser.add_argument("--version", action="version", version=f"e2ee {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the session server and media router")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (8080; 0 = any free)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="(./e2ee-data)")
    p.add_argument(
        "--dev",
        action="store_true",
        help="development mode: the page may create test sessions and tokens without "
        "authentication (loopback addresses only)",
    )
    p.add_argument(
        "--media-address",
        action="append",
        metavar="ADDR",
        type=_ip_literal,
        help="offer only this address as ICE candidate (repeatable; default: the bind "
        "host if it is an IP address, 127.0.0.1 for localhost)",
    )
    p.add_argument(
        "--stun-server",
        action="append",
        metavar="URL",
        help="STUN server for the router, e.g. stun:stun.example.org:3478 (repeatable; "
        "default: none)",
    )
    p.set_defaults(func=_serve)

    p = sub.add_parser("session", help="manage sessions on a running server")
    ss = p.add_subparsers(dest="session_command", metavar="ACTION", required=True)
    c = ss.add_parser("create", help="create a session and print its id")
    c.add_argument("--e2ee", action="store_true", help="end-to-end encrypted (routed only)")
    c.add_argument("--relayed", action="store_true", help="relayed media mode (default routed)")
    c.add_argument("--suite", type=int, help="SFrame cipher suite for E2EE (default 6)")
    c.add_argument("--kdf-iterations", type=int, help="PBKDF2 iterations (default 600000)")
    c.add_argument("--max-participants", type=int, help="participant limit (default 50)")
    c.add_argument("--url", default=DEFAULT_URL, help=f"server URL ({DEFAULT_URL})")
    c.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="server data dir")
    c.add_argument("--json", action="store_true", help="print the whole session as JSON")
    c.set_defaults(func=_session_create)

    p = sub.add_parser("token", help="mint a participant token from the server's data dir")
    p.add_argument("session_id")
    p.add_argument("--role", choices=["subscriber", "publisher", "moderator"], default="publisher")
    p.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default 24 h, max 30 d)")
    p.add_argument("--data", default="", help="connection data, visible to everyone (<= 1000)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="server data dir")
    p.set_defaults(func=_token)

    p = sub.add_parser("demo", help="a measured E2EE call through a real router")
    p.add_argument("--participants", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--url", help="use this server instead of starting one")
    p.add_argument("--data-dir", type=Path, help="with --url: that server's data dir")
    p.add_argument(
        "--browser",
        type=int,
        nargs="?",
        const=1,
        default=0,
        metavar="N",
        help="N of the participants (default 1) are Chromium pages running e2ee.js",
    )
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "bench",
        help="benchmarks: `e2ee bench crypto ...` or `e2ee bench router ...` (see --help of each)",
        add_help=False,
    )
    p.add_argument("target", choices=["crypto", "router"])
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_bench)

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
