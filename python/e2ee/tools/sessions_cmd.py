"""``e2ee session create|list|show|delete``: the sessions of a running server, through its
REST API, authenticated with a project auth token made from the server's data directory
(:mod:`e2ee.tools.rest_client`)."""

from __future__ import annotations

import argparse
import datetime
import json
import urllib.parse
from typing import Any

from e2ee.tools.rest_client import add_server_options, call, list_limit

__all__ = ["add_session_commands"]


def add_session_commands(sub: Any) -> None:
    """Adds ``session`` and its actions to the ``e2ee`` subparsers ``sub``."""
    p = sub.add_parser(
        "session",
        help="create, list, show and delete sessions on a running server",
        description="Manage the sessions of a running server (`e2ee serve`) through its "
        "REST API.  The API secret in --data-dir signs the requests: give the data "
        "directory that server was started with.",
    )
    ss = p.add_subparsers(dest="session_command", metavar="ACTION", required=True)

    c = ss.add_parser("create", help="create a session and print its id")
    c.add_argument("--e2ee", action="store_true", help="end-to-end encrypted (routed only)")
    c.add_argument("--relayed", action="store_true", help="relayed media mode (default routed)")
    c.add_argument("--suite", type=int, help="SFrame cipher suite for E2EE (default 6)")
    c.add_argument("--kdf-iterations", type=int, help="PBKDF2 iterations (default 600000)")
    c.add_argument("--max-participants", type=int, help="participant limit (default 50)")
    c.add_argument("--json", action="store_true", help="print the whole session as JSON")
    c.set_defaults(func=_create)

    ls = ss.add_parser("list", help="list the sessions, newest first")
    ls.add_argument(
        "--limit",
        type=list_limit("session"),
        default=50,
        help="at most this many, 1-1000 (default: %(default)s)",
    )
    ls.add_argument("--json", action="store_true", help='print {"sessions": [...]} as JSON')
    ls.set_defaults(func=_list)

    sh = ss.add_parser("show", help="print one session (live connections, streams) as JSON")
    sh.add_argument("session_id")
    sh.set_defaults(func=_show)

    d = ss.add_parser("delete", help="delete a session: everyone in it is disconnected")
    d.add_argument("session_id")
    d.set_defaults(func=_delete)

    add_server_options(c, ls, sh, d)


def _session_path(session_id: str) -> str:
    return "/v1/sessions/" + urllib.parse.quote(session_id, safe="")


def _create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "media_mode": "relayed" if args.relayed else "routed",
        "e2ee": args.e2ee,
    }
    for name in ("suite", "kdf_iterations", "max_participants"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    reply = call(args, "POST", "/v1/sessions", body=body, expect=201)
    print(json.dumps(reply, indent=2) if args.json else reply["id"])
    return 0


def _list(args: argparse.Namespace) -> int:
    reply = call(args, "GET", f"/v1/sessions?limit={args.limit}")
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(f"{'id':<32}  {'created (UTC)':<19}  {'mode':<7}  {'e2ee':<4}  {'people':>6}  streams")
    for s in reply.get("sessions", []):
        created = datetime.datetime.fromtimestamp(s.get("created_at", 0), datetime.UTC)
        print(
            f"{s['id']:<32}  {created:%Y-%m-%d %H:%M:%S}  {s.get('media_mode', '?'):<7}  "
            f"{'yes' if s.get('e2ee') else 'no':<4}  {len(s.get('connections') or []):>6}  "
            f"{len(s.get('streams') or [])}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(call(args, "GET", _session_path(args.session_id)), indent=2))
    return 0


def _delete(args: argparse.Namespace) -> int:
    call(args, "DELETE", _session_path(args.session_id), expect=204)
    print(f"deleted session {args.session_id}")
    return 0
