"""Archives across the nodes of a cluster: :class:`ClusterArchives`, the
:class:`~e2ee.server.archives.ArchiveRemote` of a node.

The records are in Redis (:class:`~e2ee.server.cluster.archive_catalog.RedisArchiveCatalog`),
so any node lists and shows them; the files stay in the data directory of the node that
recorded them, the record's ``node_id``.  So:

* a start goes to the session's owner over the bus (its router has the media and its
  clients get ``archive_started``), and the archive is held there;
* stop and delete go to the holder over the bus (it runs the recording, it has the
  files); the holder's errors (404, 409) come back as the same error;
* a download from another node is streamed from the holder: an HTTP ``GET`` of the
  holder's public URL with a project auth token this node mints (the project's secrets
  are shared), chunk by chunk, never the whole file in memory.  A holder that is not
  live, or does not answer, is ``503 archive_holder_unavailable``.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

import aiohttp
from aiohttp import web

from e2ee.archive.manifest import ArchiveRecord
from e2ee.server.archives import parse_archive_options
from e2ee.server.archiving import ArchiveService
from e2ee.server.cluster.bus import Bus
from e2ee.server.cluster.errors import ClusterUnavailable
from e2ee.server.cluster.placement import Placement
from e2ee.server.cluster.registry import NodeRegistry
from e2ee.server.errors import ApiError
from e2ee.server.hub import Hub
from e2ee.server.tokens import project_auth_token

__all__ = ["ARCHIVE_KIND", "ClusterArchives"]

log = logging.getLogger("e2ee.server.cluster")

#: The bus message kind of archive actions (``start`` on the owner, ``stop`` and
#: ``delete`` on the holder).
ARCHIVE_KIND = "archive"
#: Seconds an archive action may take on another node before the caller gets 503.
FORWARD_TIMEOUT = 5.0
#: Bytes read from the holder and written to the client at a time.
CHUNK = 64 * 1024
#: Seconds to connect to the holder, and between two reads of its answer.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 30.0
#: Lifetime of the token minted for one download from the holder.
TOKEN_TTL = 60
#: Headers of the holder's answer passed on to the client.
_PASSED = ("Content-Type", "Content-Length", "Content-Disposition", "Cache-Control")


def _unreachable(record: ArchiveRecord, why: str) -> ApiError:
    return ApiError(
        "archive_holder_unavailable",
        f"the archive's files are on node {record.node_id}, which {why}: retry when that "
        "node is back",
        503,
    )


class ClusterArchives:
    """This node's side of archives in a cluster (see the module docs), over the node's
    bus, placement and registry (:class:`~e2ee.server.cluster.node.ClusterNode` makes
    it).  Registers the bus handler for :data:`ARCHIVE_KIND`."""

    def __init__(
        self,
        bus: Bus,
        placement: Placement,
        registry: NodeRegistry,
        hub: Hub,
        service: ArchiveService,
    ) -> None:
        self.bus = bus
        self.placement = placement
        self.registry = registry
        self.node_id = bus.node_id
        self.hub = hub
        self.service = service
        self._http: aiohttp.ClientSession | None = None
        bus.handle(ARCHIVE_KIND, self._serve)

    # -- the requesting side (ArchiveRemote) ------------------------------------------

    async def start_on_owner(
        self, session_id: str, options: dict[str, Any]
    ) -> dict[str, Any] | None:
        owner = await self.placement.owner(session_id)
        if owner is None or owner.node_id == self.node_id:
            return None
        body = {"action": "start", "session_id": session_id, "options": options}
        return await self.bus.request(owner.node_id, ARCHIVE_KIND, body, timeout=FORWARD_TIMEOUT)

    async def on_holder(self, record: ArchiveRecord, action: str) -> dict[str, Any]:
        holder = str(record.node_id)
        body = {"action": action, "archive_id": record.id}
        try:
            return await self.bus.request(holder, ARCHIVE_KIND, body, timeout=FORWARD_TIMEOUT)
        except ClusterUnavailable:
            # Redis answers this (else ClusterUnavailable again): the holder is the trouble.
            live = await self.registry.node(holder)
            raise _unreachable(
                record, "is not live" if live is None else "does not answer"
            ) from None

    async def download(self, request: web.Request, record: ArchiveRecord) -> web.StreamResponse:
        holder = await self.registry.node(str(record.node_id))
        if holder is None:
            raise _unreachable(record, "is not live")
        url = (
            holder.public_url.rstrip("/")
            + "/v1/archives/"
            + urllib.parse.quote(record.id, safe="")
            + "/download"
        )
        token = project_auth_token(self.hub.api_key, self.hub.api_secret, TOKEN_TTL)
        response: web.StreamResponse | None = None
        try:
            async with self._client().get(
                url, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False
            ) as upstream:
                if upstream.status != 200:
                    raise await _error_of(upstream, record)
                headers = {h: upstream.headers[h] for h in _PASSED if h in upstream.headers}
                response = web.StreamResponse(status=200, headers=headers)
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if response is None:
                log.info(
                    "download of archive %s from %s failed: %r", record.id, holder.node_id, exc
                )
                raise _unreachable(record, "does not answer") from None
            # Headers are sent: the client sees a short body (Content-Length says so).
            log.warning(
                "download of archive %s from %s broke off: %r", record.id, holder.node_id, exc
            )
            if request.transport is not None:
                request.transport.close()
            return response

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
            )
            self._http = aiohttp.ClientSession(timeout=timeout)
        return self._http

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    # -- the owner's and the holder's side of the bus ---------------------------------

    async def _serve(self, body: dict[str, Any]) -> dict[str, Any]:
        action = body.get("action")
        if action == "start":
            session = await self.hub.require_session(str(body.get("session_id", "")))
            raw = body.get("options")
            options = parse_archive_options(raw if isinstance(raw, dict) else {})
            return (await self.service.start(session, **options)).public()
        archive_id = str(body.get("archive_id", ""))
        if action == "stop":
            return (await self.service.stop(archive_id)).public()
        if action == "delete":
            await self.service.delete(archive_id)
            return {}
        raise ApiError("bad_request", f"unknown archive action {str(action)[:40]!r}")


async def _error_of(upstream: aiohttp.ClientResponse, record: ArchiveRecord) -> ApiError:
    """The holder's error answer as the same error here."""
    try:
        body = await upstream.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return ApiError(str(body["code"]), str(body.get("message", "")), upstream.status)
    return _unreachable(record, f"answered HTTP {upstream.status}")
