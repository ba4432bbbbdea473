"""The send side of E2EE: :class:`ProtectedSender` and the encrypting encoders.

Sending (per sender, no process-wide patch)
    The sender's per-frame step is hooked on the instance (:func:`e2ee.rtc.compat.hook_sender`).
    Before each frame it makes sure the sender's encoder
    (:func:`e2ee.rtc.compat.sender_encoder`) is an E2EE subclass of aiortc's encoder for
    the negotiated codec: :class:`~e2ee.rtc.compat.PacketizingVp8Encoder` with
    ``transform_frame`` overridden (it receives the whole VP8 frame on both the
    ``encode()`` path and the pre-encoded ``pack()`` path), ``OpusEncoder`` with
    ``encode``/``pack`` mapping each payload (one whole Opus packet) through the
    encryptor.  Encryption never raises inside aiortc: a frame that cannot be encrypted
    (no secret, frame too short) is dropped -- the encoder returns no payload, which aiortc
    skips -- and reported as an event at most once a second.  After a dropped VP8 frame the
    next encoded frame is forced to be a key frame, so receivers do not decode from a
    missing reference.  Any codec other than VP8 and Opus gets an encoder that sends
    nothing.

Key frames on a secret change
    When the ring's secret changes, every protected video sender is asked for a key frame
    (:func:`e2ee.rtc.compat.send_keyframe`), so receivers that were waiting for the new
    secret recover at once.  aiortc honours that request only on the ``encode()`` path
    (tracks returning ``av.VideoFrame``); its ``pack()`` path for pre-encoded ``av.Packet``
    tracks ignores it.  For such tracks, if the track object has a callable
    ``request_keyframe()``, it is called (on the event loop) instead -- otherwise the
    source's own key-frame interval applies.  The same holds for PLIs and FIRs from
    receivers: the sender's key-frame handler is replaced on the instance to do the same.

Nothing media-derived outside SFrame
    The per-frame hook clears the encoded frame's audio level, so aiortc never writes the
    RFC 6464 audio-level header extension, even where it was negotiated.

Fail closed
    Each sender has a :class:`~e2ee.transform.guard.GuardedTrack`: the KID of every frame
    it encrypts is allowed there before the frame is returned to aiortc, and the
    connection's :class:`~e2ee.transform.guard.OutboundGuard` (installed by the transform
    on the DTLS transports) drops any packet of this sender that is not such a frame.
    Blocked frames are counted (``frames_blocked``, ``packets_blocked``) and reported as
    ``encryption_error`` events (:class:`~e2ee.errors.EncryptionInternalError`).
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs.base import Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from e2ee.crypto.frames import FrameEncryptor
from e2ee.errors import EncryptionInternalError, EncryptionSecretMissing
from e2ee.rtc import compat
from e2ee.transform.events import (
    ENCRYPTION_ERROR,
    ENCRYPTION_SECRET_MISSING,
    EVENT_INTERVAL,
    SUPPORTED_CODECS,
    E2eeEvent,
    RateLimiter,
    track_id,
)
from e2ee.transform.guard import GuardedTrack
from e2ee.transform.host import TransformHost

__all__ = ["ProtectedSender"]

log = logging.getLogger(__name__)


class ProtectedSender:
    """The E2EE state of one :class:`aiortc.RTCRtpSender`.

    ``encryptor`` is created with the encoder, just before the first frame, for the codec
    aiortc negotiated (``codec``, e.g. ``"video/VP8"``).  ``stats`` counts frames:
    ``frames_encrypted``, ``frames_dropped`` (could not be encrypted: never sent),
    ``keyframes_encrypted`` (VP8), ``keyframe_requests`` (secret changes, KID
    collisions), and from the outbound guard (``guard``) ``frames_blocked`` and
    ``packets_blocked`` (not E2EE frames of this sender: dropped before the network).
    """

    def __init__(self, transform: TransformHost, transceiver: RTCRtpTransceiver) -> None:
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
        self._limiter = RateLimiter(EVENT_INTERVAL)
        self.guard = GuardedTrack("video" if self.kind == "video" else "audio", self._blocked)
        self._original_next, self._original_keyframe = compat.hook_sender(
            self.sender, self._next_frame, self._on_keyframe_request
        )

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "direction": "send",
            "kind": self.kind,
            "mid": self.mid,
            "track_id": track_id(self.sender.track),
            "codec": self.codec,
            "kid": None if self.encryptor is None else self.encryptor.kid,
            "frames_encrypted": self.frames_encrypted,
            "frames_dropped": self.frames_dropped,
            "keyframes_encrypted": self.keyframes_encrypted,
            "keyframe_requests": self.keyframe_requests,
            "frames_blocked": self.guard.frames_blocked,
            "packets_blocked": self.guard.packets_blocked,
        }

    async def _next_frame(self, codec: RTCRtpCodecParameters) -> Any:
        # Runs on the event loop inside aiortc's RTP loop, once per frame.  The encoder is
        # (re)placed before aiortc would create its own plaintext one.
        encoder = compat.sender_encoder(self.sender)
        if not (isinstance(encoder, _E2eeEncoderMixin) and encoder._e2ee_owner is self):
            compat.set_sender_encoder(self.sender, self._make_encoder(codec))
        frame = await self._original_next(codec)
        if frame is not None:
            # Computed from the raw audio before encryption: never let it on the wire.
            frame.audio_level = None
        return frame

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
        kid = encryptor.kid
        if kid is not None:  # the KID of this frame: allowed before aiortc sends it
            self.guard.allow_kid(kid)
        self.frames_encrypted += 1
        return wire

    def _blocked(self, reason: str) -> None:
        # The outbound guard dropped a packet of ours (event loop).
        self._report(EncryptionInternalError(f"outgoing packet blocked: {reason}"))

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
                    track_id=track_id(self.sender.track),
                    kid=None,
                    message=str(exc),
                    count=count,
                    error=exc,
                )
            )

    def _take_forced_keyframe(self) -> bool:
        force, self._force_keyframe = self._force_keyframe, False
        return force

    def _on_keyframe_request(self) -> None:
        # Replaces the sender's key-frame handler (aiortc calls it on a PLI or FIR):
        # aiortc's flag only reaches the encode() path, so pre-encoded tracks are asked
        # directly.
        self._original_keyframe()
        request = getattr(self.sender.track, "request_keyframe", None)
        if callable(request):
            self._transform._call_on_loop(request)

    def _request_keyframe(self) -> None:
        """Ask for a key frame on the next encoded frame (thread-safe)."""
        if self.kind != "video":
            return
        self.keyframe_requests += 1
        self._force_keyframe = True
        compat.send_keyframe(self.sender)


class _E2eeEncoderMixin:
    _e2ee_owner: ProtectedSender


class _E2eeVp8Encoder(_E2eeEncoderMixin, compat.PacketizingVp8Encoder):
    """aiortc's VP8 encoder, encrypting each whole frame before packetization."""

    def __init__(self, owner: ProtectedSender) -> None:
        super().__init__()
        self._e2ee_owner = owner

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        if self._e2ee_owner._take_forced_keyframe():
            force_keyframe = True
        return super().encode(frame, force_keyframe)

    def transform_frame(self, frame: bytes) -> bytes | None:
        # Never called with an empty frame (the base class sends nothing for those).
        wire = self._e2ee_owner._encrypt(frame)
        if wire is None:
            return None
        if not frame[0] & 1:
            self._e2ee_owner.keyframes_encrypted += 1
        return wire


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
