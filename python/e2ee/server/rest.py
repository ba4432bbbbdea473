"""The REST API under ``/v1``.  Every endpoint needs ``Authorization: Bearer <jwt>``,
a project auth token from :func:`e2ee.server.tokens.project_auth_token` (HS256 with the API
secret, ``iss`` = API key, at most 1 hour long), so the secret itself never travels.

Errors are ``{"type": "error", "code": ..., "message": ...}`` with an HTTP status.

=======  ==========================================  =====================================
method   path                                        result
=======  ==========================================  =====================================
POST     /v1/sessions                                201 session
GET      /v1/sessions?limit=50                       200 {sessions: [session, ...]}, newest
                                                     first, ``limit`` 1 to 1000
GET      /v1/sessions/{id}                           200 session with live connections,
                                                     streams, subscriber counts, router
DELETE   /v1/sessions/{id}                           204; everyone in it gets
                                                     ``disconnected`` (``session_deleted``)
                                                     and close 4404; its tokens are refused
POST     /v1/sessions/{id}/tokens                    201 {token, session_id, role, data,
                                                     expires_at}
POST     /v1/sessions/{id}/revocations               204; body {jti}: the token is refused
                                                     from now on (``token_revoked``) and its
                                                     connections are force-disconnected
DELETE   /v1/sessions/{id}/connections/{cid}         204 (force disconnect; its token is
                                                     revoked)
DELETE   /v1/sessions/{id}/streams/{sid}             204 (force unpublish)
POST     /v1/sessions/{id}/broadcast|sip             409 e2ee_unsupported_feature (E2EE),
                                                     501 not_implemented (otherwise)
(archives: :mod:`e2ee.server.archives`)
=======  ==========================================  =====================================

Cluster mode (docs/cluster.md): any node answers.  What needs the live room (its
connections and streams) is forwarded to the node that owns the session
(:meth:`e2ee.server.hub.ClusterHooks.forward`); with no live owner nobody is connected,
and the answer is the single node's.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from e2ee.server.errors import ApiError
from e2ee.server.hub import Hub
from e2ee.server.rooms import Room
from e2ee.server.store import DuplicateSession, SessionRecord, new_session_id
from e2ee.server.tokens import (
    DEFAULT_TTL,
    MAX_DATA_CHARS,
    MAX_TTL,
    ROLES,
    TokenError,
    mint_token,
)
from e2ee.wire.params import DEFAULT_ITERATIONS, DEFAULT_SUITE, MAX_ITERATIONS

__all__ = ["MIN_ITERATIONS", "add_routes", "authenticate", "parse_session_options", "session_json"]

#: Bounds of the session parameters.
MIN_ITERATIONS = 1000
MAX_PARTICIPANTS = 1000
DEFAULT_MAX_PARTICIPANTS = 50
#: Body size limit of the REST API.
MAX_BODY_BYTES = 64 * 1024
#: ``GET /v1/sessions``: sessions listed by default and at most.
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
#: A ``jti`` to revoke: printable ASCII without spaces (ours are 22 base64url characters).
_JTI = re.compile(r"[\x21-\x7e]{1,128}")

# Archiving has its own endpoints (e2ee.server.archives).
_FEATURES = {
    "broadcast": "live streaming broadcasts",
    "sip": "SIP interconnect",
}

RestHandler = Callable[[web.Request, Hub], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


async def authenticate(request: web.Request, hub: Hub) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError("unauthorized", "send 'Authorization: Bearer <project auth token>'", 401)
    try:
        await hub.verify_project_auth(token.strip())
    except TokenError as exc:
        raise ApiError(exc.code, exc.message, 401) from None


async def _json_body(request: web.Request, *, empty_ok: bool) -> dict[str, Any]:
    raw = await request.read()  # client_max_size bounds it (413 past the limit)
    if not raw.strip():
        if empty_ok:
            return {}
        raise ApiError("bad_request", "a JSON object body is required")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError("bad_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError("bad_request", "the body must be a JSON object")
    return body


#: The JSON object body of a request (for the other REST modules).
read_json_body = _json_body


def _int(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError("bad_request", f"{name!r} must be an integer")
    if not lo <= value <= hi:
        raise ApiError("bad_request", f"{name!r} must be from {lo} to {hi}")
    return value


_SESSION_FIELDS = frozenset({"media_mode", "e2ee", "suite", "kdf_iterations", "max_participants"})


def parse_session_options(body: dict[str, Any]) -> dict[str, Any]:
    """Validates a ``POST /v1/sessions`` body.  Unknown fields are refused: a typo such
    as ``"e2e": true`` must not silently create an unencrypted session."""
    unknown = sorted(set(body) - _SESSION_FIELDS)
    if unknown:
        raise ApiError("bad_request", f"unknown field(s): {', '.join(map(str, unknown))[:200]}")
    media_mode = body.get("media_mode", "routed")
    if media_mode not in ("routed", "relayed"):
        raise ApiError("bad_request", "'media_mode' must be 'routed' or 'relayed'")
    e2ee = body.get("e2ee", False)
    if not isinstance(e2ee, bool):
        raise ApiError("bad_request", "'e2ee' must be true or false")
    if e2ee and media_mode == "relayed":
        raise ApiError(
            "bad_request",
            "'e2ee' needs media_mode 'routed': a relayed session has no media router, its "
            "media already goes encrypted peer to peer (DTLS-SRTP)",
        )
    suite = kdf_iterations = None
    if e2ee:
        suite = _int(body, "suite", DEFAULT_SUITE, 1, 8)
        kdf_iterations = _int(
            body, "kdf_iterations", DEFAULT_ITERATIONS, MIN_ITERATIONS, MAX_ITERATIONS
        )
    else:
        for name in ("suite", "kdf_iterations"):
            if body.get(name) is not None:
                raise ApiError("bad_request", f"{name!r} applies to E2EE sessions only")
    max_participants = _int(body, "max_participants", DEFAULT_MAX_PARTICIPANTS, 1, MAX_PARTICIPANTS)
    return {
        "media_mode": media_mode,
        "e2ee": e2ee,
        "suite": suite,
        "kdf_iterations": kdf_iterations,
        "max_participants": max_participants,
    }


def session_json(record: SessionRecord, room: Room | None) -> dict[str, Any]:
    return {
        "id": record.id,
        "media_mode": record.media_mode,
        "e2ee": record.e2ee,
        "suite": record.suite,
        "kdf_iterations": record.kdf_iterations,
        "max_participants": record.max_participants,
        "created_at": record.created_at,
        "connections": room.connections_public() if room else [],
        "streams": room.streams_public() if room else [],
        "router": room.router_stats() if room else None,
    }


# -- handlers ---------------------------------------------------------------------------


async def create_session(request: web.Request, hub: Hub) -> web.StreamResponse:
    options = parse_session_options(await _json_body(request, empty_ok=True))
    record = await store_new_session(hub, options)
    return json_response(session_json(record, None), status=201)


async def store_new_session(hub: Hub, options: dict[str, Any]) -> SessionRecord:
    """A new session with a fresh id, stored and remembered (REST and dev mode)."""
    for _ in range(3):
        record = SessionRecord(id=new_session_id(), created_at=time.time(), **options)
        try:
            await hub.store.create_session(record)
            break
        except DuplicateSession:
            continue
    else:  # pragma: no cover - 192-bit collisions
        raise ApiError("internal_error", "could not allocate a session id", 500)
    hub.remember(record)
    return record


async def list_sessions(request: web.Request, hub: Hub) -> web.StreamResponse:
    unknown = sorted(set(request.query) - {"limit"})
    if unknown:
        raise ApiError("bad_request", f"unknown parameter(s): {', '.join(unknown)[:200]}")
    raw = request.query.get("limit", str(DEFAULT_LIST_LIMIT))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 5) or not (
        1 <= int(raw) <= MAX_LIST_LIMIT
    ):
        raise ApiError("bad_request", f"'limit' must be an integer from 1 to {MAX_LIST_LIMIT}")
    records = await hub.store.list_sessions(int(raw))
    return json_response({"sessions": [session_json(r, hub.rooms.get(r.id)) for r in records]})


async def get_session(request: web.Request, hub: Hub) -> web.StreamResponse:
    record = await hub.require_session(request.match_info["session_id"])
    room = hub.rooms.get(record.id)
    if room is None and (reply := await _on_owner(hub, record.id, "describe", {})) is not None:
        return json_response(reply["session"])
    return json_response(session_json(record, room))


async def delete_session(request: web.Request, hub: Hub) -> web.StreamResponse:
    record = await hub.require_session(request.match_info["session_id"])
    if not await hub.delete_session(record.id):
        raise ApiError("session_not_found", "no such session", 404)
    return web.Response(status=204)


async def revoke_token(request: web.Request, hub: Hub) -> web.StreamResponse:
    record = await hub.require_session(request.match_info["session_id"])
    body = await _json_body(request, empty_ok=False)
    unknown = sorted(set(body) - {"jti"})
    if unknown:
        raise ApiError("bad_request", f"unknown field(s): {', '.join(map(str, unknown))[:200]}")
    jti = body.get("jti")
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        raise ApiError("bad_request", "'jti' must be a token id: 1 to 128 printable characters")
    await hub.revoke(jti)
    room = hub.rooms.get(record.id)
    if room is not None:
        await room.disconnect_token(jti)
    else:
        await _on_owner(hub, record.id, "disconnect_token", {"jti": jti})
    return web.Response(status=204)


async def create_token(request: web.Request, hub: Hub) -> web.StreamResponse:
    record = await hub.require_session(request.match_info["session_id"])
    body = await _json_body(request, empty_ok=False)
    unknown = sorted(set(body) - {"role", "ttl", "data"})
    if unknown:
        raise ApiError("bad_request", f"unknown field(s): {', '.join(map(str, unknown))[:200]}")
    return json_response(issue_token(hub, record, body), status=201)


def issue_token(
    hub: Hub, record: SessionRecord, body: dict[str, Any], *, default_role: str | None = None
) -> dict[str, Any]:
    """Checks ``role``, ``ttl`` and ``data`` of a token request and mints the token: the
    response body (REST and dev mode)."""
    role = body.get("role", default_role)
    if role not in ROLES:
        raise ApiError("bad_request", f"'role' must be one of {', '.join(ROLES)}")
    ttl = _int(body, "ttl", DEFAULT_TTL, 1, MAX_TTL)
    data = body.get("data", "")
    if not isinstance(data, str) or len(data) > MAX_DATA_CHARS:
        raise ApiError("bad_request", f"'data' must be a string of at most {MAX_DATA_CHARS}")
    now = int(time.time())
    token = mint_token(
        hub.api_key, hub.api_secret, record.id, role=role, ttl=ttl, data=data, now=now
    )
    return {
        "token": token,
        "session_id": record.id,
        "role": role,
        "data": data,
        "expires_at": now + ttl,
    }


async def delete_connection(request: web.Request, hub: Hub) -> web.StreamResponse:
    record = await hub.require_session(request.match_info["session_id"])
    cid = request.match_info["connection_id"]
    room = hub.rooms.get(record.id)
    if room is None:
        if await _on_owner(hub, record.id, "force_disconnect", {"connection_id": cid}):
            return web.Response(status=204)
        raise ApiError("unknown_connection", "no such connection in this session", 404)
    await room.force_disconnect(cid)
    return web.Response(status=204)


async def delete_stream(request: web.Request, hub: Hub) -> web.StreamResponse:
    record = await hub.require_session(request.match_info["session_id"])
    stream_id = request.match_info["stream_id"]
    room = hub.rooms.get(record.id)
    if room is None:
        if await _on_owner(hub, record.id, "force_unpublish", {"stream_id": stream_id}):
            return web.Response(status=204)
        raise ApiError("unknown_stream", "no such stream in this session", 404)
    await room.remove_stream(stream_id, "force_unpublished")
    return web.Response(status=204)


async def _on_owner(hub: Hub, session_id: str, action: str, body: dict[str, Any]) -> Any:
    """Cluster mode: ``action`` done by the node that owns the session, its reply (an
    error there raises the same :class:`ApiError` here); ``None`` on a single node or
    when no other live node owns it."""
    if hub.cluster is None:
        return None
    return await hub.cluster.forward(session_id, action, body)


def _feature(name: str) -> RestHandler:
    what = _FEATURES[name]

    async def handler(request: web.Request, hub: Hub) -> web.StreamResponse:
        record = await hub.require_session(request.match_info["session_id"])
        if record.e2ee:
            raise ApiError(
                "e2ee_unsupported_feature",
                f"{what} is not available in an end-to-end encrypted session: the media "
                "router cannot decode end-to-end encrypted media",
                409,
            )
        raise ApiError("not_implemented", f"{what} is not built yet", 501)

    return handler


def add_routes(app: web.Application, hub: Hub) -> None:
    def auth(handler: RestHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            await authenticate(request, hub)
            return await handler(request, hub)

        return wrapped

    sid = "/v1/sessions/{session_id}"
    app.router.add_post("/v1/sessions", auth(create_session))
    app.router.add_get("/v1/sessions", auth(list_sessions), allow_head=False)
    app.router.add_get(sid, auth(get_session), allow_head=False)
    app.router.add_delete(sid, auth(delete_session))
    app.router.add_post(sid + "/tokens", auth(create_token))
    app.router.add_post(sid + "/revocations", auth(revoke_token))
    app.router.add_delete(sid + "/connections/{connection_id}", auth(delete_connection))
    app.router.add_delete(sid + "/streams/{stream_id}", auth(delete_stream))
    for name in _FEATURES:
        app.router.add_post(f"{sid}/{name}", auth(_feature(name)))
