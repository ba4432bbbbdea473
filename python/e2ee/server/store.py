"""Durable state of the session server: the project credentials and the sessions.

The server talks to storage only through the small :class:`Store` protocol below, so a
shared store (Postgres, Redis, ...) can replace the embedded default later.  The default,
:class:`SQLiteStore`, keeps everything in one SQLite file in the data directory, so a
restart keeps the sessions, and the tokens minted for them stay valid (they are signed with
the persisted API secret).

API secrets have a key id (``kid``, :func:`key_id`) that every token names in its header.
During a rotation (``e2ee credentials rotate``) two secrets are live: the new one signs,
the previous one still verifies until its grace period ends or it is retired.  Revoked
token ids (``jti``) are kept until the token would have expired anyway.

Live state (connections, streams, subscriptions) is not stored: it belongs to the process
that holds the WebSockets and the media router.

The database file holds the API secret: it is created ``0600`` in a ``0700`` directory.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "DB_FILENAME",
    "DEFAULT_DATA_DIR",
    "ApiSecret",
    "Credentials",
    "DuplicateSession",
    "SQLiteStore",
    "SessionRecord",
    "Store",
    "db_path",
    "key_id",
    "new_api_key",
    "new_api_secret",
    "new_session_id",
]

log = logging.getLogger(__name__)

#: Name of the SQLite database inside the data directory.
DB_FILENAME = "e2ee.sqlite3"
SCHEMA_VERSION = 2

MediaMode = Literal["routed", "relayed"]


#: Where the server keeps its credentials and sessions unless told otherwise.
DEFAULT_DATA_DIR = Path("e2ee-data")


def db_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where :class:`SQLiteStore` keeps its database inside ``data_dir``."""
    return Path(data_dir) / DB_FILENAME


def new_session_id() -> str:
    """192 random bits, URL-safe; never starting with ``-``, so that an id on a command
    line is not taken for an option (1 in 64 draws is drawn again)."""
    while True:
        ident = secrets.token_urlsafe(24)
        if not ident.startswith("-"):
            return ident


def new_api_key() -> str:
    """A public project identifier (not a secret; 96 random bits keep it unguessable)."""
    return "key_" + secrets.token_hex(12)


def new_api_secret() -> str:
    """The project's signing secret: 256 bits from the OS CSPRNG, URL-safe base64."""
    return secrets.token_urlsafe(32)


def key_id(secret: str) -> str:
    """The key id (JWT ``kid``) of an API secret: HMAC-SHA256 of a fixed label under the
    secret, 96 bits, URL-safe.  A function of the secret, so whoever holds a secret
    mints tokens naming the right key; it reveals nothing usable about the secret (a
    PRF output under a 256-bit key)."""
    mac = hmac.new(secret.encode(), b"e2ee api secret key id", hashlib.sha256).digest()
    return "k" + base64.urlsafe_b64encode(mac[:12]).decode()


@dataclass(frozen=True, slots=True)
class Credentials:
    """The project's API key (public) and its signing API secret (signs every new
    token; never sent)."""

    api_key: str
    api_secret: str

    @property
    def kid(self) -> str:
        """The key id of :attr:`api_secret`."""
        return key_id(self.api_secret)

    def __repr__(self) -> str:  # never show the secret
        return f"Credentials(api_key={self.api_key!r}, kid={self.kid!r}, api_secret=<hidden>)"


@dataclass(frozen=True, slots=True)
class ApiSecret:
    """One live API secret.  ``expires_at`` (Unix time) is ``None`` for the signing
    secret and the end of the grace period for a rotated-out one."""

    kid: str
    secret: str
    created_at: float
    expires_at: float | None

    def __repr__(self) -> str:  # never show the secret
        return f"ApiSecret(kid={self.kid!r}, expires_at={self.expires_at!r}, secret=<hidden>)"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as created through ``POST /v1/sessions``; immutable once created.

    ``suite`` and ``kdf_iterations`` are set for E2EE sessions only (``None`` otherwise).
    ``created_at`` is a Unix timestamp.
    """

    id: str
    media_mode: MediaMode
    e2ee: bool
    suite: int | None
    kdf_iterations: int | None
    max_participants: int
    created_at: float


class DuplicateSession(Exception):
    """A session with this id exists already (ids are random: practically never)."""


@runtime_checkable
class Store(Protocol):
    """What the server needs from durable storage.  Every method may be called
    concurrently from the event loop; implementations must not block it."""

    async def get_or_create_credentials(self) -> Credentials:
        """The project credentials, created on first call (atomically: two processes
        starting on the same store get the same credentials)."""
        ...

    async def create_session(self, record: SessionRecord) -> None:
        """Stores a new session; :class:`DuplicateSession` if the id exists."""
        ...

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """The session, or ``None`` if there is none with this id."""
        ...

    async def list_sessions(self, limit: int) -> list[SessionRecord]:
        """At most ``limit`` sessions, newest first."""
        ...

    async def delete_session(self, session_id: str) -> bool:
        """Deletes a session; ``False`` if there was none with this id."""
        ...

    async def api_secrets(self) -> list[ApiSecret]:
        """The live API secrets (grace periods not over), the signing one first."""
        ...

    async def revoke_token(self, jti: str, keep_until: float) -> None:
        """Denies the token ``jti`` from now on; the entry may be dropped after
        ``keep_until`` (Unix time; the token has expired by then)."""
        ...

    async def is_revoked(self, jti: str) -> bool:
        """Whether the token ``jti`` was revoked."""
        ...

    async def close(self) -> None:
        """Releases the store; no other method is called afterwards."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS credentials (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    api_key     TEXT NOT NULL,
    api_secret  TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id               TEXT PRIMARY KEY,
    media_mode       TEXT NOT NULL CHECK (media_mode IN ('routed', 'relayed')),
    e2ee             INTEGER NOT NULL CHECK (e2ee IN (0, 1)),
    suite            INTEGER,
    kdf_iterations   INTEGER,
    max_participants INTEGER NOT NULL,
    created_at       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_secrets (
    kid         TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL
);
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti         TEXT PRIMARY KEY,
    keep_until  REAL NOT NULL
);
"""


class SQLiteStore:
    """:class:`Store` in one SQLite file (WAL mode).  Calls run in a worker thread,
    serialized by a lock, so the event loop never waits on disk.

    ``path`` is the database file; see :meth:`in_data_dir` for the usual location.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        _prepare_private_file(self.path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")  # retired secrets are overwritten
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self._db.close()
            raise RuntimeError(
                f"{self.path} has schema version {version}; this e2ee knows {SCHEMA_VERSION}"
            )
        self._db.executescript(_SCHEMA)
        if version < 2:
            self._migrate_secrets()
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._closed = False

    def _migrate_secrets(self) -> None:
        """Version 1 kept one secret in ``credentials``: it becomes the signing secret
        of ``api_secrets``, under its key id (idempotent; safe with two processes)."""
        row = self._db.execute("SELECT api_secret, created_at FROM credentials WHERE id = 1")
        found = row.fetchone()
        if found is not None:
            self._db.execute(
                "INSERT OR IGNORE INTO api_secrets (kid, secret, created_at) VALUES (?, ?, ?)",
                (key_id(found[0]), found[0], found[1]),
            )

    @classmethod
    def in_data_dir(cls, data_dir: str | os.PathLike[str]) -> SQLiteStore:
        """The store at ``data_dir/e2ee.sqlite3``, creating the directory (``0700``)."""
        directory = Path(data_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(db_path(directory))

    # -- synchronous core (also used by the CLI helpers) --------------------------------

    def get_or_create_credentials_sync(self) -> Credentials:
        """The API key and the signing secret (``credentials.api_secret`` mirrors the
        signing secret of ``api_secrets``)."""
        secret, now = new_api_secret(), time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO credentials (id, api_key, api_secret, created_at) "
                    "VALUES (1, ?, ?, ?)",
                    (new_api_key(), secret, now),
                )
                if cur.rowcount:
                    self._db.execute(
                        "INSERT INTO api_secrets (kid, secret, created_at) VALUES (?, ?, ?)",
                        (key_id(secret), secret, now),
                    )
                row = self._db.execute(
                    "SELECT api_key, api_secret FROM credentials WHERE id = 1"
                ).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Credentials(api_key=row[0], api_secret=row[1])

    def api_secrets_sync(self) -> list[ApiSecret]:
        """The live secrets, signing first; drops those whose grace period is over."""
        with self._lock:
            self._db.execute(
                "DELETE FROM api_secrets WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (time.time(),),
            )
            rows = self._db.execute(
                "SELECT kid, secret, created_at, expires_at FROM api_secrets "
                "ORDER BY expires_at IS NOT NULL, created_at DESC"
            ).fetchall()
        return [ApiSecret(*row) for row in rows]

    def rotate_secret_sync(self, grace: float) -> ApiSecret:
        """A new signing secret.  The previous one stays valid for ``grace`` seconds (or
        until :meth:`retire_secrets_sync`); any older one ends now: at most two secrets
        are live."""
        if not grace >= 0:
            raise ValueError("grace must be a number of seconds >= 0")
        self.get_or_create_credentials_sync()
        secret, now = new_api_secret(), time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM api_secrets WHERE expires_at IS NOT NULL")
                self._db.execute(
                    "UPDATE api_secrets SET expires_at = ? WHERE expires_at IS NULL",
                    (now + grace,),
                )
                self._db.execute(
                    "INSERT INTO api_secrets (kid, secret, created_at) VALUES (?, ?, ?)",
                    (key_id(secret), secret, now),
                )
                self._db.execute("UPDATE credentials SET api_secret = ? WHERE id = 1", (secret,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ApiSecret(key_id(secret), secret, now, None)

    def retire_secrets_sync(self, kid: str | None = None) -> list[str]:
        """Ends the grace period of the rotated-out secret(s) now (``kid``: that one
        only); the signing secret cannot be retired.  The key ids retired."""
        query = "SELECT kid FROM api_secrets WHERE expires_at IS NOT NULL"
        args: tuple[str, ...] = ()
        if kid is not None:
            query, args = query + " AND kid = ?", (kid,)
        with self._lock:
            kids = [row[0] for row in self._db.execute(query, args).fetchall()]
            self._db.executemany("DELETE FROM api_secrets WHERE kid = ?", [(k,) for k in kids])
        return kids

    def revoke_token_sync(self, jti: str, keep_until: float) -> None:
        with self._lock:
            self._db.execute("DELETE FROM revoked_tokens WHERE keep_until < ?", (time.time(),))
            self._db.execute(
                "INSERT INTO revoked_tokens (jti, keep_until) VALUES (?, ?) ON CONFLICT(jti) "
                "DO UPDATE SET keep_until = max(keep_until, excluded.keep_until)",
                (jti, keep_until),
            )

    def is_revoked_sync(self, jti: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (jti,))
            return row.fetchone() is not None

    def create_session_sync(self, record: SessionRecord) -> None:
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO sessions (id, media_mode, e2ee, suite, kdf_iterations, "
                    "max_participants, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        record.media_mode,
                        int(record.e2ee),
                        record.suite,
                        record.kdf_iterations,
                        record.max_participants,
                        record.created_at,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                raise DuplicateSession(record.id) from None
            raise

    def get_session_sync(self, session_id: str) -> SessionRecord | None:
        with self._lock:
            row = self._db.execute(_SELECT_SESSION + " WHERE id = ?", (session_id,)).fetchone()
        return None if row is None else _session_record(row)

    def list_sessions_sync(self, limit: int) -> list[SessionRecord]:
        with self._lock:
            rows = self._db.execute(
                _SELECT_SESSION + " ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_session_record(row) for row in rows]

    def delete_session_sync(self, session_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            return cur.rowcount > 0

    def close_sync(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    # -- Store -----------------------------------------------------------------------------

    async def get_or_create_credentials(self) -> Credentials:
        return await asyncio.to_thread(self.get_or_create_credentials_sync)

    async def create_session(self, record: SessionRecord) -> None:
        await asyncio.to_thread(self.create_session_sync, record)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        return await asyncio.to_thread(self.get_session_sync, session_id)

    async def list_sessions(self, limit: int) -> list[SessionRecord]:
        return await asyncio.to_thread(self.list_sessions_sync, limit)

    async def delete_session(self, session_id: str) -> bool:
        return await asyncio.to_thread(self.delete_session_sync, session_id)

    async def api_secrets(self) -> list[ApiSecret]:
        return await asyncio.to_thread(self.api_secrets_sync)

    async def revoke_token(self, jti: str, keep_until: float) -> None:
        await asyncio.to_thread(self.revoke_token_sync, jti, keep_until)

    async def is_revoked(self, jti: str) -> bool:
        return await asyncio.to_thread(self.is_revoked_sync, jti)

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"


_SELECT_SESSION = (
    "SELECT id, media_mode, e2ee, suite, kdf_iterations, max_participants, created_at FROM sessions"
)


def _session_record(row: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord(
        id=row[0],
        media_mode=row[1],
        e2ee=bool(row[2]),
        suite=row[3],
        kdf_iterations=row[4],
        max_participants=row[5],
        created_at=row[6],
    )


def _prepare_private_file(path: Path) -> None:
    """Creates ``path`` readable by its owner only, or tightens an existing file that
    others can read (it holds the API secret)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077 and os.name == "posix":
            log.warning("%s was accessible to others (mode %o); setting 0600", path, mode)
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
