"""The Content-Security-Policy of the browser client's page (served by
:mod:`e2ee.server.app`): this origin's scripts, workers and connections only.

In cluster mode (docs/cluster.md) a node that does not own a session redirects the
page's WebSocket to the node that does, so the page may also connect to every live
node: the exact origins of their public URLs (``http(s)://HOST[:PORT]`` and the
``ws(s)://`` form of the same scheme), read from the node registry when the page is
served, never a wildcard.  A public URL that is not a plain origin of that form is left
out, so nothing read from Redis can add a directive.  Without a cluster the policy is
unchanged.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from e2ee.server.cluster.node import ClusterNode

__all__ = ["CLUSTER_NODE", "cluster_urls", "node_sources", "page_policy"]

log = logging.getLogger("e2ee.server.app")

#: This process as a node of a cluster, if it is one (``create_app(cluster=...)``).
CLUSTER_NODE: web.AppKey[ClusterNode] = web.AppKey("e2ee_cluster_node")

#: A Host header value (or URL authority) fit to be named in the page's policy.
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_SOCKET_SCHEME = {"http": "ws", "https": "wss"}


def node_sources(urls: Iterable[str]) -> list[str]:
    """The CSP sources of the nodes' public URLs: for each, its origin and the WebSocket
    origin of the same security (``http`` -> ``ws``, ``https`` -> ``wss``), in order,
    without repeats; URLs with anything but a scheme, a host and a port in their
    authority are skipped."""
    sources: dict[str, None] = {}
    for url in urls:
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError:
            continue
        socket = _SOCKET_SCHEME.get(parts.scheme)
        if socket is None or not _HOST.fullmatch(parts.netloc):
            continue
        host = parts.netloc.lower()
        sources[f"{parts.scheme}://{host}"] = None
        sources[f"{socket}://{host}"] = None
    return list(sources)


def page_policy(host: str, nodes: Iterable[str] = ()) -> str:
    """The page's policy for a request to ``host`` (its Host header): this origin only (and
    its WebSocket; ``'self'`` covers it in current browsers, the explicit form older ones),
    plus :func:`node_sources` of ``nodes`` (cluster mode)."""
    sockets = [f"ws://{host}", f"wss://{host}"] if _HOST.fullmatch(host) else []
    connect = " ".join(["'self'", *dict.fromkeys([*sockets, *node_sources(nodes)])])
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "worker-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "media-src 'self' blob: mediastream:",
            f"connect-src {connect}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


async def cluster_urls(app: web.Application) -> list[str]:
    """The public URLs the page may be redirected to: this node's, and every live node's
    (none without a cluster).  With Redis down, this node's only: joins fail then anyway
    (``cluster_unavailable``), and the page still loads."""
    node = app.get(CLUSTER_NODE)
    if node is None:
        return []
    urls = [node.config.public_url]
    try:
        live = await node.registry.live_nodes()
    except Exception as exc:
        if not node.unavailable(exc):
            raise
        log.debug("the page's policy names this node only: the cluster is unavailable")
        return urls
    return urls + [info.public_url for info in live]
