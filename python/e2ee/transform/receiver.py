"""The receive side of E2EE: :class:`ProtectedReceiver` and the decrypting queue proxy.

Receiving (per receiver)
    The receiver's decoder queue (:func:`e2ee.rtc.compat.decoder_queue`, a
    ``queue.Queue`` that aiortc fills on the event loop with each reassembled frame and
    the decoder thread drains) is replaced by a proxy whose ``put()`` decrypts each frame
    with the receiver's :class:`~e2ee.FrameDecryptor` on the event loop and forwards only
    authenticated plaintext, as an ``aiortc.jitterbuffer.JitterFrame``, to the original
    queue; the ``None`` stop sentinel passes through.  Because the proxy forwards into the
    *original* queue object, the hook is correct whether it is installed before or after
    ``receive()`` started the decoder thread (it is normally installed long before).
    Frames that fail (wrong secret, no secret, tampered, replayed, unsupported codec) are
    dropped and become events; nothing is raised inside aiortc.  For video, after any
    dropped frame (and at the start) delta frames are held back until the next key frame,
    and a PLI is sent (at most every 0.3 s, :func:`e2ee.rtc.compat.send_pli`); an
    ``encryption_secret_match`` also sends a PLI, so the picture recovers at once when the
    right secret arrives.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpTransceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from e2ee.crypto.frames import DecryptorEvent, FrameDecryptor
from e2ee.errors import DecryptionInternalError, EncryptionSecretMismatch, EncryptionSecretMissing
from e2ee.rtc import compat
from e2ee.transform.events import (
    DECRYPTION_ERROR,
    ENCRYPTION_SECRET_MATCH,
    ENCRYPTION_SECRET_MISSING,
    EVENT_INTERVAL,
    SUPPORTED_CODECS,
    E2eeEvent,
    RateLimiter,
    track_id,
)
from e2ee.transform.host import TransformHost
from e2ee.transform.ssrc import remote_media_ssrcs

__all__ = ["PLI_INTERVAL", "ProtectedReceiver"]

log = logging.getLogger(__name__)

#: Minimum interval between two PLIs one receiver sends for E2EE reasons.
PLI_INTERVAL = 0.3


class ProtectedReceiver:
    """The E2EE state of one :class:`aiortc.RTCRtpReceiver`.

    ``decryptor`` is created at the first frame for the negotiated codec (``codec``).
    ``stats`` merges the decryptor's counters with this hook's: ``frames_delivered`` (to
    aiortc's decoder), ``frames_dropped`` (failed, not delivered), ``frames_gated``
    (decrypted delta frames held back while waiting for a key frame) and
    ``keyframe_requests`` (PLIs sent).  ``state`` is the decryptor's state, ``"idle"``
    before the first frame.
    """

    def __init__(self, transform: TransformHost, transceiver: RTCRtpTransceiver) -> None:
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
        self._limiter = RateLimiter(EVENT_INTERVAL)
        self._ssrc_cache: tuple[str, list[int]] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        inner = compat.decoder_queue(self.receiver)
        compat.set_decoder_queue(self.receiver, _DecryptingQueue(inner, self))

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
            "track_id": track_id(self.receiver.track),
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
            track_id=track_id(self.receiver.track),
            **fields,
        )

    # Called by _DecryptingQueue.put on the event loop, inside aiortc's RTP handling.
    def _process(self, codec: RTCRtpCodecParameters, frame: JitterFrame) -> JitterFrame | None:
        decryptor = self._decryptor_for(codec)
        if decryptor is None:
            return None
        plain = self._decrypt(decryptor, frame.data)
        if plain is None:
            return None
        if self._need_keyframe:
            if plain[0] & 1:  # VP8 delta frame: its reference is missing here
                self.frames_gated += 1
                self._request_keyframe()
                return None
            self._need_keyframe = False
        self.frames_delivered += 1
        return JitterFrame(plain, frame.timestamp)

    def _decryptor_for(self, codec: RTCRtpCodecParameters) -> FrameDecryptor | None:
        """The decryptor for ``codec``, (re)made when the codec changes; ``None`` (frame
        dropped and reported) for a codec E2EE does not allow."""
        decryptor = self.decryptor
        mime = codec.mimeType
        if decryptor is not None and mime == self.codec:
            return decryptor
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
        return decryptor

    def _decrypt(self, decryptor: FrameDecryptor, data: bytes) -> bytes | None:
        """The plaintext of one frame, or ``None`` (dropped and reported): never raises."""
        try:
            plain = decryptor.decrypt(data)
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
        return plain

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
            task = asyncio.ensure_future(compat.send_pli(self.receiver, ssrc))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("E2EE: PLI failed: %r", task.exception())

    def _media_ssrcs(self) -> list[int]:
        """The remote sender's media SSRC (:func:`~e2ee.transform.ssrc.remote_media_ssrcs`
        on the remote description, cached per description).  Falls back to every SSRC seen
        recently (which may include the RTX one: a PLI to it is ignored by the sender)."""
        description = self._transform.pc.remoteDescription
        if description is not None and self.mid is not None:
            cached = self._ssrc_cache
            if cached is not None and cached[0] is description.sdp:
                return cached[1]
            ssrcs = remote_media_ssrcs(description.sdp, self.mid)
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
