"""Per-track frame encryption and decryption with a :class:`~e2ee.crypto.keyring.KeyRing`.

One :class:`FrameEncryptor` per outgoing track, one :class:`FrameDecryptor` per incoming
track.  The per-frame work (codec prefix, SFrame header, encryption, replay check) is one
call into Rust; Python only follows the ring's changes and turns state changes into
events.  Nothing undecryptable is ever returned, and nothing is ever sent in clear.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from typing_extensions import Buffer

from e2ee import _core
from e2ee.crypto.keyring import KeyRing
from e2ee.errors import (
    AuthenticationFailed,
    CodecError,
    DecryptionInternalError,
    EncryptionInternalError,
    EncryptionSecretMismatch,
    EncryptionSecretMissing,
    ReplayedFrame,
    SFrameError,
)

__all__ = ["DecryptorEvent", "FrameDecryptor", "FrameEncryptor"]

log = logging.getLogger(__name__)

MISMATCH = "encryption_secret_mismatch"
MATCH = "encryption_secret_match"
DECRYPTION_ERROR = "decryption_error"


class FrameEncryptor:
    """Encrypts the encoded frames of one outgoing VP8 or Opus track.

    Each secret gets a fresh random KID for this track, so (key, KID, CTR) never
    repeats across tracks or secrets.
    """

    __slots__ = ("_ring", "_tx", "_version", "codec")

    def __init__(self, ring: KeyRing, codec: str) -> None:
        self._ring = ring
        self._tx = _core.FrameSender(ring.suite, codec)
        self._version = -1
        self.codec: str = self._tx.codec

    @property
    def kid(self) -> int | None:
        """The KID of the current secret for this track (``None`` before a secret)."""
        if self._version != self._ring.version:
            self._rekey()
        return self._tx.kid

    def encrypt(self, frame: Buffer) -> bytes:
        """The wire form of one encoded frame: codec header in clear, the rest sealed.

        Raises :class:`EncryptionSecretMissing` without a secret, and
        :class:`EncryptionInternalError` for a frame that cannot be encrypted (shorter
        than its codec header); such a frame must be dropped, never sent.
        """
        if self._version != self._ring.version:
            self._rekey()
        try:
            return self._tx.encrypt(frame)
        except (CodecError, SFrameError) as exc:
            raise EncryptionInternalError(str(exc)) from exc

    def _rekey(self) -> None:
        snap = self._ring.snapshot
        if snap.current is None:
            self._tx.clear_key()
        else:
            self._tx.set_key(snap.current.key, _core.new_kid(snap.current.id))
        self._version = snap.version

    def __repr__(self) -> str:
        return f"FrameEncryptor(codec={self.codec!r}, kid={self._tx.kid})"


@dataclass(frozen=True, slots=True)
class DecryptorEvent:
    """A change of a :class:`FrameDecryptor`'s state.

    ``type`` is ``"encryption_secret_mismatch"`` (frames arrive under a secret this
    client does not hold; sent on entering that state), ``"encryption_secret_match"``
    (the first good frame after a mismatch) or ``"decryption_error"`` (frames under a
    held secret fail authentication or parsing, or are replayed; at most once per
    ``error_interval``, with ``count`` failures since the last such event).
    """

    type: str
    kid: int | None = None
    message: str = ""
    count: int = 1
    stats: dict[str, int] = field(default_factory=dict)


class FrameDecryptor:
    """Decrypts the frames of one incoming VP8 or Opus track.

    Every frame either comes back decrypted or raises, and is counted in :attr:`stats`:
    :class:`EncryptionSecretMismatch` (a secret this client does not hold),
    :class:`EncryptionSecretMissing` (no secret set), or
    :class:`DecryptionInternalError` (tampered, corrupt or replayed; ``reason`` says
    which).  A replayed frame is never returned twice.
    """

    def __init__(
        self,
        ring: KeyRing,
        codec: str,
        *,
        replay_window: int = 128,
        error_interval: float = 1.0,
    ) -> None:
        self._ring = ring
        self._rx = _core.FrameReceiver(ring.suite, codec, replay_window=replay_window)
        self._version = -1
        self._listeners: list[Callable[[DecryptorEvent], None]] = []
        self._error_interval = error_interval
        self._last_error_event = -float("inf")
        self._errors_unreported = 0
        self.codec: str = self._rx.codec
        #: ``"idle"`` (no frame yet), ``"ok"``, ``"mismatch"`` or ``"missing"``.
        self.state = "idle"

    def add_listener(self, callback: Callable[[DecryptorEvent], None]) -> None:
        """``callback(event)`` runs on the thread that called :meth:`decrypt`."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[DecryptorEvent], None]) -> None:
        self._listeners.remove(callback)

    @property
    def stats(self) -> dict[str, int]:
        ok, mismatched, failed, replayed, missing = self._rx.stats()
        return {
            "frames_ok": ok,
            "frames_mismatched": mismatched,
            "frames_failed": failed,
            "frames_replayed": replayed,
            "frames_missing": missing,
        }

    def decrypt(self, wire: Buffer) -> bytes:
        """The encoded frame inside ``wire``, authenticated and decrypted."""
        if self._version != self._ring.version:
            self._sync()
        try:
            frame = self._rx.decrypt(wire)
        except EncryptionSecretMismatch as exc:
            if self.state != "mismatch":
                self.state = "mismatch"
                self._emit(DecryptorEvent(MISMATCH, exc.kid, str(exc), stats=self.stats))
            raise
        except EncryptionSecretMissing:
            self.state = "missing"
            raise
        except (SFrameError, CodecError) as exc:
            if isinstance(exc, ReplayedFrame):
                reason = "replayed"
            elif isinstance(exc, AuthenticationFailed):
                reason = "authentication"
            else:
                reason = "malformed"
            self._error(str(exc))
            raise DecryptionInternalError(str(exc), reason) from exc
        if self.state != "ok":
            if self.state == "mismatch":
                self._emit(DecryptorEvent(MATCH, stats=self.stats))
            self.state = "ok"
        return frame

    def _sync(self) -> None:
        snap = self._ring.snapshot
        self._rx.set_secrets(self._ring.held_secrets())
        self._version = snap.version

    def _error(self, message: str) -> None:
        self._errors_unreported += 1
        now = time.monotonic()
        if now - self._last_error_event >= self._error_interval:
            count, self._errors_unreported = self._errors_unreported, 0
            self._last_error_event = now
            self._emit(DecryptorEvent(DECRYPTION_ERROR, None, message, count, self.stats))

    def _emit(self, event: DecryptorEvent) -> None:
        log.debug("decryptor %s: %s", self.codec, event.type)
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:
                log.exception("FrameDecryptor listener %r failed", callback)

    def __repr__(self) -> str:
        return f"FrameDecryptor(codec={self.codec!r}, state={self.state!r})"
