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

Sending (per sender, no process-wide patch)
    The sender's ``_next_encoded_frame`` is wrapped on the instance.  Before each frame it
    makes sure the sender's private encoder (``_RTCRtpSender__encoder``) is an E2EE
    subclass of aiortc's encoder for the negotiated codec: ``Vp8Encoder`` with
    ``_packetize`` overridden (it receives the whole VP8 frame on both the ``encode()``
    path and the pre-encoded ``pack()`` path), ``OpusEncoder`` with ``encode``/``pack``
    mapping each payload (one whole Opus packet) through the encryptor.  Encryption never
    raises inside aiortc: a frame that cannot be encrypted (no secret, frame too short) is
    dropped -- the encoder returns no payload, which aiortc skips -- and reported as an
    event at most once a second.  After a dropped VP8 frame the next encoded frame is
    forced to be a key frame, so receivers do not decode from a missing reference.

Key frames on a secret change
    When the ring's secret changes, every protected video sender is asked for a key
    frame (``sender._send_keyframe()``), so receivers that were waiting for the new
    secret recover at once.  aiortc honours that request only on the ``encode()`` path
    (tracks returning ``av.VideoFrame``); its ``pack()`` path for pre-encoded
    ``av.Packet`` tracks ignores it.  For such tracks, if the track object has a callable
    ``request_keyframe()``, it is called (on the event loop) instead -- otherwise the
    source's own key-frame interval applies.  The same holds for PLIs and FIRs from
    receivers: ``sender._send_keyframe`` is wrapped on the instance to do the same.

Receiving (per receiver)
    The receiver's private decoder queue (``_RTCRtpReceiver__decoder_queue``, a
    ``queue.Queue`` that ``_handle_rtp_packet`` fills on the event loop and the decoder
    thread drains) is replaced by a proxy whose ``put()`` decrypts each frame with the
    receiver's :class:`~e2ee.FrameDecryptor` on the event loop and forwards only
    authenticated plaintext to the original queue; the ``None`` stop sentinel passes
    through.  Because the proxy forwards into the *original* queue object, the hook is
    correct whether it is installed before or after ``receive()`` started the decoder
    thread (it is normally installed long before).  Frames that fail (wrong secret, no
    secret, tampered, replayed, unsupported codec) are dropped and become events; nothing
    is raised inside aiortc.  For video, after any dropped frame (and at the start) delta
    frames are held back until the next key frame, and a PLI is sent (at most every
    0.3 s); an ``encryption_secret_match`` also sends a PLI, so the picture recovers at
    once when the right secret arrives.

Coverage of transceivers
    Transceivers that exist when :func:`protect` is called are hooked at once.  Later
    ones are hooked the moment they are created: the connection's private
    ``_RTCPeerConnection__createTransceiver`` (the one place aiortc 1.16 creates them,
    for ``addTrack``, ``addTransceiver`` and ``setRemoteDescription`` alike) is wrapped
    on the instance.  As a second line, should that name ever go away, ``pc.addTrack``
    and ``pc.addTransceiver`` are wrapped on the instance too, and every
    ``"signalingstatechange"`` and ``"track"`` event re-scans ``pc.getTransceivers()``.
    The scan alone covers the normal flow: senders and receivers are started only by
    ``RTCPeerConnection.__connect``, which ``setLocalDescription`` and
    ``setRemoteDescription`` schedule with ``ensure_future`` in the same synchronous step
    that emits ``"signalingstatechange"``.  Call :func:`protect` before the first
    ``setLocalDescription``/``setRemoteDescription``; protecting a live connection works,
    but frames already sent or received before it were not transformed.

Threads
    ``on_event`` callbacks always run on the event loop thread that called
    :func:`protect` (events from the encoder thread pool are handed over with
    ``call_soon_threadsafe``).  They must not block.

Private aiortc names used (checked against aiortc 1.16.0): ``RTCRtpSender._next_encoded_frame``,
``RTCRtpSender._RTCRtpSender__encoder``, ``RTCRtpSender._send_keyframe`` (called and
wrapped),
``Vp8Encoder._packetize``, ``RTCRtpReceiver._RTCRtpReceiver__decoder_queue``,
``RTCRtpReceiver._send_rtcp_pli``, ``RTCPeerConnection._RTCPeerConnection__createTransceiver``
(optional, see above), and ``aiortc.jitterbuffer.JitterFrame``.
:func:`protect` checks that they exist and raises :class:`RuntimeError` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs.base import Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from e2ee.crypto.frames import DecryptorEvent, FrameDecryptor, FrameEncryptor
from e2ee.crypto.keyring import KeyRing
from e2ee.errors import (
    DecryptionInternalError,
    EncryptionInternalError,
    EncryptionSecretMismatch,
    EncryptionSecretMissing,
)
from e2ee.rtc import net

net.apply_environment()

__all__ = [
    "E2eeEvent",
    "E2eeTransform",
    "ProtectedReceiver",
    "ProtectedSender",
    "protect",
]

log = logging.getLogger(__name__)

#: Negotiated MIME types (lower case) allowed in an E2EE session, and the codec names the
#: media layer expects.
SUPPORTED_CODECS = {"video/vp8": "vp8", "audio/opus": "opus"}

#: Event types.  The first three come from :class:`~e2ee.FrameDecryptor`; the others are
#: raised here.
ENCRYPTION_SECRET_MISMATCH = "encryption_secret_mismatch"
ENCRYPTION_SECRET_MATCH = "encryption_secret_match"
DECRYPTION_ERROR = "decryption_error"
ENCRYPTION_SECRET_MISSING = "encryption_secret_missing"
ENCRYPTION_ERROR = "encryption_error"

#: Minimum interval between two events of the same type for the same track, for the
#: events raised here (the decryptor rate-limits its own ``decryption_error``).
EVENT_INTERVAL = 1.0
#: Minimum interval between two PLIs one receiver sends for E2EE reasons.
PLI_INTERVAL = 0.3

# Every private aiortc name this module relies on (see the module docstring).
_SENDER_ENCODER = "_RTCRtpSender__encoder"
_RECEIVER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_PC_CREATE_TRANSCEIVER = "_RTCPeerConnection__createTransceiver"


@dataclass(frozen=True, slots=True)
class E2eeEvent:
    """Something an application should know about one protected track.

    ``type`` is one of:

    * ``"encryption_secret_mismatch"`` (receive): frames arrive under a secret this client
      does not hold; sent on entering that state, not per frame;
    * ``"encryption_secret_match"`` (receive): the first good frame after a mismatch (a
      PLI is sent at the same time);
    * ``"decryption_error"`` (receive): frames under a held secret fail authentication or
      parsing, are replayed, or use a codec other than VP8/Opus;
    * ``"encryption_secret_missing"``: no secret is set, so frames are dropped (send) or
      cannot be decrypted (receive); sent on entering that state on the receive side, at
      most once a second on the send side;
    * ``"encryption_error"`` (send): a frame could not be encrypted (too short for its
      codec, or a codec other than VP8/Opus was negotiated) and was dropped.

    ``count`` is how many occurrences this event stands for (rate-limited events fold the
    ones in between).  ``error`` is the exception behind it, when there is one.
    """

    type: str
    direction: str
    """``"send"`` or ``"recv"``."""
    kind: str
    """``"audio"`` or ``"video"``."""
    mid: str | None
    track_id: str | None
    kid: int | None = None
    message: str = ""
    count: int = 1
    error: BaseException | None = None


EventCallback = Callable[[E2eeEvent], None]


class _RateLimiter:
    """Counts occurrences per key and lets one through per ``interval``."""

    __slots__ = ("_interval", "_last", "_pending")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._pending: dict[str, int] = {}

    def hit(self, key: str) -> int:
        """Record one occurrence; return how many to report now (0: stay quiet)."""
        pending = self._pending.get(key, 0) + 1
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) >= self._interval:
            self._last[key] = now
            self._pending[key] = 0
            return pending
        self._pending[key] = pending
        return 0


# -- Sending -----------------------------------------------------------------------------


class ProtectedSender:
    """The E2EE state of one :class:`aiortc.RTCRtpSender`.

    ``encryptor`` is created with the encoder, just before the first frame, for the codec
    aiortc negotiated (``codec``, e.g. ``"video/VP8"``).  ``stats`` counts frames:
    ``frames_encrypted``, ``frames_dropped`` (could not be encrypted: never sent),
    ``keyframes_encrypted`` (VP8) and ``keyframe_requests`` (secret changes).
    """

    def __init__(self, transform: E2eeTransform, transceiver: RTCRtpTransceiver) -> None:
        self._transform = transform
        self.transceiver = transceiver
        self.sender: RTCRtpSender = transceiver.sender
        self.kind: str = transceiver.kind
        self.codec: str | None = None
        self.encryptor: FrameEncryptor | None = None
        self.frames_encrypted = 0
        self.frames_dropped = 0
        self.keyframes_encrypted = 0
        self.keyframe_requests = 0
        self._force_keyframe = False
        self._limiter = _RateLimiter(EVENT_INTERVAL)
        self._original_next = self.sender._next_encoded_frame
        self._original_send_keyframe = self.sender._send_keyframe
        self.sender._next_encoded_frame = self._next_encoded_frame  # type: ignore[method-assign]
        self.sender._send_keyframe = self._send_keyframe  # type: ignore[method-assign]

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "direction": "send",
            "kind": self.kind,
            "mid": self.mid,
            "track_id": _track_id(self.sender.track),
            "codec": self.codec,
            "kid": None if self.encryptor is None else self.encryptor.kid,
            "frames_encrypted": self.frames_encrypted,
            "frames_dropped": self.frames_dropped,
            "keyframes_encrypted": self.keyframes_encrypted,
            "keyframe_requests": self.keyframe_requests,
        }

    async def _next_encoded_frame(self, codec: RTCRtpCodecParameters) -> Any:
        # Runs on the event loop inside aiortc's _run_rtp, once per frame.  The encoder is
        # (re)placed before aiortc would create its own plaintext one.
        encoder = getattr(self.sender, _SENDER_ENCODER, None)
        if not (isinstance(encoder, _E2eeEncoderMixin) and encoder._e2ee_owner is self):
            setattr(self.sender, _SENDER_ENCODER, self._make_encoder(codec))
        return await self._original_next(codec)

    def _make_encoder(self, codec: RTCRtpCodecParameters) -> Encoder:
        mime = codec.mimeType
        self.codec = mime
        name = SUPPORTED_CODECS.get(mime.lower())
        if name is None:
            log.warning("E2EE: refusing to send %s (only VP8 and Opus): frames dropped", mime)
            return _RefusingEncoder(self, mime)
        if self.encryptor is None or self.encryptor.codec != name:
            self.encryptor = FrameEncryptor(self._transform.ring, name)
        return _E2eeVp8Encoder(self) if name == "vp8" else _E2eeOpusEncoder(self)

    # Called from the encoder, on an executor thread (encode) or the loop (pack).
    def _encrypt(self, frame: bytes) -> bytes | None:
        encryptor = self.encryptor
        try:
            if encryptor is None:  # pragma: no cover - the encoder is built with one
                raise EncryptionInternalError("no encryptor")
            wire = encryptor.encrypt(frame)
        except Exception as exc:
            self.frames_dropped += 1
            self._force_keyframe = True
            self._report(exc)
            return None
        self.frames_encrypted += 1
        return wire

    def _report(self, exc: BaseException) -> None:
        if isinstance(exc, EncryptionSecretMissing):
            kind = ENCRYPTION_SECRET_MISSING
        else:
            kind = ENCRYPTION_ERROR
            if not isinstance(exc, EncryptionInternalError):
                exc = EncryptionInternalError(f"unexpected {type(exc).__name__}: {exc}")
        count = self._limiter.hit(kind)
        if count:
            self._transform._emit(
                E2eeEvent(
                    type=kind,
                    direction="send",
                    kind=self.kind,
                    mid=self.mid,
                    track_id=_track_id(self.sender.track),
                    kid=None,
                    message=str(exc),
                    count=count,
                    error=exc,
                )
            )

    def _take_forced_keyframe(self) -> bool:
        force, self._force_keyframe = self._force_keyframe, False
        return force

    def _send_keyframe(self) -> None:
        # Replaces sender._send_keyframe (aiortc calls it on a PLI or FIR): aiortc's flag
        # only reaches the encode() path, so pre-encoded tracks are asked directly.
        self._original_send_keyframe()
        request = getattr(self.sender.track, "request_keyframe", None)
        if callable(request):
            self._transform._call_on_loop(request)

    def _request_keyframe(self) -> None:
        """Ask for a key frame on the next encoded frame (thread-safe)."""
        if self.kind != "video":
            return
        self.keyframe_requests += 1
        self._force_keyframe = True
        self.sender._send_keyframe()


class _E2eeEncoderMixin:
    _e2ee_owner: ProtectedSender


class _E2eeVp8Encoder(_E2eeEncoderMixin, Vp8Encoder):
    """aiortc's VP8 encoder, encrypting each whole frame before packetization."""

    def __init__(self, owner: ProtectedSender) -> None:
        super().__init__()
        self._e2ee_owner = owner

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        if self._e2ee_owner._take_forced_keyframe():
            force_keyframe = True
        return super().encode(frame, force_keyframe)

    def _packetize(self, buffer: bytes, picture_id: int) -> list[bytes]:  # type: ignore[override]
        # Vp8Encoder._packetize is a classmethod; this instance override is what both
        # encode() and pack() call (self._packetize), and super() still reaches the base.
        if not buffer:
            return []
        wire = self._e2ee_owner._encrypt(buffer)
        if wire is None:
            return []
        if not buffer[0] & 1:
            self._e2ee_owner.keyframes_encrypted += 1
        return super()._packetize(wire, picture_id)


class _E2eeOpusEncoder(_E2eeEncoderMixin, OpusEncoder):
    """aiortc's Opus encoder, encrypting each Opus packet (one RTP payload each)."""

    def __init__(self, owner: ProtectedSender) -> None:
        super().__init__()
        self._e2ee_owner = owner

    def _seal(self, payloads: list[bytes]) -> list[bytes]:
        sealed = []
        for payload in payloads:
            wire = self._e2ee_owner._encrypt(payload)
            if wire is not None:
                sealed.append(wire)
        return sealed

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        payloads, timestamp = super().encode(frame, force_keyframe)
        return self._seal(payloads), timestamp

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        payloads, timestamp = super().pack(packet)
        return self._seal(payloads), timestamp


class _RefusingEncoder(_E2eeEncoderMixin, Encoder):
    """Stands in for the encoder of a codec E2EE does not support: sends nothing."""

    def __init__(self, owner: ProtectedSender, mime: str) -> None:
        self._e2ee_owner = owner
        self._mime = mime

    def _refuse(self) -> tuple[list[bytes], Any]:
        self._e2ee_owner.frames_dropped += 1
        self._e2ee_owner._report(
            EncryptionInternalError(
                f"codec {self._mime} is not allowed with E2EE (only VP8 and Opus)"
            )
        )
        return [], None

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], Any]:
        return self._refuse()

    def pack(self, packet: Any) -> tuple[list[bytes], Any]:
        return self._refuse()


# -- Receiving ---------------------------------------------------------------------------


class ProtectedReceiver:
    """The E2EE state of one :class:`aiortc.RTCRtpReceiver`.

    ``decryptor`` is created at the first frame for the negotiated codec (``codec``).
    ``stats`` merges the decryptor's counters with this hook's: ``frames_delivered`` (to
    aiortc's decoder), ``frames_dropped`` (failed, not delivered), ``frames_gated``
    (decrypted delta frames held back while waiting for a key frame) and
    ``keyframe_requests`` (PLIs sent).  ``state`` is the decryptor's state, ``"idle"``
    before the first frame.
    """

    def __init__(self, transform: E2eeTransform, transceiver: RTCRtpTransceiver) -> None:
        self._transform = transform
        self.transceiver = transceiver
        self.receiver: RTCRtpReceiver = transceiver.receiver
        self.kind: str = transceiver.kind
        self.codec: str | None = None
        self.decryptor: FrameDecryptor | None = None
        self.frames_delivered = 0
        self.frames_dropped = 0
        self.frames_gated = 0
        self.keyframe_requests = 0
        self._need_keyframe = self.kind == "video"
        self._missing = False
        self._last_pli = -float("inf")
        self._limiter = _RateLimiter(EVENT_INTERVAL)
        self._ssrc_cache: tuple[str, list[int]] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        inner = getattr(self.receiver, _RECEIVER_QUEUE)
        setattr(self.receiver, _RECEIVER_QUEUE, _DecryptingQueue(inner, self))

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    @property
    def state(self) -> str:
        return "idle" if self.decryptor is None else self.decryptor.state

    @property
    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "direction": "recv",
            "kind": self.kind,
            "mid": self.mid,
            "track_id": _track_id(self.receiver.track),
            "codec": self.codec,
            "state": self.state,
            "frames_ok": 0,
            "frames_mismatched": 0,
            "frames_failed": 0,
            "frames_replayed": 0,
            "frames_missing": 0,
        }
        if self.decryptor is not None:
            stats.update(self.decryptor.stats)
        stats.update(
            frames_delivered=self.frames_delivered,
            frames_dropped=self.frames_dropped,
            frames_gated=self.frames_gated,
            keyframe_requests=self.keyframe_requests,
        )
        return stats

    def _event(self, type: str, **fields: Any) -> E2eeEvent:
        return E2eeEvent(
            type=type,
            direction="recv",
            kind=self.kind,
            mid=self.mid,
            track_id=_track_id(self.receiver.track),
            **fields,
        )

    # Called by _DecryptingQueue.put on the event loop, inside _handle_rtp_packet.
    def _process(self, codec: RTCRtpCodecParameters, frame: JitterFrame) -> JitterFrame | None:
        decryptor = self.decryptor
        mime = codec.mimeType
        if decryptor is None or mime != self.codec:
            self.codec = mime
            name = SUPPORTED_CODECS.get(mime.lower())
            if name is None:
                self._drop()
                count = self._limiter.hit(DECRYPTION_ERROR)
                if count:
                    message = f"codec {mime} is not allowed with E2EE (only VP8 and Opus)"
                    self._transform._emit(
                        self._event(
                            DECRYPTION_ERROR,
                            message=message,
                            count=count,
                            error=DecryptionInternalError(message),
                        )
                    )
                self.codec = None  # re-check on the next frame
                return None
            if decryptor is not None:
                decryptor.remove_listener(self._on_decryptor_event)
            decryptor = self.decryptor = FrameDecryptor(self._transform.ring, name)
            decryptor.add_listener(self._on_decryptor_event)

        try:
            plain = decryptor.decrypt(frame.data)
        except EncryptionSecretMissing as exc:
            self._drop()
            if not self._missing:
                self._missing = True
                self._transform._emit(
                    self._event(ENCRYPTION_SECRET_MISSING, message=str(exc), error=exc)
                )
            return None
        except (EncryptionSecretMismatch, DecryptionInternalError) as exc:
            # The decryptor has already reported these as events.
            self._drop(replayed=getattr(exc, "reason", None) == "replayed")
            return None
        except Exception as exc:  # never raise inside aiortc
            self._drop()
            count = self._limiter.hit("unexpected")
            if count:
                self._transform._emit(
                    self._event(
                        DECRYPTION_ERROR,
                        message=f"unexpected {type(exc).__name__}: {exc}",
                        count=count,
                        error=exc,
                    )
                )
            return None
        self._missing = False

        if self._need_keyframe:
            if plain[0] & 1:  # VP8 delta frame: its reference is missing here
                self.frames_gated += 1
                self._request_keyframe()
                return None
            self._need_keyframe = False
        self.frames_delivered += 1
        return JitterFrame(plain, frame.timestamp)

    def _drop(self, *, replayed: bool = False) -> None:
        self.frames_dropped += 1
        # A replayed copy of a frame that was delivered leaves no hole in the reference
        # chain; any other drop does, so wait for the next key frame.
        if self.kind == "video" and not replayed:
            self._need_keyframe = True

    def _on_decryptor_event(self, event: DecryptorEvent) -> None:
        if event.type == ENCRYPTION_SECRET_MATCH:
            self._request_keyframe(force=True)
        self._transform._emit(
            self._event(
                event.type,
                kid=event.kid,
                message=getattr(event, "message", ""),
                count=getattr(event, "count", 1),
            )
        )

    def _request_keyframe(self, *, force: bool = False) -> None:
        """Send a PLI to the remote sender (event loop only)."""
        if self.kind != "video":
            return
        now = time.monotonic()
        if not force and now - self._last_pli < PLI_INTERVAL:
            return
        self._last_pli = now
        ssrcs = self._media_ssrcs()
        if not ssrcs:
            return
        self.keyframe_requests += 1
        for ssrc in ssrcs:
            task = asyncio.ensure_future(self.receiver._send_rtcp_pli(ssrc))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("E2EE: PLI failed: %r", task.exception())

    def _media_ssrcs(self) -> list[int]:
        """The remote sender's media SSRC, as aiortc's own ``__remoteRtp`` finds it: the
        first ``a=ssrc`` of this transceiver's m-section in the remote description.  Falls
        back to every SSRC seen recently (which may include the RTX one: a PLI to it is
        ignored by the sender)."""
        description = self._transform.pc.remoteDescription
        if description is not None and self.mid is not None:
            cached = self._ssrc_cache
            if cached is not None and cached[0] is description.sdp:
                return cached[1]
            try:
                from aiortc import sdp

                parsed = sdp.SessionDescription.parse(description.sdp)
                ssrcs: list[int] = []
                for media in parsed.media:
                    if media.rtp.muxId == self.mid and media.ssrc:
                        fid = [g for g in media.ssrc_group if g.semantic == "FID"]
                        ssrcs = [int(fid[0].items[0]) if fid else media.ssrc[0].ssrc]
                        break
            except Exception:  # pragma: no cover - the description was already applied
                ssrcs = []
            if ssrcs:
                self._ssrc_cache = (description.sdp, ssrcs)
                return ssrcs
        return [s.source for s in self.receiver.getSynchronizationSources()]


class _DecryptingQueue:
    """Stands in for a receiver's decoder ``queue.Queue``: decrypts on ``put``.

    Only ``put`` changes behaviour; everything else goes to the original queue, which is
    the one the decoder thread reads.
    """

    def __init__(self, inner: queue.Queue[Any], owner: ProtectedReceiver) -> None:
        self._inner = inner
        self._owner = owner

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:  # stop sentinel
            self._inner.put(None, block, timeout)
            return
        try:
            codec, frame = item
            plain = self._owner._process(codec, frame)
        except Exception:  # pragma: no cover - _process catches everything itself
            log.exception("E2EE: frame dropped")
            return
        if plain is not None:
            self._inner.put((codec, plain), block, timeout)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# -- The transform -----------------------------------------------------------------------


class E2eeTransform:
    """The E2EE hooks of one peer connection; made by :func:`protect`.

    ``senders`` and ``receivers`` list the protected tracks (see :class:`ProtectedSender`
    and :class:`ProtectedReceiver` for their ``encryptor``/``decryptor`` and counters).
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
        self.pc.on("signalingstatechange", self._scan)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)
        for name in (_PC_CREATE_TRANSCEIVER, "addTrack", "addTransceiver"):
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
                self._senders[key] = ProtectedSender(self, transceiver)
            if key not in self._receivers:
                self._receivers[key] = ProtectedReceiver(self, transceiver)

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


def _track_id(track: Any) -> str | None:
    return None if track is None else getattr(track, "id", None)


def _check_aiortc() -> None:
    # The hooks must fail closed: if aiortc renamed the encoder attribute, setting ours
    # would be silently ignored and aiortc would send plaintext.  Mangled attribute names
    # appear in the bytecode's co_names of the methods that use them.
    def uses(fn: Any, name: str) -> bool:
        code = getattr(fn, "__code__", None)
        return code is not None and name in code.co_names

    missing = [
        name
        for owner, name in (
            (RTCRtpSender, "_next_encoded_frame"),
            (RTCRtpSender, "_send_keyframe"),
            (RTCRtpReceiver, "_send_rtcp_pli"),
            (Vp8Encoder, "_packetize"),
        )
        if not hasattr(owner, name)
    ]
    if not uses(getattr(RTCRtpSender, "_next_encoded_frame", None), _SENDER_ENCODER):
        missing.append(f"RTCRtpSender.{_SENDER_ENCODER}")
    for method in ("__init__", "_handle_rtp_packet", "receive"):
        if not uses(getattr(RTCRtpReceiver, method, None), _RECEIVER_QUEUE):
            missing.append(f"RTCRtpReceiver.{_RECEIVER_QUEUE}")
            break
    if missing:
        raise RuntimeError(
            f"this aiortc version lacks {', '.join(missing)}: E2EE needs aiortc 1.16"
        )


def protect(
    pc: RTCPeerConnection, ring: KeyRing, *, on_event: EventCallback | None = None
) -> E2eeTransform:
    """Make ``pc`` send and receive only end-to-end encrypted VP8 and Opus under ``ring``.

    Call it right after creating the connection, before the first offer or answer.
    ``on_event(event)`` receives every :class:`E2eeEvent` on the event loop thread.
    Raises :class:`ValueError` if ``pc`` is already protected by an open transform, and
    :class:`RuntimeError` if the installed aiortc lacks a hook point.
    """
    _check_aiortc()
    if pc in _ACTIVE:
        raise ValueError("this RTCPeerConnection is already protected")
    transform = E2eeTransform(pc, ring, on_event)
    transform._attach()
    _ACTIVE[pc] = transform
    return transform
