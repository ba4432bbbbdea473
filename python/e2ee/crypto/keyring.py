"""The session's encryption secret, turned into keys, with a grace period on change.

A :class:`KeyRing` belongs to one client in one session.  Every track's
:class:`~e2ee.crypto.frames.FrameEncryptor` and
:class:`~e2ee.crypto.frames.FrameDecryptor` reads it;
changing the secret re-keys them all at their next frame (docs/protocol.md, "Secret to
keys").  State is published as immutable snapshots, so the threads aiortc encodes and
decodes on can read it without locks.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from e2ee import _core
from e2ee.crypto.sframe import CipherSuite
from e2ee.wire import params

__all__ = ["KeyRing"]

log = logging.getLogger(__name__)

DEFAULT_SUITE = CipherSuite(params.DEFAULT_SUITE)
DEFAULT_ITERATIONS = params.DEFAULT_ITERATIONS
MAX_ITERATIONS = params.MAX_ITERATIONS
#: Previous secrets kept for their grace period besides the current one.
MAX_PREVIOUS = 2
#: Longest grace period, in seconds: a replaced secret is never accepted for days.
MAX_GRACE_PERIOD = 86_400.0


@dataclass(frozen=True, slots=True)
class HeldSecret:
    """A derived secret key and its 16-bit id; ``retired_at`` once it was replaced."""

    key: bytes
    id: int
    retired_at: float | None = None

    def __repr__(self) -> str:  # never show the key
        return f"HeldSecret(id={self.id:#06x}, retired_at={self.retired_at})"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the ring holds at one ``version``."""

    version: int
    current: HeldSecret | None
    previous: tuple[HeldSecret, ...]


class KeyRing:
    """The encryption secret of one client in one E2EE session.

    ``suite`` and ``kdf_iterations`` are session parameters (the server hands them out
    with the session).  ``grace_period`` is how long, in seconds, a replaced secret is
    still accepted from others, so that a coordinated change is seamless; 0 is strict.
    """

    def __init__(
        self,
        session_id: str,
        *,
        suite: int = DEFAULT_SUITE,
        kdf_iterations: int = DEFAULT_ITERATIONS,
        grace_period: float = 10.0,
    ) -> None:
        if not isinstance(session_id, str) or not 0 < len(session_id.encode()) <= 1024:
            raise ValueError("session_id must be a str of 1 to 1024 bytes (UTF-8)")
        if not 1 <= kdf_iterations <= MAX_ITERATIONS:
            raise ValueError(f"kdf_iterations must be from 1 to {MAX_ITERATIONS}")
        if not 0 <= grace_period <= MAX_GRACE_PERIOD:  # also refuses NaN and infinity
            raise ValueError(f"grace_period must be from 0 to {MAX_GRACE_PERIOD} seconds")
        self.session_id = session_id
        self.suite = CipherSuite(suite)
        self.kdf_iterations = kdf_iterations
        self.grace_period = float(grace_period)
        self._lock = threading.Lock()
        self._snapshot = Snapshot(0, None, ())
        self._listeners: list[Callable[[KeyRing], None]] = []

    # -- reading -------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def version(self) -> int:
        """Increases on every change of the held secrets."""
        return self._snapshot.version

    @property
    def has_secret(self) -> bool:
        return self._snapshot.current is not None

    @property
    def secret_id(self) -> int | None:
        """The 16-bit id of the current secret (it names the secret, never reveals it)."""
        current = self._snapshot.current
        return None if current is None else current.id

    def held_secrets(self) -> list[tuple[bytes, float | None]]:
        """``(secret_key, seconds_left)`` of every secret still accepted: the current one
        (``None``: until replaced) and previous ones within their grace period."""
        snap = self._snapshot
        now = time.monotonic()
        held: list[tuple[bytes, float | None]] = []
        if snap.current is not None:
            held.append((snap.current.key, None))
        for prev in snap.previous:
            left = self.grace_period - (now - (prev.retired_at or now))
            if left > 0:
                held.append((prev.key, left))
        return held

    # -- changing ------------------------------------------------------------------------

    def set_secret(self, secret: str) -> None:
        """Validates ``secret`` (a str of 8 to 256 characters after NFC normalization)
        and makes it current.  Blocks for the key derivation (PBKDF2, slow on purpose);
        on an event loop use :meth:`set_secret_async`.  An invalid secret raises
        :class:`~e2ee.errors.InvalidEncryptionSecret` and the old secret stays."""
        self._install(self._derive(secret))

    async def set_secret_async(self, secret: str) -> None:
        """:meth:`set_secret` with the key derivation off the event loop."""
        _core.normalize_secret(secret)  # refuse a bad secret before any thread hop
        key = await asyncio.get_running_loop().run_in_executor(None, self._derive, secret)
        self._install(key)

    def add_listener(self, callback: Callable[[KeyRing], None]) -> None:
        """``callback(ring)`` runs after every change, on the thread that made it."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[KeyRing], None]) -> None:
        self._listeners.remove(callback)

    def _derive(self, secret: str) -> bytes:
        return _core.derive_secret_key(secret, self.session_id, iterations=self.kdf_iterations)

    def _install(self, key: bytes) -> None:
        with self._lock:
            snap = self._snapshot
            if snap.current is not None and hmac.compare_digest(snap.current.key, key):
                return
            now = time.monotonic()
            previous: list[HeldSecret] = []
            if self.grace_period > 0:
                if snap.current is not None:
                    previous.append(HeldSecret(snap.current.key, snap.current.id, now))
                previous += [
                    p
                    for p in snap.previous
                    if now - (p.retired_at or now) < self.grace_period
                    and not hmac.compare_digest(p.key, key)
                ]
            current = HeldSecret(key, _core.secret_id(key))
            self._snapshot = Snapshot(snap.version + 1, current, tuple(previous[:MAX_PREVIOUS]))
        log.info("encryption secret set (secret id %#06x)", current.id)
        for callback in list(self._listeners):
            try:
                callback(self)
            except Exception:
                log.exception("KeyRing listener %r failed", callback)

    def __repr__(self) -> str:
        sid = self.secret_id
        shown = "none" if sid is None else f"{sid:#06x}"
        return f"KeyRing(session={self.session_id!r}, suite={self.suite.name}, secret={shown})"
