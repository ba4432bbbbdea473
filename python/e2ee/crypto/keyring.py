"""The session's encryption secret, turned into keys, with a grace period on change.

A :class:`KeyRing` belongs to one client in one session.  Every track's
:class:`~e2ee.crypto.frames.FrameEncryptor` and
:class:`~e2ee.crypto.frames.FrameDecryptor` reads it;
changing the secret re-keys them all at their next frame (docs/protocol.md, "Secret to
keys").  State is published as immutable snapshots, so the threads aiortc encodes and
decodes on can read it without locks.

The ring also knows the KIDs its own encryptors send under, so that a decryptor that
authenticates a frame under one of them (another sender drew the same 48 random bits)
can make the owning encryptor move to a fresh KID (docs/protocol.md, "KID collisions").
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from e2ee import _core
from e2ee.crypto.sframe import CipherSuite
from e2ee.errors import EncryptionInternalError
from e2ee.wire import params

__all__ = ["KeyRing"]

log = logging.getLogger(__name__)

DEFAULT_SUITE = CipherSuite(params.DEFAULT_SUITE)
DEFAULT_ITERATIONS = params.DEFAULT_ITERATIONS
MAX_ITERATIONS = params.MAX_ITERATIONS
#: Previous secrets kept for their grace period besides the current one.
MAX_PREVIOUS = 2
#: Accepted (receive-only) secrets held besides the current one.
MAX_ACCEPTED = 2
#: Longest grace period, in seconds: a replaced secret is never accepted for days.
MAX_GRACE_PERIOD = 86_400.0
#: Draws from the KID source before giving up on one that this ring does not use yet.
MAX_KID_DRAWS = 8
#: Collided KIDs remembered per secret (never drawn again while it is current).
MAX_COLLIDED = 64
#: Tags of the first frames under each sending KID, kept to tell a copy of this ring's
#: own frame from another sender's frame on the same KID.
RECORDED_TAGS = 128

#: ``kid_source(secret_id) -> kid``: a fresh KID, ``secret_id << 48 | 48 random bits``.
KidSource = Callable[[int], int]


@dataclass(frozen=True, slots=True)
class HeldSecret:
    """A derived secret key and its 16-bit id; ``retired_at`` once it was replaced.

    ``order`` is the call order of the :meth:`KeyRing.set_secret` or
    :meth:`KeyRing.accept_secret` that installed it.
    """

    key: bytes
    id: int
    retired_at: float | None = None
    order: int = field(default=0, compare=False)

    def __repr__(self) -> str:  # never show the key
        return f"HeldSecret(id={self.id:#06x}, retired_at={self.retired_at})"


class SendRecord:
    """What one track sent under one KID: how many frames (so the next CTR) and the tags
    of the first :data:`RECORDED_TAGS`.

    Written only by the encryptor that owns it, on its thread; read by decryptors to
    tell a copy of one of these frames (same CTR, same tag) from another sender's frame
    on the same KID.  A frame under a CTR not sent yet is never one of ours.
    """

    __slots__ = ("kid", "sent", "tags")

    def __init__(self, kid: int) -> None:
        self.kid = kid
        self.sent = 0
        self.tags: list[bytes] = []

    def is_own_frame(self, ctr: int, tag: bytes) -> bool:
        """Whether the frame (``ctr``, ``tag``) may be one this track sent.  A CTR used
        beyond the recorded tags cannot be told apart and counts as ours."""
        if ctr >= self.sent:
            return False
        return ctr >= len(self.tags) or hmac.compare_digest(self.tags[ctr], tag)

    def __repr__(self) -> str:
        return f"SendRecord(kid={self.kid:#018x}, sent={self.sent})"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the ring holds at one ``version``.

    ``current`` is sent and received; ``accepted`` are received only (waiting to be
    promoted by :meth:`KeyRing.set_secret`); ``previous`` are received for the grace
    period after they were replaced.
    """

    version: int
    current: HeldSecret | None
    previous: tuple[HeldSecret, ...]
    accepted: tuple[HeldSecret, ...] = ()


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _check_session_id(session_id: object) -> None:
    """``ValueError`` unless ``session_id`` is text of 1 to 1024 UTF-8 bytes (a lone
    surrogate is not text: the same error as ``derive_secret_key`` gives, raised here,
    before anything is derived, rather than Python's ``UnicodeEncodeError``)."""
    if not isinstance(session_id, str):
        raise ValueError("session_id must be a str of 1 to 1024 bytes (UTF-8)")
    try:
        size = len(session_id.encode())
    except UnicodeEncodeError:
        raise ValueError(
            "session_id contains a lone surrogate, which is not valid Unicode text"
        ) from None
    if not 0 < size <= 1024:
        raise ValueError("session_id must be a str of 1 to 1024 bytes (UTF-8)")


class KeyRing:
    """The encryption secret of one client in one E2EE session.

    ``suite`` and ``kdf_iterations`` are session parameters (the server hands them out
    with the session; check them with :class:`e2ee.wire.params.SessionPolicy` first).
    ``grace_period`` is how long, in seconds, a replaced secret is still accepted from
    others, so that a coordinated change is seamless; 0 is strict.  ``kid_source`` draws
    the KIDs of this client's tracks (default :func:`e2ee.new_kid`, 48 bits from the OS
    generator); tests inject a fixed one to force a KID collision.

    ``session_id`` must be text of 1 to 1024 UTF-8 bytes: anything else (a non-str, a
    lone surrogate) is a plain ``ValueError``, like a bad session id given to
    :func:`e2ee.derive_secret_key`.
    """

    def __init__(
        self,
        session_id: str,
        *,
        suite: int = DEFAULT_SUITE,
        kdf_iterations: int = DEFAULT_ITERATIONS,
        grace_period: float = 10.0,
        kid_source: KidSource = _core.new_kid,
    ) -> None:
        _check_session_id(session_id)
        if not 1 <= kdf_iterations <= MAX_ITERATIONS:
            raise ValueError(f"kdf_iterations must be from 1 to {MAX_ITERATIONS}")
        if not 0 <= grace_period <= MAX_GRACE_PERIOD:  # also refuses NaN and infinity
            raise ValueError(f"grace_period must be from 0 to {MAX_GRACE_PERIOD} seconds")
        self.session_id = session_id
        self.suite = CipherSuite(suite)
        self.kdf_iterations = kdf_iterations
        self.grace_period = float(grace_period)
        self._kid_source = kid_source
        self._lock = threading.Lock()
        self._snapshot = Snapshot(0, None, ())
        self._listeners: list[Callable[[KeyRing], None]] = []
        self._collision_listeners: list[Callable[[int], None]] = []
        # Call order of set_secret/accept_secret: the last call wins, whatever order the
        # derivations finish in.  _set_order is that of the last set_secret installed.
        self._orders = itertools.count(1)
        self._set_order = 0
        # This ring's sending KIDs under the current secret, and KIDs found collided.
        # Replaced, never mutated, so that readers need no lock.
        self._own: dict[int, SendRecord] = {}
        self._collided: tuple[int, ...] = ()
        self._collided_set: frozenset[int] = frozenset()
        self._collision_count = 0

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

    @property
    def accepted_ids(self) -> tuple[int, ...]:
        """The 16-bit ids of the accepted (receive-only) secrets, newest first."""
        return tuple(a.id for a in self._snapshot.accepted)

    def held_secrets(self) -> list[tuple[bytes, float | None]]:
        """``(secret_key, seconds_left)`` of every secret still accepted: the current one
        and accepted ones (``None``: until replaced), then previous ones within their
        grace period."""
        snap = self._snapshot
        now = time.monotonic()
        held: list[tuple[bytes, float | None]] = []
        if snap.current is not None:
            held.append((snap.current.key, None))
        held += [(a.key, None) for a in snap.accepted]
        for prev in snap.previous:
            left = self.grace_period - (now - (prev.retired_at or now))
            if left > 0:
                held.append((prev.key, left))
        return held

    # -- changing ------------------------------------------------------------------------

    def set_secret(self, secret: str) -> None:
        """Validates ``secret`` (a str of 8 to 256 characters after NFC normalization)
        and makes it current: encryptors send under it from their next frame.  Blocks for
        the key derivation (PBKDF2, slow on purpose); on an event loop use
        :meth:`set_secret_async`.  An invalid secret raises
        :class:`~e2ee.errors.InvalidEncryptionSecret` and the old secret stays.

        The last call wins: of several :meth:`set_secret` and :meth:`set_secret_async`
        calls in flight, the one called last is current at the end, whichever derivation
        finishes first.  An earlier call that finishes later changes nothing.
        """
        order = next(self._orders)
        self._install_current(self._derive(secret), order)

    def set_secret_async(self, secret: str) -> Coroutine[Any, Any, None]:
        """:meth:`set_secret` with the key derivation off the event loop.

        The secret is validated, and its place in the call order taken, when this is
        called (not when the coroutine first runs).
        """
        _core.normalize_secret(secret)  # refuse a bad secret before any thread hop
        order = next(self._orders)
        return self._derive_then(secret, order, self._install_current)

    def accept_secret(self, secret: str) -> None:
        """Receive under ``secret`` too, without sending under it: make-before-break.

        Decryptors accept frames under an accepted secret from their next frame;
        encryptors keep sending under the current one.  A later :meth:`set_secret` of
        the same secret promotes it to current (it is never dropped on the way).  At most
        :data:`MAX_ACCEPTED` secrets are accepted; accepting one more retires the oldest
        as a replaced secret would be (held for the grace period, 0: dropped).  A
        :meth:`set_secret` of a secret that was not accepted retires the accepted ones
        the same way: an unplanned change (a participant removed, say) ends every
        planned one.  Accepting the current secret changes nothing.

        A planned change, so that no receiver ever sees a mismatch:

        1. Deliver the new secret to every participant.
        2. Everyone calls ``accept_secret(new)``, then confirms.
        3. Once everyone has confirmed, everyone calls ``set_secret(new)``.  Each track
           moves to a fresh KID under it; receivers already hold it.  The old secret
           stays accepted for the grace period, which must cover the time between the
           first and the last participant's step 3 (a grace period of 0 cannot).

        Blocks for the key derivation like :meth:`set_secret`, and takes part in the
        same call order: an accept called before a :meth:`set_secret` that is already
        installed changes nothing.
        """
        order = next(self._orders)
        self._install_accepted(self._derive(secret), order)

    def accept_secret_async(self, secret: str) -> Coroutine[Any, Any, None]:
        """:meth:`accept_secret` with the key derivation off the event loop."""
        _core.normalize_secret(secret)
        order = next(self._orders)
        return self._derive_then(secret, order, self._install_accepted)

    def add_listener(self, callback: Callable[[KeyRing], None]) -> None:
        """``callback(ring)`` runs after every change of the held secrets, on the thread
        that made it."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[KeyRing], None]) -> None:
        self._listeners.remove(callback)

    # -- KIDs of this ring's tracks -------------------------------------------------------

    @property
    def sending_kids(self) -> frozenset[int]:
        """The KIDs this ring's encryptors send under with the current secret."""
        return frozenset(self._own)

    @property
    def own_sends(self) -> Mapping[int, SendRecord]:
        """:attr:`sending_kids` with what each track sent under it (read-only; replaced,
        never changed, so any thread may read it without a lock)."""
        return self._own

    @property
    def collided_kids(self) -> frozenset[int]:
        """KIDs of this ring found in use by another sender under the current secret.
        Their encryptors move to a fresh KID at their next frame; none is drawn again."""
        return self._collided_set

    @property
    def collision_count(self) -> int:
        """Increases on every KID collision found (encryptors compare it per frame)."""
        return self._collision_count

    def claim_kid(self, secret: HeldSecret, replacing: int | None = None) -> SendRecord:
        """A fresh KID for one track under ``secret``, registered as this ring's own.

        Never one of this ring's KIDs in use, nor a collided one: two tracks of one client
        never share a KID.  ``replacing`` is the KID the track gives up.  Called by
        :class:`~e2ee.crypto.frames.FrameEncryptor` when it re-keys.  Raises
        :class:`~e2ee.errors.EncryptionInternalError` if the KID source gives no usable
        KID in :data:`MAX_KID_DRAWS` draws.
        """
        with self._lock:
            for _ in range(MAX_KID_DRAWS):
                kid = self._kid_source(secret.id)
                if not (isinstance(kid, int) and 0 <= kid < 1 << 64) or kid >> 48 != secret.id:
                    raise EncryptionInternalError(
                        f"the KID source returned {kid!r}, not a KID of secret id {secret.id:#06x}"
                    )
                if kid not in self._own and kid not in self._collided_set:
                    break
            else:
                raise EncryptionInternalError("the KID source keeps returning KIDs in use")
            record = SendRecord(kid)
            own = {k: r for k, r in self._own.items() if k != replacing}
            if secret is self._snapshot.current:
                own[kid] = record
            self._own = own
        return record

    def release_kid(self, kid: int | None) -> None:
        """Forget one of this ring's sending KIDs (its track is gone)."""
        if kid is None or kid not in self._own:
            return
        with self._lock:
            self._own = {k: r for k, r in self._own.items() if k != kid}

    def note_received(self, kid: int, ctr: int, tag: bytes) -> bool:
        """Called by a :class:`~e2ee.crypto.frames.FrameDecryptor` with the KID, CTR and
        tag of every frame that *authenticated*: never with an unauthenticated frame.

        If the KID is one of this ring's own sending KIDs under the current secret and
        the frame is not one this ring sent (a CTR it has not used yet, or a tag that
        differs from the one it sent under that CTR), another sender drew the same KID and
        the two keystreams repeat.  The KID is then marked collided, collision listeners
        run (with the KID, on this thread), the owning encryptor draws a fresh KID before
        its next frame, and this returns True.  A copy of this ring's own frame (a
        loopback, or a router echoing it) is no collision.  Cheap when the KID is not
        this ring's: one dict lookup.
        """
        record = self._own.get(kid)
        if record is None or record.is_own_frame(ctr, tag):
            return False
        with self._lock:
            if self._own.get(kid) is not record:
                return False
            self._own = {k: r for k, r in self._own.items() if k != kid}
            self._collided = (*self._collided, kid)[-MAX_COLLIDED:]
            self._collided_set = frozenset(self._collided)
            self._collision_count += 1
        log.warning("KID collision: %#018x is also another sender's; drawing a new one", kid)
        for callback in list(self._collision_listeners):
            try:
                callback(kid)
            except Exception:
                log.exception("KeyRing collision listener %r failed", callback)
        return True

    def add_collision_listener(self, callback: Callable[[int], None]) -> None:
        """``callback(kid)`` runs when one of this ring's sending KIDs is found in use by
        another sender, on the thread that decrypted the frame.  The owning encryptor
        moves to a fresh KID at its next frame; a transform would ask it for a key
        frame."""
        self._collision_listeners.append(callback)

    def remove_collision_listener(self, callback: Callable[[int], None]) -> None:
        self._collision_listeners.remove(callback)

    # -- internals -----------------------------------------------------------------------

    def _derive(self, secret: str) -> bytes:
        return _core.derive_secret_key(secret, self.session_id, iterations=self.kdf_iterations)

    async def _derive_then(
        self, secret: str, order: int, install: Callable[[bytes, int], None]
    ) -> None:
        key = await asyncio.get_running_loop().run_in_executor(None, self._derive, secret)
        install(key, order)

    def _install_current(self, key: bytes, order: int) -> None:
        with self._lock:
            if order < self._set_order:
                return  # a later set_secret is already installed: it wins
            self._set_order = order
            snap = self._snapshot
            if snap.current is not None and _same(snap.current.key, key):
                return
            now = time.monotonic()
            promoted = any(_same(a.key, key) for a in snap.accepted)
            # A promotion keeps the other accepted secrets.  Any other change retires
            # those accepted before it was called (a plan it supersedes).
            others = [a for a in snap.accepted if not _same(a.key, key)]
            accepted = [a for a in others if promoted or a.order > order]
            retiring = [] if snap.current is None else [snap.current]
            retiring += [a for a in others if a not in accepted]
            current = HeldSecret(key, _core.secret_id(key), order=order)
            self._snapshot = Snapshot(
                snap.version + 1,
                current,
                self._previous(snap, retiring, key, now),
                tuple(accepted),
            )
            # KIDs of the old secret are not sent under the current one.
            self._own = {}
            self._collided, self._collided_set = (), frozenset()
        log.info("encryption secret set (secret id %#06x)", current.id)
        self._changed()

    def _install_accepted(self, key: bytes, order: int) -> None:
        with self._lock:
            if order < self._set_order:
                return  # a set_secret called after this accept is already installed
            snap = self._snapshot
            if snap.current is not None and _same(snap.current.key, key):
                return
            if any(_same(a.key, key) for a in snap.accepted):
                return
            now = time.monotonic()
            entry = HeldSecret(key, _core.secret_id(key), order=order)
            pending = sorted((entry, *snap.accepted), key=lambda a: a.order, reverse=True)
            accepted, displaced = pending[:MAX_ACCEPTED], pending[MAX_ACCEPTED:]
            self._snapshot = Snapshot(
                snap.version + 1,
                snap.current,
                self._previous(snap, displaced, key, now),
                tuple(accepted),
            )
        log.info("encryption secret accepted for receiving (secret id %#06x)", entry.id)
        self._changed()

    def _previous(
        self, snap: Snapshot, retiring: list[HeldSecret], key: bytes, now: float
    ) -> tuple[HeldSecret, ...]:
        """The previous secrets after ``retiring`` are replaced at ``now``; never ``key``."""
        if self.grace_period <= 0:
            return ()
        previous = [HeldSecret(r.key, r.id, now, r.order) for r in retiring]
        previous += [p for p in snap.previous if now - (p.retired_at or now) < self.grace_period]
        return tuple([p for p in previous if not _same(p.key, key)][:MAX_PREVIOUS])

    def _changed(self) -> None:
        for callback in list(self._listeners):
            try:
                callback(self)
            except Exception:
                log.exception("KeyRing listener %r failed", callback)

    def __repr__(self) -> str:
        sid = self.secret_id
        shown = "none" if sid is None else f"{sid:#06x}"
        return f"KeyRing(session={self.session_id!r}, suite={self.suite.name}, secret={shown})"
