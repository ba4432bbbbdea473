"""End-to-end encryption for aiortc peer connections (VP8 and Opus).

::

    ring = e2ee.KeyRing(session_id)
    await ring.set_secret_async(secret)
    pc = RTCPeerConnection()
    transform = protect(pc, ring, on_event=print)   # before any offer/answer
    pc.addTrack(camera)                              # covered too (see "Coverage")
    ...
    transform.stats()                                # per-track counters
    transform.close()                                # stop events; tracks stay encrypted

:func:`protect` makes every sender of the connection encrypt each encoded frame
(docs/protocol.md frame format: codec header in clear, the rest SFrame-sealed) and every
receiver decrypt each reassembled frame before aiortc's decoder sees it.  Only VP8 and
Opus are allowed; any other negotiated codec sends nothing and decodes nothing.

The parts: :mod:`e2ee.transform.sender` (encrypting encoders, key-frame requests),
:mod:`e2ee.transform.receiver` (decrypting decoder queue, PLIs),
:mod:`e2ee.transform.events` (:class:`E2eeEvent`, rate limiting) and, here, the
per-connection :class:`E2eeTransform`.  Every private aiortc seam they use goes through
:mod:`e2ee.rtc.compat`, whose :func:`~e2ee.rtc.compat.check` :func:`protect` runs first.

Coverage of transceivers
    Transceivers that exist when :func:`protect` is called are hooked at once.  Later
    ones are hooked the moment they are created: the connection's private transceiver
    factory (the one place aiortc 1.16 creates them, for ``addTrack``,
    ``addTransceiver`` and ``setRemoteDescription`` alike) is wrapped on the instance
    (:func:`e2ee.rtc.compat.hook_create_transceiver`).  As a second line, should that
    name ever go away, ``pc.addTrack`` and ``pc.addTransceiver`` are wrapped on the
    instance too, and every ``"signalingstatechange"`` and ``"track"`` event re-scans
    ``pc.getTransceivers()``.  The scan alone covers the normal flow: senders and
    receivers are started only by ``RTCPeerConnection.__connect``, which
    ``setLocalDescription`` and ``setRemoteDescription`` schedule with ``ensure_future``
    in the same synchronous step that emits ``"signalingstatechange"``.  Call
    :func:`protect` before the first ``setLocalDescription``/``setRemoteDescription``;
    protecting a live connection works, but frames already sent or received before it
    were not transformed.

Fail closed on the send path
    Every outgoing packet of the connection passes an
    :class:`~e2ee.transform.guard.OutboundGuard` first: the DTLS transport's packet
    sender is wrapped on each transport instance any protected sender uses
    (:func:`e2ee.rtc.compat.hook_transport_send`), on every scan and whenever a sender's
    transport is replaced (``setTransport``, as bundling does), once per transport.  RTCP
    passes; an RTP packet passes only if it is an E2EE frame of the sender that owns its
    SSRC (or RTX SSRC), under one of that sender's recent KIDs; anything else is dropped
    and reported on that sender as an ``encryption_error``.  This holds even if aiortc
    stops calling the per-frame hooks above.  The guard stays after :meth:`close`.

Media-derived header extensions
    The per-frame hook clears the audio level of every encoded frame, and the guard drops
    any packet carrying a negotiated ID of
    :data:`~e2ee.wire.extmap.MEDIA_DERIVED_EXTENSIONS`.  Clients should also keep them
    from being negotiated at all: :func:`strip_media_derived_extensions` on every remote
    description before ``setRemoteDescription`` and on their own offers before sending.

KID collisions
    When the ring finds one of its sending KIDs in a frame from another sender
    (``KeyRing.add_collision_listener``), the encryptor moves to a fresh KID and the
    protected video sender that used it is asked for a key frame.

Threads
    ``on_event`` callbacks always run on the event loop thread that called
    :func:`protect` (events from the encoder thread pool are handed over with
    ``call_soon_threadsafe``).  They must not block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection

from e2ee.crypto.keyring import KeyRing
from e2ee.rtc import compat, net
from e2ee.transform.events import (
    ENCRYPTION_SECRET_MATCH,
    EVENT_INTERVAL,
    E2eeEvent,
    EventCallback,
    RateLimiter,
)
from e2ee.transform.guard import OutboundGuard
from e2ee.transform.receiver import ProtectedReceiver
from e2ee.transform.sender import ProtectedSender
from e2ee.wire.extmap import MEDIA_DERIVED_EXTENSIONS, strip_media_derived_extensions

net.apply_environment()

__all__ = [
    "E2eeEvent",
    "E2eeTransform",
    "ProtectedReceiver",
    "ProtectedSender",
    "protect",
    "strip_media_derived_extensions",
]

log = logging.getLogger(__name__)


class E2eeTransform:
    """The E2EE hooks of one peer connection; made by :func:`protect`.

    ``senders`` and ``receivers`` list the protected tracks (see :class:`ProtectedSender`
    and :class:`ProtectedReceiver` for their ``encryptor``/``decryptor`` and counters).
    ``guard`` is the connection's :class:`~e2ee.transform.guard.OutboundGuard`.
    """

    def __init__(
        self, pc: RTCPeerConnection, ring: KeyRing, on_event: EventCallback | None = None
    ) -> None:
        self.pc = pc
        self.ring = ring
        self.closed = False
        self._listeners: list[EventCallback] = [] if on_event is None else [on_event]
        self._senders: dict[int, ProtectedSender] = {}
        self._receivers: dict[int, ProtectedReceiver] = {}
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._loop_thread = threading.get_ident()
        self._saved: dict[str, Any] = {}
        self._create_hook: Callable[..., Any] | None = None
        self.guard = _guard_for(pc)
        self.guard.on_unknown = self._on_unknown_packet
        self._unknown_limiter = RateLimiter(EVENT_INTERVAL)

    # -- public ------------------------------------------------------------------------

    @property
    def senders(self) -> list[ProtectedSender]:
        return list(self._senders.values())

    @property
    def receivers(self) -> list[ProtectedReceiver]:
        return list(self._receivers.values())

    def sender_for(self, sender_or_track: Any) -> ProtectedSender | None:
        """The protected sender of an ``RTCRtpSender`` or of the local track it sends."""
        for protected in self._senders.values():
            if sender_or_track is protected.sender or sender_or_track is protected.sender.track:
                return protected
        return None

    def receiver_for(self, receiver_or_track: Any) -> ProtectedReceiver | None:
        """The protected receiver of an ``RTCRtpReceiver`` or of its remote track."""
        for protected in self._receivers.values():
            r = protected.receiver
            if receiver_or_track is r or receiver_or_track is r.track:
                return protected
        return None

    def stats(self) -> list[dict[str, Any]]:
        """One dict of counters per protected sender that has (or had) a track and per
        protected receiver that has a remote track."""
        return [
            p.stats for p in self.senders if p.sender.track is not None or p.codec is not None
        ] + [p.stats for p in self.receivers if p.receiver.track is not None]

    def add_listener(self, callback: EventCallback) -> None:
        """``callback(event)`` for every :class:`E2eeEvent`, on the event loop thread."""
        self._listeners.append(callback)

    def remove_listener(self, callback: EventCallback) -> None:
        self._listeners.remove(callback)

    def request_keyframes(self) -> None:
        """Ask every protected video sender for a key frame (done on secret changes)."""
        for protected in self.senders:
            protected._request_keyframe()

    def close(self) -> None:
        """Detach from the ring, the decryptors and the connection's events, and stop
        hooking new transceivers.  Tracks already protected stay encrypted: an encoder is
        never downgraded to plaintext, and receivers keep decrypting (silently)."""
        if self.closed:
            return
        self.closed = True
        self._listeners.clear()
        with contextlib.suppress(ValueError):
            self.ring.remove_listener(self._on_ring_change)
        with contextlib.suppress(ValueError):
            self.ring.remove_collision_listener(self._on_kid_collision)
        for protected in self._receivers.values():
            if protected.decryptor is not None:
                with contextlib.suppress(ValueError):
                    protected.decryptor.remove_listener(protected._on_decryptor_event)
        for event, handler in (
            ("signalingstatechange", self._scan),
            ("track", self._on_track),
            ("connectionstatechange", self._on_connection_state),
        ):
            with contextlib.suppress(KeyError):
                self.pc.remove_listener(event, handler)
        if self._create_hook is not None:
            compat.unhook_create_transceiver(self.pc, self._create_hook)
            self._create_hook = None
        for name, wrapper in self._saved.items():
            if self.pc.__dict__.get(name) is wrapper:
                del self.pc.__dict__[name]
        self._saved.clear()
        _ACTIVE.pop(self.pc, None)

    def __enter__(self) -> E2eeTransform:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"E2eeTransform(senders={len(self._senders)}, receivers={len(self._receivers)}, "
            f"closed={self.closed})"
        )

    # -- internals ---------------------------------------------------------------------

    def _attach(self) -> None:
        self.ring.add_listener(self._on_ring_change)
        self.ring.add_collision_listener(self._on_kid_collision)
        self.pc.on("signalingstatechange", self._scan)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)
        self._create_hook = compat.hook_create_transceiver(self.pc, self._scan)
        for name in ("addTrack", "addTransceiver"):
            original = getattr(self.pc, name, None)
            if original is None:
                continue
            wrapper = self._wrap_factory(original)
            self._saved[name] = wrapper
            setattr(self.pc, name, wrapper)
        self._scan()

    def _wrap_factory(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            self._scan()
            return result

        wrapper.__name__ = getattr(original, "__name__", "wrapper")
        wrapper.__doc__ = getattr(original, "__doc__", None)
        return wrapper

    def _scan(self, *_: Any) -> None:
        if self.closed:
            return
        for transceiver in self.pc.getTransceivers():
            key = id(transceiver)
            if key not in self._senders:
                self._senders[key] = self._protect_sender(transceiver)
            if key not in self._receivers:
                self._receivers[key] = ProtectedReceiver(self, transceiver)
        for protected in self._senders.values():
            self._guard_transport(protected.sender.transport)
            protected.guard.forbidden_extensions = frozenset(
                ext.id
                for ext in compat.negotiated_header_extensions(protected.transceiver)
                if ext.uri.lower() in MEDIA_DERIVED_EXTENSIONS
            )

    def _protect_sender(self, transceiver: Any) -> ProtectedSender:
        protected = ProtectedSender(self, transceiver)
        sender = protected.sender
        self.guard.register(protected.guard, *compat.sender_ssrcs(sender))
        # Bundling moves senders to another transport inside setRemoteDescription: guard
        # the new one at once, not only at the next scan.
        set_transport = sender.setTransport

        def guarded_set_transport(transport: Any) -> None:
            set_transport(transport)
            self._guard_transport(transport)

        sender.setTransport = guarded_set_transport  # type: ignore[method-assign]
        self._guard_transport(sender.transport)
        return protected

    def _guard_transport(self, transport: Any) -> None:
        guard = self.guard

        def wrap(send: compat.SendRtp) -> compat.SendRtp:
            async def guarded_send(data: bytes) -> None:
                if guard.admit(data):
                    await send(data)

            return guarded_send

        compat.hook_transport_send(transport, wrap, key=guard)

    def _on_unknown_packet(self, reason: str) -> None:
        count = self._unknown_limiter.hit("unknown")
        if count:
            log.warning("E2EE: outgoing packet blocked: %s (x%d)", reason, count)

    def _on_kid_collision(self, kid: int) -> None:
        # Runs on the thread that decrypted the frame.  The encryptor draws a fresh KID
        # at its next frame; make that frame a key frame, so receivers switch at once.
        for protected in self.senders:
            encryptor = protected.encryptor
            if kid in protected.guard.kids or (encryptor is not None and encryptor.kid == kid):
                protected._request_keyframe()

    def _on_track(self, track: Any) -> None:
        self._scan()

    def _on_connection_state(self) -> None:
        if self.pc.connectionState == "closed":
            self.close()

    def _on_ring_change(self, ring: KeyRing) -> None:
        # Runs on the thread that changed the secret; _request_keyframe only sets flags
        # (and hands any track callback to the loop).
        self.request_keyframes()

    def _call_on_loop(self, fn: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("E2EE: %r failed", fn)

        if self._loop is None or threading.get_ident() == self._loop_thread:
            run()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(run)

    def _emit(self, event: E2eeEvent) -> None:
        if self.closed:
            return
        level = logging.INFO if event.type == ENCRYPTION_SECRET_MATCH else logging.WARNING
        log.log(
            level,
            "E2EE %s %s (mid %s): %s%s",
            event.direction,
            event.kind,
            event.mid,
            event.type,
            f" x{event.count}" if event.count > 1 else "",
        )
        if not self._listeners:
            return

        def deliver() -> None:
            for callback in list(self._listeners):
                try:
                    callback(event)
                except Exception:
                    log.exception("E2EE event callback %r failed", callback)

        self._call_on_loop(deliver)


_ACTIVE: weakref.WeakKeyDictionary[RTCPeerConnection, E2eeTransform] = weakref.WeakKeyDictionary()
# One outbound guard per connection, for good: it outlives a closed transform (whose
# tracks stay encrypted), and a later transform of the same connection takes it over.
_GUARDS: weakref.WeakKeyDictionary[RTCPeerConnection, OutboundGuard] = weakref.WeakKeyDictionary()


def _guard_for(pc: RTCPeerConnection) -> OutboundGuard:
    guard = _GUARDS.get(pc)
    if guard is None:
        guard = _GUARDS[pc] = OutboundGuard()
    return guard


def protect(
    pc: RTCPeerConnection, ring: KeyRing, *, on_event: EventCallback | None = None
) -> E2eeTransform:
    """Make ``pc`` send and receive only end-to-end encrypted VP8 and Opus under ``ring``.

    Call it right after creating the connection, before the first offer or answer.
    ``on_event(event)`` receives every :class:`E2eeEvent` on the event loop thread.
    Raises :class:`ValueError` if ``pc`` is already protected by an open transform, and
    :class:`RuntimeError` (:class:`e2ee.rtc.compat.CompatError`) if the installed aiortc
    is not one whose hook points :mod:`e2ee.rtc.compat` knows.
    """
    compat.check()
    compat.check_outbound()
    if pc in _ACTIVE:
        raise ValueError("this RTCPeerConnection is already protected")
    transform = E2eeTransform(pc, ring, on_event)
    transform._attach()
    _ACTIVE[pc] = transform
    return transform
