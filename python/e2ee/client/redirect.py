"""Which redirects the client follows (cluster mode, docs/cluster.md).  Pure: no I/O.

A node that does not own a session answers a join with ``{"type": "redirect", "url",
"node_id"}`` and close 4302; the client connects to ``url`` instead, with the same token.
The target is checked first: an ``http(s)://HOST[:PORT]`` base URL, and never a step
down from ``https`` to ``http`` (the token would then travel in clear).  The E2EE
checks of the new node's hello are the same as for any other (the keys never depend on
which node routes the media).
"""

from __future__ import annotations

import urllib.parse

from e2ee.client.errors import SessionError

__all__ = ["MAX_REDIRECTS", "redirect_target"]

#: Redirects followed in a row before the join fails with ``too_many_redirects``: a
#: session moves at most once per placement, so more means nodes disagree (and the
#: reconnect policy's backoff then paces the next attempts).
MAX_REDIRECTS = 3


def redirect_target(current: str, target: object) -> str:
    """The base URL to follow a redirect from ``current`` to (both ``http(s)://``);
    :class:`SessionError` ``protocol_error`` for a target the client refuses."""
    if not isinstance(target, str) or not target:
        raise SessionError("protocol_error", "the server's redirect names no URL")
    parts = urllib.parse.urlsplit(target)
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SessionError("protocol_error", f"the server redirected to {target[:200]!r}")
    if urllib.parse.urlsplit(current).scheme == "https" and parts.scheme != "https":
        raise SessionError(
            "protocol_error",
            f"the server redirected from https to {target[:200]!r}: refused (the token "
            "would travel unencrypted)",
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
