"""Argument types of the ``e2ee`` command: each refuses a bad value with a message that
says what a good one looks like (argparse turns it into a usage error, exit code 2)."""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_URL",
    "at_least",
    "ip_literal",
    "node_id",
    "port",
    "positive_seconds",
    "redis_url",
    "server_url",
]

DEFAULT_URL = "http://127.0.0.1:8080"
#: The server's default data directory (:data:`e2ee.server.store.DEFAULT_DATA_DIR`, not
#: imported: the command line must parse without the server's dependencies).
DEFAULT_DATA_DIR = Path("e2ee-data")


def port(value: str) -> int:
    """A TCP port, 0-65535 (0: any free port)."""
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a port: give 1-65535, or 0 for any free port"
        )
    return n


def server_url(value: str) -> str:
    """The base URL of an e2ee server, ``http(s)://HOST[:PORT]``, without a trailing
    slash."""
    if "://" not in value:
        raise argparse.ArgumentTypeError(f"{value!r} has no scheme: did you mean http://{value}?")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise argparse.ArgumentTypeError(
            f"{value!r}: the server speaks http:// or https://, not {parts.scheme}://"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} has a bad port: give {parts.scheme}://HOST:PORT, e.g. {DEFAULT_URL}"
        ) from None
    if not parts.hostname:
        raise argparse.ArgumentTypeError(f"{value!r} has no host: e.g. {DEFAULT_URL}")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(
            f"{value!r}: give the server's base URL without a path, e.g. {DEFAULT_URL}"
        )
    return f"{parts.scheme}://{parts.netloc}"


def positive_seconds(value: str) -> float:
    """A finite number of seconds above 0."""
    try:
        n = float(value)
    except ValueError:
        n = math.nan
    if not (math.isfinite(n) and n > 0):
        raise argparse.ArgumentTypeError(f"{value!r}: give a number of seconds above 0")
    return n


def at_least(minimum: int, why: str) -> Callable[[str], int]:
    """An integer ``>= minimum``; ``why`` completes "need at least N ...", e.g. "(the
    demo is a call)"."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = minimum - 1
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{value!r}: need at least {minimum} {why}")
        return n

    parse.__name__ = f"at_least_{minimum}"
    return parse


def ip_literal(value: str) -> str:
    """An IPv4 or IPv6 address (not a host name)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {value!r}") from None


#: A cluster node's name: letters, digits, ``.``, ``_``, ``-`` (it is part of Redis keys
#: and channel names).
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def redis_url(value: str) -> str:
    """A cluster's Redis, ``redis://[:PASSWORD@]HOST[:PORT][/DB]`` (``rediss://`` for TLS)."""
    parts = urllib.parse.urlsplit(value)
    example = "redis://127.0.0.1:6379/0"
    if parts.scheme not in ("redis", "rediss"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a Redis URL: e.g. {example}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} has a bad port: e.g. {example}") from None
    if not parts.hostname:
        raise argparse.ArgumentTypeError(f"{value!r} has no host: e.g. {example}")
    db = parts.path.strip("/")
    if db and not (db.isascii() and db.isdigit()):
        raise argparse.ArgumentTypeError(
            f"{value!r}: the path is the database number, e.g. {example}"
        )
    return value


def node_id(value: str) -> str:
    """A cluster node's name: 1 to 64 letters, digits, ``.``, ``_``, ``-``."""
    if not _NODE_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a node id: 1 to 64 letters, digits, '.', '_' or '-'"
        )
    return value
