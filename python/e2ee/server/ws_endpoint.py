"""The signaling WebSocket's endpoint:
``GET /v1/sessions/{session_id}/ws?token=<session token>``.  It lets a client in, then
hands each of its messages to a :class:`e2ee.server.signaling.Session` (what they do:
:mod:`e2ee.server.signaling`; every message, error and close code: ``docs/api.md``).

* The upgrade always succeeds, and a refused client then gets one JSON error and a
  close code (4400/4401/4403/4404/4429): a browser's WebSocket API never shows the
  HTTP status of a failed upgrade.  Only the per-address budgets answer HTTP 429 before
  the upgrade (:mod:`e2ee.server.app`).
* Cluster mode (docs/cluster.md): once the token and the session check out, the node
  places the session (:meth:`e2ee.server.hub.ClusterHooks.place`); if another node owns
  it, the client gets ``redirect`` with that node's URL and close 4302; if the shared
  state is out of reach, ``cluster_unavailable`` and close 4503.
* A client's messages are handled one after the other, in order, with a turn for the
  other clients between two of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from aiohttp import WSMsgType, web

from e2ee.server.connection import Connection
from e2ee.server.errors import (
    CLOSE_BAD_REQUEST,
    CLOSE_CLUSTER_UNAVAILABLE,
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    CLOSE_PARTICIPANT_LIMIT,
    CLOSE_REDIRECT,
    CLOSE_UNAUTHORIZED,
    ApiError,
)
from e2ee.server.hub import Hub
from e2ee.server.rooms import Room
from e2ee.server.signaling import Session
from e2ee.server.tokens import TokenError, TokenWrongSession

__all__ = ["HEARTBEAT_SECONDS", "MAX_MESSAGE_BYTES", "websocket_handler"]

log = logging.getLogger(__name__)

#: Frames longer than this (bytes) close the connection with 1009.
MAX_MESSAGE_BYTES = 1024 * 1024
#: Seconds between WebSocket pings (aiohttp closes a peer that does not answer).
HEARTBEAT_SECONDS = 20.0


_tasks: set[asyncio.Task[Any]] = set()


def _spawn(aw: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.get_running_loop().create_task(aw)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _refuse(ws: web.WebSocketResponse, code: int, err: ApiError) -> web.WebSocketResponse:
    try:
        await ws.send_json(err.body())
        await ws.close(code=code, message=err.code.encode())
    except Exception as exc:
        log.debug("refusing a WebSocket failed: %r", exc)
    return ws


def _unavailable() -> ApiError:
    return ApiError(
        "cluster_unavailable",
        "the cluster's shared state is out of reach, so the session cannot be placed: "
        "retry in a few seconds",
        503,
    )


async def _redirect(ws: web.WebSocketResponse, node_id: str, url: str) -> web.WebSocketResponse:
    """Tells the client which node owns the session, then closes with 4302."""
    try:
        await ws.send_json({"type": "redirect", "url": url, "node_id": node_id})
        await ws.close(code=CLOSE_REDIRECT, message=b"redirect")
    except Exception as exc:
        log.debug("redirecting a WebSocket failed: %r", exc)
    return ws


def _session_hello(room: Room, conn: Connection) -> dict[str, Any]:
    r = room.record
    return {
        "type": "session",
        "session": {
            "id": r.id,
            "e2ee": r.e2ee,
            "media_mode": r.media_mode,
            "suite": r.suite,
            "kdf_iterations": r.kdf_iterations,
            "max_participants": r.max_participants,
        },
        "connection": conn.public(),
        "connections": room.connections_public(),
        "streams": room.streams_public(),
    }


async def websocket_handler(request: web.Request, hub: Hub) -> web.StreamResponse:
    session_id = request.match_info["session_id"]
    ws = web.WebSocketResponse(
        max_msg_size=MAX_MESSAGE_BYTES, heartbeat=HEARTBEAT_SECONDS, autoping=True
    )
    if not ws.can_prepare(request).ok:
        raise ApiError("bad_request", "this endpoint needs a WebSocket upgrade", 400)
    await ws.prepare(request)

    token = request.query.get("token")
    if not token:
        return await _refuse(
            ws, CLOSE_BAD_REQUEST, ApiError("token_missing", "a 'token' query parameter is needed")
        )
    try:
        claims = await hub.verify_session_token(token, session_id)
        if hub.cluster is not None and session_id not in hub.rooms:
            hub.forget(session_id)  # another node may have deleted it: read it again
        record = await hub.session(session_id)
        if record is not None and hub.cluster is not None:
            owner = await hub.cluster.place(session_id)
            if owner is not None:
                return await _redirect(ws, *owner)
    except TokenWrongSession as exc:
        return await _refuse(ws, CLOSE_FORBIDDEN, ApiError(exc.code, exc.message))
    except TokenError as exc:
        return await _refuse(ws, CLOSE_UNAUTHORIZED, ApiError(exc.code, exc.message))
    except Exception as exc:
        if hub.cluster is None or not hub.cluster.unavailable(exc):
            raise
        log.warning("refused a join of session %s: the cluster is unavailable", session_id)
        return await _refuse(ws, CLOSE_CLUSTER_UNAVAILABLE, _unavailable())
    if record is None:
        return await _refuse(ws, CLOSE_NOT_FOUND, ApiError("session_not_found", "no such session"))

    conn = Connection(ws, claims.role, claims.data, claims.jti, claims.expires_at)
    room = hub.room(record)
    try:
        room.add_connection(conn)
    except ApiError as err:
        conn.alive = False
        await conn.wait_closed(0)
        if not room.connections:
            await hub.retire(room)
        # A revocation that lands between the token check and the join is still 4401.
        close = CLOSE_UNAUTHORIZED if err.code == "token_revoked" else CLOSE_PARTICIPANT_LIMIT
        return await _refuse(ws, close, err)

    conn.on_too_slow = lambda: _spawn(room.remove_connection(conn, "too_slow"))
    log.info("connection %s joined session %s as %s", conn.id, record.id, conn.role)
    conn.send(_session_hello(room, conn))
    session = Session(hub, room, conn)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await session.handle_text(msg.data)
                # Fair scheduling: frames already buffered are handed over without a
                # pause, so let the other tasks (the writers above all) run in between.
                await asyncio.sleep(0)
            elif msg.type == WSMsgType.BINARY:
                await session.handle_binary()
                await asyncio.sleep(0)
            elif msg.type == WSMsgType.ERROR:
                log.info("connection %s: WebSocket error %r", conn.id, ws.exception())
                break
            if not conn.alive:
                break
    except Exception:
        log.exception("connection %s failed", conn.id)
    finally:
        await room.remove_connection(conn, "disconnected")
        conn.close(1000, "")
        await conn.wait_closed()
        log.info("connection %s left session %s", conn.id, record.id)
    return ws
