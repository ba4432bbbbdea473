"""``e2ee serve``: the session server and media router, in the foreground.

Before anything is written, the command checks that it can listen on ``--host:--port``
(a busy port is one line, and no data directory is left behind).  Then it says which
data directory it uses and whether it created a new project there: started from another
directory, ``./e2ee-data`` is another project with another API key, and a token minted
from one is refused by the other (``token_bad_signature``).  If the bind still fails
(another process took the port in between), what this start created is removed.

With ``--cluster`` (or ``E2EE_CLUSTER``) the process is one node of a cluster sharing a
Redis (docs/cluster.md): the project lives there, no data directory is opened, and
``--node-id`` (``E2EE_NODE_ID``) names the node and ``--public-url`` (``E2EE_PUBLIC_URL``)
is where clients redirected to it connect.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import shutil
import socket
import sqlite3
from pathlib import Path
from typing import Any

from e2ee.tools.cli_args import (
    DEFAULT_DATA_DIR,
    at_least,
    ip_literal,
    node_id,
    port,
    positive_seconds,
    redis_url,
    server_url,
)
from e2ee.tools.cli_errors import CommandError, UsageError, require_extra

__all__ = ["add_serve_command", "bind_error", "server_limits"]


def add_serve_command(sub: Any) -> None:
    """Adds ``serve`` to the ``e2ee`` subparsers ``sub``."""
    p = sub.add_parser(
        "serve",
        help="run the session server and media router",
        description="Run the session server (REST API, signaling WebSocket, web client) and "
        "the media router in the foreground, until Ctrl-C or SIGTERM.  The first start "
        "in a data directory creates the project's API key and secret there; "
        "`e2ee session` and `e2ee token` read them from the same --data-dir.  No TLS: "
        "beyond loopback, serve it behind a TLS-terminating proxy.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument(
        "--port", type=port, default=8080, help="port, 0 = any free (default: %(default)s)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where the project credentials and sessions are kept (default: ./%(default)s)",
    )
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
        type=ip_literal,
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
    cluster = p.add_argument_group(
        "cluster", "run as one node of several sharing a Redis (docs/cluster.md)"
    )
    cluster.add_argument(
        "--cluster",
        metavar="URL",
        help="the cluster's Redis, redis://HOST:PORT/DB (env E2EE_CLUSTER; default: none, "
        "a single node keeping its project in --data-dir)",
    )
    cluster.add_argument(
        "--node-id",
        metavar="NAME",
        help="this node's name, unique in the cluster (env E2EE_NODE_ID)",
    )
    cluster.add_argument(
        "--public-url",
        metavar="URL",
        help="where clients reach this node, http(s)://HOST:PORT (env E2EE_PUBLIC_URL; "
        "default: http://HOST:PORT of --host and --port)",
    )
    limits = p.add_argument_group(
        "budgets", "what one client may cost (over budget: HTTP 429 or an error reply)"
    )
    limits.add_argument(
        "--max-connections-per-address",
        type=at_least(0, "(0 = no limit)"),
        default=64,
        metavar="N",
        help="WebSockets open at once from one client address; behind a reverse proxy "
        "every client has the proxy's address: raise it or give 0 (default: %(default)s)",
    )
    limits.add_argument(
        "--connect-rate",
        type=positive_seconds,
        default=20.0,
        metavar="PER_S",
        help="new WebSockets a second from one address, bursts of 6x (default: %(default)s)",
    )
    limits.add_argument(
        "--pending-subscription-seconds",
        type=positive_seconds,
        default=15.0,
        metavar="S",
        help="an unanswered subscription ends after this long (default: %(default)s)",
    )
    p.add_verbose()
    p.set_defaults(func=serve)


def server_limits(args: argparse.Namespace) -> Any:
    """The :class:`~e2ee.server.limits.ServerLimits` that ``serve``'s options ask for."""
    from e2ee.server.limits import ServerLimits

    return ServerLimits(
        pending_subscription_seconds=args.pending_subscription_seconds,
        max_connections_per_address=args.max_connections_per_address,
        connect_rate=args.connect_rate,
        connect_burst=6 * args.connect_rate,
    )


def serve(args: argparse.Namespace) -> int:
    # No self-test here: the serving process never loads the crypto core (it routes
    # media it cannot read); scripts/serve runs `e2ee selftest` first, in its own process.
    require_extra("server", "e2ee serve")
    from e2ee import server
    from e2ee.server.dev import check_dev_host

    if args.dev:
        try:
            check_dev_host(args.host)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    cluster = cluster_config(args)
    if args.port != 0:  # port 0 cannot be busy
        try:
            asyncio.run(_probe(args.host, args.port))
        except OSError as exc:
            raise CommandError(bind_error(args.host, args.port, exc)) from None
    created = _open_project(args.data_dir) if cluster is None else None
    _log_levels(verbose=getattr(args, "verbose", False), debug=getattr(args, "debug", False))
    rtc_configuration = None
    if args.stun_server:
        from aiortc import RTCConfiguration, RTCIceServer

        rtc_configuration = RTCConfiguration(iceServers=[RTCIceServer(urls=args.stun_server)])
    try:
        server.run(
            args.host,
            args.port,
            args.data_dir,
            dev=args.dev,
            media_addresses=args.media_address,
            rtc_configuration=rtc_configuration,
            limits=server_limits(args),
            cluster=cluster,
        )
    except Exception as exc:
        if cluster is not None and _cluster_down(exc):
            raise CommandError(
                f"cannot reach the cluster's Redis ({_redacted(cluster.url)}): {exc}: "
                "start it or check --cluster"
            ) from None
        if not isinstance(exc, OSError):
            raise
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        if created is not None:
            _undo(created)
        raise CommandError(bind_error(args.host, args.port, exc)) from None
    return 0


def _setting(args: argparse.Namespace, name: str, env: str, parse: Any) -> str | None:
    """An option given on the command line, else from the environment, checked."""
    value = getattr(args, name)
    where = f"--{name.replace('_', '-')}"
    if value is None:
        value = os.environ.get(env) or None
        where = env
    if value is None:
        return None
    try:
        return str(parse(value))
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{where}: {exc}") from None


def cluster_config(args: argparse.Namespace) -> Any:
    """The :class:`~e2ee.server.cluster.node.ClusterConfig` that the options and the
    environment ask for, or ``None`` for a single node (then nothing of the cluster, nor
    ``redis``, is imported)."""
    url = _setting(args, "cluster", "E2EE_CLUSTER", redis_url)
    name = _setting(args, "node_id", "E2EE_NODE_ID", node_id)
    public = _setting(args, "public_url", "E2EE_PUBLIC_URL", server_url)
    if url is None:
        if args.node_id is not None or args.public_url is not None:
            raise UsageError("--node-id and --public-url apply to cluster mode only: add --cluster")
        return None
    if name is None:
        raise UsageError("cluster mode needs a node name unique in the cluster: add --node-id")
    if public is None:
        public = _default_public_url(args.host, args.port)
    require_extra("cluster", "e2ee serve --cluster")
    from e2ee.server.cluster.node import ClusterConfig

    return ClusterConfig(url=url, node_id=name, public_url=public)


def _default_public_url(host: str, port: int) -> str:
    """``http://HOST:PORT`` of the bind address, when clients can use it."""
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        wildcard = False
    if port == 0 or wildcard:
        raise UsageError(
            "cluster mode needs the URL other nodes send clients to: add --public-url "
            "(it cannot be told from a wildcard --host or --port 0)"
        )
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _cluster_down(exc: BaseException) -> bool:
    from e2ee.server.cluster.errors import ClusterUnavailable
    from e2ee.server.cluster.redis_client import OUTAGE_ERRORS

    return isinstance(exc, (ClusterUnavailable, *OUTAGE_ERRORS))


def _redacted(url: str) -> str:
    from e2ee.server.cluster.node import redacted

    return redacted(url)


async def _probe(host: str, port: int) -> None:
    """Listens on ``host:port`` and stops at once, as aiohttp will bind it (every
    address the host resolves to, SO_REUSEADDR): raises the OSError it would."""
    loop = asyncio.get_running_loop()
    probe = await loop.create_server(asyncio.Protocol, host, port)
    probe.close()
    await probe.wait_closed()


def bind_error(host: str, port: int, exc: OSError) -> str:
    """Why ``host:port`` cannot be served, and what to do."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {where}: {host!r} is not a known host name: check --host"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is in use (another `e2ee serve`?): stop "
            "that server or choose another --port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine: check --host"
    if exc.errno == errno.EACCES:
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need privileges): "
            "choose a --port from 1024 up"
        )
    return f"cannot listen on {where}: {exc.strerror or exc}"


def _open_project(data_dir: Path) -> Path | None:
    """Opens (or creates) the project credentials in ``data_dir`` and says which.  Returns
    what this call created, to remove if the server cannot start: the topmost directory it
    made, or the database file itself; ``None`` for an existing project."""
    from e2ee.server.store import SQLiteStore, db_path

    new = not db_path(data_dir).is_file()
    made = data_dir.absolute()
    while not made.parent.exists():
        made = made.parent
    created = (made if not made.exists() else db_path(data_dir)) if new else None
    try:
        store = SQLiteStore.in_data_dir(data_dir)
        try:
            creds = store.get_or_create_credentials_sync()
        finally:
            store.close_sync()
    except (OSError, sqlite3.Error) as exc:
        raise CommandError(
            f"cannot keep the project in {data_dir}: {exc}: pass a writable --data-dir"
        ) from None
    where = data_dir.resolve()
    if new:
        print(
            f"e2ee: created new project credentials in {where} (api key {creds.api_key})",
            flush=True,
        )
    else:
        print(
            f"e2ee: using the project credentials in {where} (api key {creds.api_key})",
            flush=True,
        )
    return created


def _undo(created: Path) -> None:
    """Removes what :func:`_open_project` created: a directory, or the database (with
    SQLite's side files) and what the server made beside it before it failed to bind
    (the archive catalog, an empty archives directory): a new project only, so none of
    it can hold anything of the user's."""
    if created.is_dir():
        shutil.rmtree(created, ignore_errors=True)
        return
    from e2ee.archive.catalog import CATALOG_FILE
    from e2ee.server.archiving import ARCHIVES_DIR

    for name in (created.name, CATALOG_FILE):
        for suffix in ("", "-wal", "-shm", "-journal"):
            created.with_name(name + suffix).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        created.with_name(ARCHIVES_DIR).rmdir()  # only if empty


def _log_levels(*, verbose: bool, debug: bool) -> None:
    """aioice logs every ICE candidate pair's state change at INFO: in the server's log
    they are noise, shown with ``--verbose`` (or ``--debug``, with the server's DEBUG)."""
    ice = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.getLogger("aioice").setLevel(ice)
    if debug:
        logging.getLogger("e2ee").setLevel(logging.DEBUG)
