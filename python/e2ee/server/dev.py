"""Development mode (``e2ee serve --dev``): unauthenticated endpoints that let the browser
page create a test session and its tokens, for local testing only.

=======  ==============================  ================================================
method   path                            result
=======  ==============================  ================================================
GET      /dev                            200 {dev: true, suite, kdf_iterations} (404 when
                                         dev mode is off: the page asks this to decide
                                         whether to offer "create a test session")
POST     /dev/sessions                   201 session (always E2EE and routed); optional
                                         body {suite?, kdf_iterations?, max_participants?}
POST     /dev/sessions/{id}/tokens       201 {token, session_id, role, data, expires_at};
                                         optional body {role? (publisher), data?, ttl?}
=======  ==============================  ================================================

In production an application server creates sessions and tokens through the
authenticated REST API (:mod:`e2ee.server.rest`) and hands the page a session id and a
token in its URL.  Dev mode hands both to anyone who can reach the server, so it is only
served on a loopback address (:func:`check_dev_host`, enforced by
:func:`e2ee.server.app.serve`).  Loopback is not enough on its own: any web page the
developer opens can send requests to 127.0.0.1, and a DNS-rebinding page can even do so
under its own host name.  So every ``/dev`` request must name a loopback host in its
``Host`` header, and a request carrying an ``Origin`` (every cross-origin browser POST
does) must come from this server's own origin.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from aiohttp import web

from e2ee.server.errors import ApiError
from e2ee.server.hub import Hub
from e2ee.server.rest import issue_token, parse_session_options, session_json, store_new_session
from e2ee.wire.params import DEFAULT_ITERATIONS, DEFAULT_SUITE

__all__ = ["add_dev_routes", "check_dev_host", "is_loopback_host"]

_SESSION_FIELDS = frozenset({"suite", "kdf_iterations", "max_participants"})
_TOKEN_FIELDS = frozenset({"role", "data", "ttl"})
MAX_DEV_BODY = 4096


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address or a name, without port) is a loopback address."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_dev_host(host: str) -> None:
    """Raises ``ValueError`` unless the server binds only a loopback address (dev mode
    hands out sessions and tokens without authentication)."""
    if not is_loopback_host(host):
        raise ValueError(
            f"--dev hands out sessions and tokens without authentication: it is only "
            f"allowed on a loopback address (127.0.0.1, ::1, localhost), not {host!r}"
        )


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def _host_name(host_header: str) -> str:
    """The host of a ``Host`` header value (``127.0.0.1:8080``, ``[::1]:8080``)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else ""
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _check_request(request: web.Request) -> None:
    host = request.headers.get("Host", "")
    if not is_loopback_host(_host_name(host)):
        raise ApiError("forbidden", "dev mode answers only requests to a loopback host", 403)
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{host}":
        raise ApiError("forbidden", "dev mode answers only this server's own pages", 403)


async def _body(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    raw = await request.content.read(MAX_DEV_BODY + 1)
    if len(raw) > MAX_DEV_BODY:
        raise ApiError("payload_too_large", f"the body is over {MAX_DEV_BODY} bytes", 413)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError("bad_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError("bad_request", "the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError("bad_request", f"unknown field(s): {', '.join(map(str, unknown))[:200]}")
    return body


def add_dev_routes(app: web.Application, hub: Hub) -> None:
    """Adds the ``/dev`` endpoints (see the module docstring) to ``app``."""

    async def info(request: web.Request) -> web.StreamResponse:
        _check_request(request)
        return _json_response(
            {"dev": True, "suite": DEFAULT_SUITE, "kdf_iterations": DEFAULT_ITERATIONS}
        )

    async def create_session(request: web.Request) -> web.StreamResponse:
        _check_request(request)
        body = await _body(request, _SESSION_FIELDS)
        options = parse_session_options({**body, "e2ee": True, "media_mode": "routed"})
        record = await store_new_session(hub, options)
        return _json_response(session_json(record, None), status=201)

    async def create_token(request: web.Request) -> web.StreamResponse:
        _check_request(request)
        record = await hub.require_session(request.match_info["session_id"])
        body = await _body(request, _TOKEN_FIELDS)
        return _json_response(issue_token(hub, record, body, default_role="publisher"), status=201)

    app.router.add_get("/dev", info)
    app.router.add_post("/dev/sessions", create_session)
    app.router.add_post("/dev/sessions/{session_id}/tokens", create_token)
