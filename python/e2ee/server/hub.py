"""All live rooms of one server process, with the store and the project credentials."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from e2ee.server.connection import Connection
from e2ee.server.errors import CLOSE_GOING_AWAY, ApiError
from e2ee.server.limits import ServerLimits
from e2ee.server.media import RouterFactory
from e2ee.server.memory import MemoryTrimmer
from e2ee.server.rooms import Room
from e2ee.server.store import ApiSecret, SessionRecord, Store, key_id
from e2ee.server.tokens import (
    LEEWAY,
    MAX_TTL,
    Keyring,
    ProjectClaims,
    TokenClaims,
    TokenRevoked,
    unverified_kid,
    verify_project_auth,
    verify_token,
)

__all__ = ["KEYRING_CACHE_SECONDS", "MAX_CACHED_SESSIONS", "ClusterHooks", "Hub"]

#: The live API secrets are re-read from the store when older than this, and at once for
#: a token naming a key id not known yet: a rotation or retirement done by
#: ``e2ee credentials`` in another process is seen within this delay.
KEYRING_CACHE_SECONDS = 1.0
#: Session records kept in memory beyond those of live rooms (the rest are re-read from
#: the store when needed): sessions come and go, the cache must not only grow.
MAX_CACHED_SESSIONS = 1024
#: Deleted session ids remembered against a racing store read (see ``Hub.session``).
MAX_REMEMBERED_DELETIONS = 4096


class ClusterHooks(Protocol):
    """What the signaling and REST layers ask of the cluster in cluster mode
    (:class:`e2ee.server.cluster.node.ClusterNode`, docs/cluster.md); ``Hub.cluster`` is
    ``None`` on a single node."""

    node_id: str

    async def place(self, session_id: str) -> tuple[str, str] | None:
        """``None`` if this node hosts the session now, else the owner's ``(node_id,
        public_url)``; raises when the shared state is out of reach."""
        ...

    def room_ended(self, session_id: str) -> None:
        """The session's last connection on this node left: give up owning it."""
        ...

    async def forward(self, session_id: str, action: str, body: dict[str, Any]) -> Any:
        """Runs ``action`` on the node that owns the session: its reply, or ``None`` when
        no other live node owns it (then nobody is connected anywhere)."""
        ...

    async def deleted(self, session_id: str) -> None:
        """The session was deleted from the shared store: every node forgets it."""
        ...

    def unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the shared state is out of reach."""
        ...


class Hub:
    """All rooms of this process, the store, and the project credentials."""

    #: The tunable budgets (``create_app(limits=...)`` sets them).
    limits: ServerLimits = ServerLimits()
    #: Cluster mode only (``create_app(cluster=...)``): placement and forwarding.
    cluster: ClusterHooks | None = None

    def __init__(
        self, store: Store, api_key: str, api_secret: str, router_factory: RouterFactory
    ) -> None:
        self.store = store
        self.api_key = api_key
        self.router_factory = router_factory
        self.rooms: dict[str, Room] = {}
        self._sessions: dict[str, SessionRecord] = {}
        # Sessions deleted lately, oldest first: a store read that raced the deletion
        # must not revive one (a read takes milliseconds, so the recent ones suffice).
        self._deleted: dict[str, None] = {}
        self._secrets = [ApiSecret(key_id(api_secret), api_secret, time.time(), None)]
        self._secrets_read = float("-inf")  # monotonic time of the last read
        # Revoked by this process (jti -> keep until), checked without awaiting the
        # store: a connection racing its own revocation cannot slip in between.
        self._revoked: dict[str, float] = {}
        #: Hands memory freed by closed peer connections back to the OS (e2ee.server.memory).
        self.trimmer = MemoryTrimmer(idle=self._no_media)

    @property
    def api_secret(self) -> str:
        """The signing secret (as last read from the store)."""
        return self._secrets[0].secret

    def __repr__(self) -> str:  # never show the secret
        return f"Hub(api_key={self.api_key!r}, rooms={len(self.rooms)})"

    # -- tokens ---------------------------------------------------------------------------

    async def keyring(self, kid: str | None = None) -> Keyring:
        """The live secrets by key id; re-read when stale or when ``kid`` is unknown."""
        fresh = time.monotonic() - self._secrets_read < KEYRING_CACHE_SECONDS
        if not fresh or (kid is not None and all(s.kid != kid for s in self._secrets)):
            secrets = await self.store.api_secrets()
            if secrets:
                self._secrets = secrets
            self._secrets_read = time.monotonic()
        now = time.time()
        return {
            s.kid: s.secret for s in self._secrets if s.expires_at is None or s.expires_at > now
        }

    async def verify_session_token(self, token: str, session_id: str) -> TokenClaims:
        """A session token's claims: signed by a live secret, for ``session_id``, not
        revoked (:class:`e2ee.server.tokens.TokenError` otherwise)."""
        keys = await self.keyring(unverified_kid(token))
        claims = verify_token(self.api_key, keys, token, session_id=session_id)
        if self.revoked_here(claims.jti) or await self.store.is_revoked(claims.jti):
            raise TokenRevoked("this token was revoked: ask for a new one")
        return claims

    def revoked_here(self, jti: str) -> bool:
        """Whether this process revoked ``jti`` (no store access: never awaits)."""
        return jti in self._revoked

    async def verify_project_auth(self, token: str) -> ProjectClaims:
        """A project auth token's claims (REST), signed by a live secret."""
        keys = await self.keyring(unverified_kid(token))
        return verify_project_auth(self.api_key, keys, token)

    async def revoke(self, jti: str, expires_at: float | None = None) -> None:
        """Puts the token ``jti`` on the deny-list until it would have expired anyway
        (``expires_at`` unknown: the longest a token of ours can live)."""
        if not jti:
            return
        now = time.time()
        if expires_at is None:
            expires_at = now + MAX_TTL + LEEWAY  # iat may lie LEEWAY ahead
        keep_until = expires_at + LEEWAY  # verification accepts exp up to LEEWAY late
        self._revoked = {j: t for j, t in self._revoked.items() if t > now}
        self._revoked[jti] = keep_until
        await self.store.revoke_token(jti, keep_until)

    # -- sessions -------------------------------------------------------------------------

    async def session(self, session_id: str) -> SessionRecord | None:
        """The session record (cached: sessions are immutable)."""
        record = self._sessions.get(session_id)
        if record is None:
            if not session_id or len(session_id) > 128:
                return None
            record = await self.store.get_session(session_id)
            # Deleted while we were reading: a new connection must not revive it.
            if record is not None and session_id not in self._deleted:
                self.remember(record)
            else:
                record = None
        return record

    async def require_session(self, session_id: str) -> SessionRecord:
        record = await self.session(session_id)
        if record is None:
            raise ApiError("session_not_found", "no such session", 404)
        return record

    def remember(self, record: SessionRecord) -> None:
        if len(self._sessions) >= MAX_CACHED_SESSIONS:
            # Forget the records of sessions without a live room (re-read on demand).
            self._sessions = {k: r for k, r in self._sessions.items() if k in self.rooms}
        self._sessions[record.id] = record

    @property
    def cached_sessions(self) -> int:
        """Session records held in memory (bounded, see :data:`MAX_CACHED_SESSIONS`)."""
        return len(self._sessions)

    def forget(self, session_id: str, *, deleted: bool = False) -> None:
        """Drops a cached session record (cluster mode: another node may have deleted
        it); ``deleted``: it is gone for good, no connection may revive it."""
        self._sessions.pop(session_id, None)
        if deleted:
            self._note_deleted(session_id)

    @property
    def remembered_deletions(self) -> int:
        """Deleted session ids held (bounded, see :data:`MAX_REMEMBERED_DELETIONS`)."""
        return len(self._deleted)

    def _note_deleted(self, session_id: str) -> None:
        self._deleted[session_id] = None
        while len(self._deleted) > MAX_REMEMBERED_DELETIONS:
            del self._deleted[next(iter(self._deleted))]

    async def delete_session(self, session_id: str) -> bool:
        """Deletes a session from the store and disconnects everyone in it (reason
        ``session_deleted``); ``False`` if there was no such session."""
        if not await self.store.delete_session(session_id):
            return False
        self._note_deleted(session_id)
        self._sessions.pop(session_id, None)
        room = self.rooms.get(session_id)
        if room is not None:
            await room.close_all("session_deleted")
        if self.cluster is not None:  # its owner may be another node
            await self.cluster.deleted(session_id)
        return True

    def room(self, record: SessionRecord) -> Room:
        room = self.rooms.get(record.id)
        if room is None:
            room = self.rooms[record.id] = Room(self, record)
        return room

    def _no_media(self) -> bool:
        """No room has a router: a pause of the loop would stall no one's media."""
        return all(room.router_if_any is None for room in self.rooms.values())

    async def retire(self, room: Room) -> None:
        """Forgets an empty room and closes its router."""
        if self.rooms.get(room.record.id) is room and not room.connections:
            del self.rooms[room.record.id]
            if self.cluster is not None:
                self.cluster.room_ended(room.record.id)
        had_media = room.router_if_any is not None
        await room.close_router()
        if had_media:
            self.trimmer.request(emptied=True)

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
        self.trimmer.close()
