"""``e2ee credentials``: the project's API key and API secrets, in a server's data dir.

e2ee credentials show   [--data-dir DIR] [--show-secret] [--json]
e2ee credentials rotate [--data-dir DIR] [--grace SECONDS] [--show-secret]
e2ee credentials retire [--data-dir DIR] [--kid KID]
e2ee credentials token  [--data-dir DIR] [--ttl SECONDS]

``rotate`` makes a new API secret, which signs every token from then on; the previous one
still verifies tokens for ``--grace`` seconds (default 24 h), or until ``retire``, so the
application servers can move to the new secret without a gap.  At most two secrets are
live: rotating again ends the grace of the one before.  A running server sees the change
within a second (:data:`e2ee.server.hub.KEYRING_CACHE_SECONDS`).  Secrets are printed only
with ``--show-secret``; tokens name their secret by key id (``kid``), which is public.
``token`` prints a short-lived project auth token for the REST API, for curl:
``curl -H "Authorization: Bearer $(e2ee credentials token)" ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from e2ee.server.store import DEFAULT_DATA_DIR, ApiSecret, SQLiteStore, db_path
from e2ee.server.tokens import MAX_AUTH_TTL, project_auth_token
from e2ee.tools.cli_args import at_least
from e2ee.tools.cli_errors import CommandError, UsageError

__all__ = ["DEFAULT_GRACE_SECONDS", "add_credentials_parser"]

#: How long a rotated-out secret keeps verifying tokens unless retired earlier.
DEFAULT_GRACE_SECONDS = 24 * 3600


def _open(data_dir: Path) -> SQLiteStore:
    path = db_path(data_dir)
    if not path.is_file():
        raise CommandError(
            f"no server data in {data_dir} (no {path.name}): start `e2ee serve` there first, "
            "or pass the --data-dir it uses"
        )
    return SQLiteStore(path)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _secret_json(s: ApiSecret, show_secret: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kid": s.kid,
        "signing": s.expires_at is None,
        "created_at": s.created_at,
        "expires_at": s.expires_at,
    }
    if show_secret:
        out["secret"] = s.secret
    return out


def _show(args: argparse.Namespace) -> int:
    store = _open(args.data_dir)
    try:
        api_key = store.get_or_create_credentials_sync().api_key
        secrets = store.api_secrets_sync()
    finally:
        store.close_sync()
    if args.json:
        keys = [_secret_json(s, args.show_secret) for s in secrets]
        print(json.dumps({"api_key": api_key, "secrets": keys}, indent=2))
        return 0
    print(f"API key:  {api_key}")
    for s in secrets:
        if s.expires_at is None:
            line = f"signing:  {s.kid}  created {_when(s.created_at)}"
        else:
            line = f"previous: {s.kid}  verifies until {_when(s.expires_at)}"
        print(line + (f"  secret {s.secret}" if args.show_secret else ""))
    return 0


def _rotate(args: argparse.Namespace) -> int:
    store = _open(args.data_dir)
    try:
        new = store.rotate_secret_sync(args.grace)
        previous = [s for s in store.api_secrets_sync() if s.expires_at is not None]
    finally:
        store.close_sync()
    print(f"new signing key: {new.kid}")
    if args.show_secret:
        print(f"new API secret:  {new.secret}")
    for s in previous:
        print(
            f"previous key {s.kid} verifies tokens until {_when(s.expires_at)} "
            "(or `e2ee credentials retire`)"
        )
    return 0


def _retire(args: argparse.Namespace) -> int:
    store = _open(args.data_dir)
    try:
        kids = store.retire_secrets_sync(args.kid)
    finally:
        store.close_sync()
    if not kids:
        what = f"no previous key {args.kid!r}" if args.kid else "no previous key"
        raise CommandError(f"{what} to retire (the signing key cannot be retired)")
    for kid in kids:
        print(f"retired {kid}: tokens it signed are refused from now on")
    return 0


def _token(args: argparse.Namespace) -> int:
    if args.ttl > MAX_AUTH_TTL:
        raise UsageError(f"--ttl {args.ttl}: project auth tokens live at most {MAX_AUTH_TTL} s")
    store = _open(args.data_dir)
    try:
        creds = store.get_or_create_credentials_sync()
    finally:
        store.close_sync()
    print(project_auth_token(creds.api_key, creds.api_secret, args.ttl))
    return 0


def _grace(value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        n = math.nan
    if not (math.isfinite(n) and n >= 0):
        raise argparse.ArgumentTypeError(f"{value!r}: give a number of seconds >= 0")
    return n


def add_credentials_parser(sub: Any) -> None:
    """Adds ``credentials show|rotate|retire`` to the ``e2ee`` subcommands ``sub`` (what
    ``ArgumentParser.add_subparsers`` returned)."""
    p = sub.add_parser("credentials", help="show or rotate the project's API secret")
    actions = p.add_subparsers(dest="credentials_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="server data dir")

    q = actions.add_parser("show", help="print the API key and the live key ids")
    common(q)
    q.add_argument("--show-secret", action="store_true", help="also print the secrets")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=_show)

    q = actions.add_parser("rotate", help="make a new signing secret; the old one lingers")
    common(q)
    q.add_argument(
        "--grace",
        type=_grace,
        default=DEFAULT_GRACE_SECONDS,
        metavar="SECONDS",
        help="how long the previous secret still verifies tokens (default 86400 = 24 h)",
    )
    q.add_argument("--show-secret", action="store_true", help="print the new secret")
    q.set_defaults(func=_rotate)

    q = actions.add_parser("retire", help="end the grace period of the previous secret now")
    common(q)
    q.add_argument("--kid", help="retire only this key id")
    q.set_defaults(func=_retire)

    q = actions.add_parser(
        "token", help="print a project auth token for the REST API (Authorization: Bearer)"
    )
    common(q)
    q.add_argument(
        "--ttl",
        type=at_least(1, "second"),
        default=300,
        metavar="SECONDS",
        help=f"lifetime, at most {MAX_AUTH_TTL} (default: %(default)s)",
    )
    q.set_defaults(func=_token)
