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
from e2ee.crypto.keyring import RECORDED_TAGS, HeldSecret, KeyRing, SendRecord
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
#: Mismatched frames in a row before ``encryption_secret_mismatch`` is sent.
MISMATCH_THRESHOLD = 3


class FrameEncryptor:
    """Encrypts the encoded frames of one outgoing VP8 or Opus track.

    Each secret gets a fresh random KID for this track, so (key, KID, CTR) never
    repeats across tracks or secrets.  The encryptor follows its ring only inside
    :meth:`encrypt` (or :meth:`prepare`), on the thread that encrypts: it moves to a new
    KID when the current secret changed, or when the ring found its KID in use by
    another sender (docs/protocol.md, "KID collisions").
    """

    __slots__ = (
        "_collisions",
        "_kid",
        "_nt",
        "_record",
        "_ring",
        "_secret",
        "_tx",
        "_version",
        "codec",
    )

    def __init__(self, ring: KeyRing, codec: str) -> None:
        self._ring = ring
        self._tx = _core.FrameSender(ring.suite, codec)
        self._version = -1
        self._collisions = -1
        self._secret: HeldSecret | None = None
        self._kid: int | None = None
        self._record: SendRecord | None = None
        self._nt = ring.suite.nt
        self.codec: str = self._tx.codec
        self._follow()  # a KID is ready before the first frame (no thread shares us yet)

    @property
    def kid(self) -> int | None:
        """The KID of the last frame, or the one prepared for the next (``None`` without
        a secret).  A plain read, safe from any thread: it never re-keys, so after a
        change of the ring it names the old KID until the next :meth:`encrypt`."""
        return self._kid

    def prepare(self) -> int | None:
        """Follows the ring now, as :meth:`encrypt` would, and returns the KID the next
        frame goes under.  Call it from the thread that encrypts."""
        self._follow()
        return self._kid

    def encrypt(self, frame: Buffer) -> bytes:
        """The wire form of one encoded frame: codec header in clear, the rest sealed.

        Raises :class:`EncryptionSecretMissing` without a secret, and
        :class:`EncryptionInternalError` for a frame that cannot be encrypted (shorter
        than its codec header); such a frame must be dropped, never sent.
        """
        ring = self._ring
        if self._version != ring.version or self._collisions != ring.collision_count:
            self._follow()
        try:
            wire = self._tx.encrypt(frame)
        except (CodecError, SFrameError) as exc:
            raise EncryptionInternalError(str(exc)) from exc
        record = self._record
        if record is not None:  # before the wire leaves, so that a copy is known as ours
            if record.sent < RECORDED_TAGS:
                record.tags.append(wire[-self._nt :])
            record.sent += 1
        return wire

    def close(self) -> None:
        """The track is gone: its KID stops counting as one of the ring's own."""
        self._ring.release_kid(self._kid)

    def _follow(self) -> None:
        ring = self._ring
        collisions = ring.collision_count  # read first: a later collision is seen next frame
        snap = ring.snapshot
        current = snap.current
        if current is None:
            self._tx.clear_key()
            self._secret = self._kid = self._record = None
        elif current is not self._secret or self._kid in ring.collided_kids:
            record = ring.claim_kid(current, replacing=self._kid)
            self._tx.set_key(current.key, record.kid)
            self._secret, self._record, self._kid = current, record, record.kid
        self._version, self._collisions = snap.version, collisions

    def __repr__(self) -> str:
        return f"FrameEncryptor(codec={self.codec!r}, kid={self._kid})"


@dataclass(frozen=True, slots=True)
class DecryptorEvent:
    """A change of a :class:`FrameDecryptor`'s state.

    ``type`` is ``"encryption_secret_mismatch"`` (frames arrive under a secret this
    client does not hold; sent on entering that state, after ``mismatch_threshold``
    such frames in a row), ``"encryption_secret_match"``
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

    The mismatch is decided from the public ``secret_id`` before any authentication, so
    anyone on the path can inject such a frame.  The ``encryption_secret_mismatch``
    event therefore waits for ``mismatch_threshold`` mismatched frames in a row (no good
    frame in between); every one of them is still dropped and counted.

    Frames that authenticate are checked against the ring's own sending KIDs: a match is
    another sender on the same KID, and the ring moves its track to a fresh one.
    """

    def __init__(
        self,
        ring: KeyRing,
        codec: str,
        *,
        replay_window: int = 128,
        error_interval: float = 1.0,
        mismatch_threshold: int = MISMATCH_THRESHOLD,
    ) -> None:
        if isinstance(mismatch_threshold, bool) or not (
            isinstance(mismatch_threshold, int) and mismatch_threshold >= 1
        ):
            raise ValueError("mismatch_threshold must be an int of at least 1")
        self._ring = ring
        self._rx = _core.FrameReceiver(ring.suite, codec, replay_window=replay_window)
        self._version = -1
        self._listeners: list[Callable[[DecryptorEvent], None]] = []
        self._error_interval = error_interval
        self._last_error_event = -float("inf")
        self._errors_unreported = 0
        self._mismatch_threshold = mismatch_threshold
        self._mismatch_run = 0
        self._nt = ring.suite.nt
        self._last_echo: tuple[int, int] | None = None
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
            self._mismatch_run += 1
            if self._mismatch_run >= self._mismatch_threshold and self.state != "mismatch":
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
        self._mismatch_run = 0
        # Only now is the frame's KID authenticated; an injected frame never gets here.
        own = self._ring.own_sends
        if own:
            kid = self._rx.last_kid
            if kid is not None and kid in own:
                self._check_own_kid(kid, wire)
        if self.state != "ok":
            if self.state == "mismatch":
                self._emit(DecryptorEvent(MATCH, stats=self.stats))
            self.state = "ok"
        return frame

    def _check_own_kid(self, kid: int, wire: Buffer) -> None:
        # A frame on one of our own KIDs authenticated: another sender on it, or a copy
        # of our own frame (a loopback, or the router echoing it).  The ring decides.
        ctr = self._rx.last_ctr
        if ctr is None or (kid, ctr) == self._last_echo:
            return  # the same frame again (replay protection off, as in a benchmark)
        tag = bytes(memoryview(wire).cast("B")[-self._nt :])
        if not self._ring.note_received(kid, ctr, tag):
            self._last_echo = (kid, ctr)

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
