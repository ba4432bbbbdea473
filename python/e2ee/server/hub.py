"""All live rooms of one server process, with the store and the project credentials."""

from __future__ import annotations

import asyncio

from e2ee.server.connection import Connection
from e2ee.server.errors import CLOSE_GOING_AWAY, ApiError
from e2ee.server.media import RouterFactory
from e2ee.server.rooms import Room
from e2ee.server.store import SessionRecord, Store

__all__ = ["Hub"]


class Hub:
    """All rooms of this process, the store, and the project credentials."""

    def __init__(
        self, store: Store, api_key: str, api_secret: str, router_factory: RouterFactory
    ) -> None:
        self.store = store
        self.api_key = api_key
        self._api_secret = api_secret
        self.router_factory = router_factory
        self.rooms: dict[str, Room] = {}
        self._sessions: dict[str, SessionRecord] = {}

    @property
    def api_secret(self) -> str:
        return self._api_secret

    def __repr__(self) -> str:  # never show the secret
        return f"Hub(api_key={self.api_key!r}, rooms={len(self.rooms)})"

    async def session(self, session_id: str) -> SessionRecord | None:
        """The session record (cached: sessions are immutable)."""
        record = self._sessions.get(session_id)
        if record is None:
            if not session_id or len(session_id) > 128:
                return None
            record = await self.store.get_session(session_id)
            if record is not None:
                self._sessions[session_id] = record
        return record

    async def require_session(self, session_id: str) -> SessionRecord:
        record = await self.session(session_id)
        if record is None:
            raise ApiError("session_not_found", "no such session", 404)
        return record

    def remember(self, record: SessionRecord) -> None:
        self._sessions[record.id] = record

    def room(self, record: SessionRecord) -> Room:
        room = self.rooms.get(record.id)
        if room is None:
            room = self.rooms[record.id] = Room(self, record)
        return room

    async def retire(self, room: Room) -> None:
        """Forgets an empty room and closes its router."""
        if self.rooms.get(room.record.id) is room and not room.connections:
            del self.rooms[room.record.id]
        await room.close_router()

    async def shutdown(self) -> None:
        """Tells every client the server is going away, then closes the routers."""
        conns: list[Connection] = []
        for room in list(self.rooms.values()):
            for conn in list(room.connections.values()):
                conns.append(conn)
                conn.send({"type": "disconnected", "reason": "server_shutdown"})
                conn.close(CLOSE_GOING_AWAY, "server shutting down")
        await asyncio.gather(*(c.wait_closed(2.0) for c in conns), return_exceptions=True)
        for room in list(self.rooms.values()):
            await room.close_router()
        self.rooms.clear()
