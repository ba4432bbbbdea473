"""The REST client of the ``e2ee`` commands (``session``, ``demo --url``): the project
credentials from a server's data directory, and one authenticated request whose
failures are one line with a hint (:class:`~e2ee.tools.cli_errors.CommandError`).

The project auth token is signed with the API secret found in the data directory, so a
data directory other than the server's gives ``token_bad_signature``: the line says so.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2ee.tools.cli_args import DEFAULT_DATA_DIR, DEFAULT_URL, at_least, server_url
from e2ee.tools.cli_errors import CommandError, run_async

if TYPE_CHECKING:
    import aiohttp

    from e2ee.server.store import Credentials

__all__ = [
    "START_HINT",
    "NoServerData",
    "add_server_options",
    "call",
    "credentials_or_fail",
    "list_limit",
    "load_credentials",
    "request",
]

#: What to do when nothing answers at the server's URL.
START_HINT = "is the server running? start it with `e2ee serve` (or ./scripts/serve)"
#: Seconds a request may take, connecting included.
TIMEOUT = 30.0


class NoServerData(LookupError):
    """The data directory holds no server database."""


def load_credentials(
    data_dir: str | os.PathLike[str], session_id: str | None = None
) -> Credentials:
    """The project credentials of the server whose data directory is ``data_dir`` (for
    ``e2ee session`` and ``e2ee token``).  Raises :class:`NoServerData` if there is no
    server database there (it never creates one) and, with ``session_id``,
    :class:`LookupError` if the server has no such session."""
    from e2ee.server.store import SQLiteStore, db_path

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


def credentials_or_fail(data_dir: Path) -> Credentials:
    """:func:`load_credentials`, failing with the line that says which ``--data-dir``."""
    try:
        return load_credentials(data_dir)
    except NoServerData:
        raise CommandError(
            f"no e2ee server data in {data_dir}: pass the --data-dir the server was started "
            "with, or start `e2ee serve` there first"
        ) from None


async def request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    path: str,
    creds: Credentials,
    data_dir: Path,
    *,
    body: dict[str, Any] | None = None,
    expect: int = 200,
) -> Any:
    """``method url+path`` with a fresh project auth token; the JSON reply (``None`` for
    204).  Any other status than ``expect``, or no answer, raises :class:`CommandError`."""
    import aiohttp

    from e2ee.server.tokens import project_auth_token

    headers = {"Authorization": f"Bearer {project_auth_token(creds.api_key, creds.api_secret)}"}
    try:
        async with http.request(
            method,
            url + path,
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        ) as r:
            status = r.status
            reply = None if status == 204 else await r.json(content_type=None)
    except aiohttp.ClientConnectorError as exc:
        raise CommandError(f"cannot reach {url} ({_reason(exc.os_error)}): {START_HINT}") from exc
    except TimeoutError:
        raise CommandError(
            f"{url} did not answer within {TIMEOUT:g} s: is it overloaded?"
        ) from None
    except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a reply that is not JSON
        raise CommandError(
            f"{url} did not answer like an e2ee server ({type(exc).__name__}: {exc}): check --url"
        ) from exc
    if status != expect:
        raise CommandError(api_error_line(status, reply, url, data_dir))
    return reply


def api_error_line(status: int, reply: Any, url: str, data_dir: Path) -> str:
    """The server's error (``{"code", "message"}``) and what to do about it."""
    if not isinstance(reply, dict) or "code" not in reply:
        return f"{url} answered HTTP {status}: is it an e2ee server? check --url"
    code, message = reply["code"], reply.get("message", "")
    other_project = (
        f"the project auth token was signed with the API secret in {data_dir}, which the "
        f"server at {url} does not hold (another data dir's project?): pass the --data-dir "
        "that server was started with"
    )
    if code in ("token_bad_signature", "token_unknown_key"):
        return f"{code}: {other_project}"  # the server's text would say "get a new token"
    hint = {
        "token_expired": "the project auth token expired on arrival: check this machine's clock",
        "session_not_found": "`e2ee session list` shows the sessions there",
    }.get(code)
    return f"{code}: {message}" + (f": {hint}" if hint else "")


def _reason(error: OSError) -> str:
    """``connection refused`` rather than aiohttp's ``Connect call failed (...)``."""
    if isinstance(error.errno, int) and error.errno > 0:
        return os.strerror(error.errno).lower()
    return str(error.strerror or error).lower()


# -- for the REST commands (e2ee session, e2ee archive) -------------------------------------


def add_server_options(*parsers: argparse.ArgumentParser) -> None:
    """``--url`` and ``--data-dir`` (where the credentials are) on each command."""
    for parser in parsers:
        parser.add_argument(
            "--url", type=server_url, default=DEFAULT_URL, help="server URL (default: %(default)s)"
        )
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=DEFAULT_DATA_DIR,
            help="the server's data directory (default: %(default)s)",
        )


def call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    """One authenticated request to ``args.url``: the JSON reply (``None`` for 204)."""
    import aiohttp

    creds = credentials_or_fail(args.data_dir)

    async def run() -> Any:
        async with aiohttp.ClientSession() as http:
            return await request(http, method, args.url, path, creds, args.data_dir, **kwargs)

    return run_async(run())


def list_limit(what: str) -> Callable[[str], int]:
    """``--limit`` of a listing: 1 to 1000, what the server lists at most."""
    at_least_one = at_least(1, what)

    def parse(value: str) -> int:
        n = at_least_one(value)
        if n > 1000:
            raise argparse.ArgumentTypeError(f"{value!r}: the server lists at most 1000")
        return n

    return parse
