"""The archive endpoints of the REST API (project auth, as the rest of ``/v1``); the
work is done by :class:`e2ee.server.archiving.ArchiveService`.

=======  ==========================================  =====================================
method   path                                        result
=======  ==========================================  =====================================
POST     /v1/sessions/{id}/archive                   201 archive (started); body {name,
                                                     has_audio, has_video, output_mode}
POST     /v1/archives/{aid}/stop                     200 archive (stopped)
GET      /v1/archives?session_id=&limit=50           200 {archives: [archive, ...]}, newest
                                                     first
GET      /v1/archives/{aid}                          200 archive
DELETE   /v1/archives/{aid}                          204 (files and record deleted)
GET      /v1/archives/{aid}/download                 200 application/zip (manifest.json and
                                                     one WebM file per track)
=======  ==========================================  =====================================

Cluster mode (docs/cluster.md): the records are shared (Redis), the files stay on the
node that recorded them (``node_id``).  A start goes to the session's owner, where its
clients are; stop and delete go to the node holding the archive; a download from
another node is streamed from the holder (:class:`ArchiveRemote`,
:mod:`e2ee.server.cluster.archives`); list and get answer from the shared records.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from e2ee.archive.manifest import ArchiveRecord
from e2ee.server.archiving import ArchiveService
from e2ee.server.errors import ApiError
from e2ee.server.hub import Hub
from e2ee.server.rest import MAX_LIST_LIMIT, authenticate, json_response, read_json_body

__all__ = ["ARCHIVES", "ArchiveRemote", "add_archive_routes", "parse_archive_options"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ARCHIVES: web.AppKey[ArchiveService] = web.AppKey("e2ee_archives", ArchiveService)

#: Longest archive name.
MAX_NAME_CHARS = 200
_FIELDS = frozenset({"name", "has_audio", "has_video", "output_mode"})


class ArchiveRemote(Protocol):
    """Cluster mode: archives whose session or files are on another node."""

    async def start_on_owner(
        self, session_id: str, options: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The archive (REST view) started by the session's owner, or ``None`` when
        no other live node owns it (then this node starts it, or refuses)."""
        ...

    async def on_holder(self, record: ArchiveRecord, action: str) -> dict[str, Any]:
        """``stop`` or ``delete`` done by the node holding ``record``; its reply."""
        ...

    async def download(self, request: web.Request, record: ArchiveRecord) -> web.StreamResponse:
        """The zip streamed from the node holding ``record``."""
        ...

    async def close(self) -> None: ...


def parse_archive_options(body: dict[str, Any]) -> dict[str, Any]:
    """Validates a start request; unknown fields are refused."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ApiError("bad_request", f"unknown field(s): {', '.join(map(str, unknown))[:200]}")
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise ApiError("bad_request", f"'name' must be a string of at most {MAX_NAME_CHARS}")
    flags = {}
    for field in ("has_audio", "has_video"):
        value = body.get(field, True)
        if not isinstance(value, bool):
            raise ApiError("bad_request", f"{field!r} must be true or false")
        flags[field] = value
    if not (flags["has_audio"] or flags["has_video"]):
        raise ApiError("bad_request", "an archive needs 'has_audio' or 'has_video'")
    if body.get("output_mode", "individual") != "individual":
        raise ApiError(
            "bad_request", "'output_mode' must be 'individual' (one file per stream track)"
        )
    return {"name": name, **flags}


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "50")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 5) or not (
        1 <= int(raw) <= MAX_LIST_LIMIT
    ):
        raise ApiError("bad_request", f"'limit' must be an integer from 1 to {MAX_LIST_LIMIT}")
    return int(raw)


def add_archive_routes(
    app: web.Application, hub: Hub, service: ArchiveService, remote: ArchiveRemote | None = None
) -> None:
    """Registers the archive endpoints (and ``service`` as ``app[ARCHIVES]``).
    ``remote``: cluster mode (see the module docs)."""
    app[ARCHIVES] = service

    async def elsewhere(archive_id: str) -> tuple[ArchiveRemote, ArchiveRecord] | None:
        """Cluster mode: the record of an archive held by another node."""
        if remote is None or archive_id in service.live:
            return None
        record = await service.get(archive_id)
        return (remote, record) if service.held_elsewhere(record) else None

    def auth(handler: _Handler) -> _Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            await authenticate(request, hub)
            return await handler(request)

        return wrapped

    async def start(request: web.Request) -> web.StreamResponse:
        record = await hub.require_session(request.match_info["session_id"])
        options = parse_archive_options(await read_json_body(request, empty_ok=True))
        if remote is not None:
            started = await remote.start_on_owner(record.id, options)
            if started is not None:
                return json_response(started, status=201)
        archive = await service.start(record, **options)
        return json_response(archive.public(), status=201)

    async def stop(request: web.Request) -> web.StreamResponse:
        held = await elsewhere(request.match_info["archive_id"])
        if held is not None:
            return json_response(await held[0].on_holder(held[1], "stop"))
        archive = await service.stop(request.match_info["archive_id"])
        return json_response(archive.public())

    async def list_archives(request: web.Request) -> web.StreamResponse:
        unknown = sorted(set(request.query) - {"limit", "session_id"})
        if unknown:
            raise ApiError("bad_request", f"unknown parameter(s): {', '.join(unknown)[:200]}")
        records = await service.list_archives(request.query.get("session_id"), _limit(request))
        return json_response({"archives": [r.public() for r in records]})

    async def get(request: web.Request) -> web.StreamResponse:
        archive = await service.get(request.match_info["archive_id"])
        return json_response(archive.public())

    async def delete(request: web.Request) -> web.StreamResponse:
        held = await elsewhere(request.match_info["archive_id"])
        if held is not None:
            await held[0].on_holder(held[1], "delete")
            return web.Response(status=204)
        await service.delete(request.match_info["archive_id"])
        return web.Response(status=204)

    async def download(request: web.Request) -> web.StreamResponse:
        archive_id = request.match_info["archive_id"]
        held = await elsewhere(archive_id)
        if held is not None:
            return await held[0].download(request, held[1])
        path = await service.zip_path(archive_id)
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "application/zip",
                "Content-Disposition": f'attachment; filename="archive-{archive_id}.zip"',
                "Cache-Control": "no-store",
            },
        )

    aid = "/v1/archives/{archive_id}"
    app.router.add_post("/v1/sessions/{session_id}/archive", auth(start))
    app.router.add_post(aid + "/stop", auth(stop))
    app.router.add_get("/v1/archives", auth(list_archives), allow_head=False)
    app.router.add_get(aid, auth(get), allow_head=False)
    app.router.add_delete(aid, auth(delete))
    app.router.add_get(aid + "/download", auth(download), allow_head=False)

    async def on_startup(_app: web.Application) -> None:
        await service.recover()
        service.start_sweeper()

    async def on_shutdown(_app: web.Application) -> None:
        await service.close()
        if remote is not None:
            await remote.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
