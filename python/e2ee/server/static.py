"""The browser client, served from the package data of :mod:`e2ee.web` (plain ES modules,
no build step): ``GET /`` is its page (``index.html``) and ``GET /static/<name>`` its
files, from one flat directory.  Names are checked against a strict pattern before any
lookup (no path separators, no leading dot), so nothing outside that directory can be
named.  Every response says what it is (``text/javascript`` for modules, which module
workers require), is revalidated on every load (``Cache-Control: no-cache`` with an
``ETag``: a new version of the client is never mixed with a cached one), and carries
``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` (the page's URL
may carry a session token).  The page gets a Content-Security-Policy that allows only
this origin's scripts, workers and connections (and, in cluster mode, connections to
the live nodes a join may be redirected to: :mod:`e2ee.server.page_policy`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re

from aiohttp import web

from e2ee.server.errors import ApiError
from e2ee.server.page_policy import cluster_urls, page_policy

__all__ = ["WEB_PACKAGE", "index", "static_file"]

#: The package whose ``static/`` directory holds the browser client (data only).
WEB_PACKAGE = "e2ee.web"
#: A static file name: one path segment, no leading dot.
_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}


def _read_static(name: str) -> bytes | None:
    if not _STATIC_NAME.fullmatch(name) or ".." in name:
        return None
    resource = importlib.resources.files(WEB_PACKAGE) / "static" / name
    try:
        return resource.read_bytes() if resource.is_file() else None
    except OSError:
        return None


async def _static_response(request: web.Request, name: str) -> web.StreamResponse:
    suffix = name[name.rfind(".") :] if "." in name else ""
    content_type = _CONTENT_TYPES.get(suffix)
    body = _read_static(name) if content_type else None
    if body is None or content_type is None:
        raise ApiError("not_found", "no such file", 404)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "Content-Type": content_type,
        "Cache-Control": "no-cache",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if suffix == ".html":
        nodes = await cluster_urls(request.app)
        headers["Content-Security-Policy"] = page_policy(request.host, nodes)
        headers["X-Frame-Options"] = "DENY"
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers=headers)


async def index(request: web.Request) -> web.StreamResponse:
    return await _static_response(request, "index.html")


async def static_file(request: web.Request) -> web.StreamResponse:
    return await _static_response(request, request.match_info["name"])
