"""``e2ee archive start|stop|list|download``: the archives of a running server, through
its REST API (:mod:`e2ee.server.archives`), authenticated with a project auth token made
from the server's data directory (:mod:`e2ee.tools.rest_client`)."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

from e2ee.tools.cli_errors import CommandError, run_async
from e2ee.tools.rest_client import (
    START_HINT,
    TIMEOUT,
    add_server_options,
    api_error_line,
    call,
    credentials_or_fail,
    list_limit,
)

__all__ = ["add_archive_commands"]


def add_archive_commands(sub: Any) -> None:
    """Adds ``archive`` and its actions to the ``e2ee`` subparsers ``sub``."""
    p = sub.add_parser(
        "archive",
        help="start, stop, list and download archives of routed sessions without E2EE",
        description="Archive sessions of a running server (`e2ee serve`) through its REST "
        "API: one WebM file per stream track, remuxed without decoding, and a manifest, "
        "zipped.  End-to-end encrypted sessions cannot be archived.  The API secret in "
        "--data-dir signs the requests: give the data directory that server was started "
        "with.",
    )
    ss = p.add_subparsers(dest="archive_command", metavar="ACTION", required=True)

    st = ss.add_parser("start", help="start archiving a session and print the archive id")
    st.add_argument("session_id")
    st.add_argument("--name", default="", help="the archive's name")
    st.add_argument("--no-audio", action="store_true", help="leave the audio tracks out")
    st.add_argument("--no-video", action="store_true", help="leave the video tracks out")
    st.add_argument("--json", action="store_true", help="print the whole archive as JSON")
    st.set_defaults(func=_start)

    sp = ss.add_parser("stop", help="stop an archive")
    sp.add_argument("archive_id")
    sp.set_defaults(func=_stop)

    ls = ss.add_parser("list", help="list the archives, newest first")
    ls.add_argument("--session", help="only this session's archives")
    ls.add_argument(
        "--limit",
        type=list_limit("archive"),
        default=50,
        help="at most this many, 1-1000 (default: %(default)s)",
    )
    ls.add_argument("--json", action="store_true", help='print {"archives": [...]} as JSON')
    ls.set_defaults(func=_list)

    dl = ss.add_parser("download", help="download an archive's zip (waits for its files)")
    dl.add_argument("archive_id")
    dl.add_argument(
        "-o", "--output", type=Path, help="the zip file to write (default: archive-ID.zip)"
    )
    dl.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for a stopped archive's files (default: %(default)s)",
    )
    dl.set_defaults(func=_download)

    add_server_options(st, sp, ls, dl)


def _archive_path(archive_id: str) -> str:
    return "/v1/archives/" + urllib.parse.quote(archive_id, safe="")


def _start(args: argparse.Namespace) -> int:
    if args.no_audio and args.no_video:
        raise CommandError("--no-audio and --no-video together leave nothing to archive")
    body = {"name": args.name, "has_audio": not args.no_audio, "has_video": not args.no_video}
    path = "/v1/sessions/" + urllib.parse.quote(args.session_id, safe="") + "/archive"
    reply = call(args, "POST", path, body=body, expect=201)
    print(json.dumps(reply, indent=2) if args.json else reply["id"])
    return 0 if reply.get("status") != "failed" else 1


def _stop(args: argparse.Namespace) -> int:
    reply = call(args, "POST", _archive_path(args.archive_id) + "/stop")
    print(f"stopped archive {reply['id']}")
    return 0


def _list(args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit)}
    if args.session:
        query["session_id"] = args.session
    reply = call(args, "GET", "/v1/archives?" + urllib.parse.urlencode(query))
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(f"{'id':<22}  {'created (UTC)':<19}  {'status':<9}  {'seconds':>7}  session / name")
    for a in reply.get("archives", []):
        created = datetime.datetime.fromtimestamp(a.get("created_at", 0), datetime.UTC)
        print(
            f"{a['id']:<22}  {created:%Y-%m-%d %H:%M:%S}  {a.get('status', '?'):<9}  "
            f"{a.get('duration', 0):>7.1f}  {a.get('session_id', '?')} {a.get('name', '')}"
            + (f"  ({a['reason']})" if a.get("status") == "failed" else "")
        )
    return 0


def _download(args: argparse.Namespace) -> int:
    path = _archive_path(args.archive_id)
    deadline = time.monotonic() + max(0.0, args.wait)
    while True:
        archive = call(args, "GET", path)
        status = archive.get("status")
        if status == "started":
            raise CommandError(
                f"archive {args.archive_id} is still recording: "
                f"`e2ee archive stop {args.archive_id}` first"
            )
        if status != "stopped" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if status == "stopped":
        raise CommandError(f"archive {args.archive_id} is still finishing its files: retry later")
    output = args.output or Path(f"archive-{args.archive_id}.zip")
    size = run_async(_fetch(args, path + "/download", output))
    print(f"wrote {output} ({size} bytes, status {status})")
    return 0


async def _fetch(args: argparse.Namespace, path: str, output: Path) -> int:
    """Streams the zip into ``output`` (written under a temporary name, then renamed)."""
    import aiohttp

    from e2ee.server.tokens import project_auth_token

    creds = credentials_or_fail(args.data_dir)
    headers = {"Authorization": f"Bearer {project_auth_token(creds.api_key, creds.api_secret)}"}
    partial = output.with_name(output.name + ".part")
    size = 0
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                args.url + path,
                headers=headers,
                timeout=aiohttp.ClientTimeout(sock_connect=TIMEOUT, sock_read=TIMEOUT),
            ) as r,
        ):
            if r.status != 200:
                reply = await r.json(content_type=None)
                raise CommandError(api_error_line(r.status, reply, args.url, args.data_dir))
            with partial.open("wb") as f:
                async for chunk in r.content.iter_chunked(1 << 16):
                    await asyncio.to_thread(f.write, chunk)
                    size += len(chunk)
    except aiohttp.ClientConnectorError as exc:
        raise CommandError(f"cannot reach {args.url}: {START_HINT}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        raise CommandError(f"the download from {args.url} failed: {exc!r}") from exc
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from exc
    os.replace(partial, output)
    return size
