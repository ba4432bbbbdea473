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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from e2ee.server.archiving import ArchiveService
from e2ee.server.errors import ApiError
from e2ee.server.hub import Hub
from e2ee.server.rest import MAX_LIST_LIMIT, authenticate, json_response, read_json_body

__all__ = ["ARCHIVES", "add_archive_routes", "parse_archive_options"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ARCHIVES: web.AppKey[ArchiveService] = web.AppKey("e2ee_archives", ArchiveService)

#: Longest archive name.
MAX_NAME_CHARS = 200
_FIELDS = frozenset({"name", "has_audio", "has_video", "output_mode"})


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


def add_archive_routes(app: web.Application, hub: Hub, service: ArchiveService) -> None:
    """Registers the archive endpoints (and ``service`` as ``app[ARCHIVES]``)."""
    app[ARCHIVES] = service

    def auth(handler: _Handler) -> _Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            await authenticate(request, hub)
            return await handler(request)

        return wrapped

    async def start(request: web.Request) -> web.StreamResponse:
        record = await hub.require_session(request.match_info["session_id"])
        options = parse_archive_options(await read_json_body(request, empty_ok=True))
        archive = await service.start(record, **options)
        return json_response(archive.public(), status=201)

    async def stop(request: web.Request) -> web.StreamResponse:
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
        await service.delete(request.match_info["archive_id"])
        return web.Response(status=204)

    async def download(request: web.Request) -> web.StreamResponse:
        archive_id = request.match_info["archive_id"]
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
        service.start_sweeper()

    async def on_shutdown(_app: web.Application) -> None:
        await service.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
