"""Senders, receivers, peer connections and the packetizing encoder: the seams of
the E2EE transform and the router (see :mod:`e2ee.rtc.compat`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import (
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc import rate as aiortc_rate
from aiortc.codecs.base import Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from e2ee.rtc.compat.base import (
    _PC_CREATE_TRANSCEIVER,
    _RECEIVER_ESTIMATOR,
    _RECEIVER_JITTER,
    _RECEIVER_QUEUE,
    _RECEIVER_THREAD,
    _SENDER_ENCODER,
)
from e2ee.rtc.rate import CompactRateCounter

# -- senders -----------------------------------------------------------------------------


def sender_encoder(sender: RTCRtpSender) -> Encoder | None:
    """The sender's encoder, ``None`` before its first frame."""
    encoder: Encoder | None = getattr(sender, _SENDER_ENCODER)
    return encoder


def set_sender_encoder(sender: RTCRtpSender, encoder: Encoder) -> None:
    """Make ``sender`` use ``encoder`` for its next frames (aiortc creates its own only
    while the attribute is ``None``)."""
    setattr(sender, _SENDER_ENCODER, encoder)


NextEncodedFrame = Callable[[RTCRtpCodecParameters], Coroutine[Any, Any, Any]]


def hook_next_encoded_frame(
    sender: RTCRtpSender, wrap: Callable[[NextEncodedFrame], NextEncodedFrame]
) -> NextEncodedFrame:
    """Replace ``sender._next_encoded_frame`` (rtcrtpsender.py:294; ``_run_rtp`` calls it
    once per frame, :371) on the instance by ``wrap(original)``; return the original."""
    original: NextEncodedFrame = sender._next_encoded_frame
    sender._next_encoded_frame = wrap(original)  # type: ignore[method-assign,assignment]
    return original


def hook_send_keyframe(sender: RTCRtpSender, replacement: Callable[[], None]) -> Callable[[], None]:
    """Replace ``sender._send_keyframe`` (called on a PLI or FIR, rtcrtpsender.py:277-281)
    on the instance; return the original (bound) method."""
    original: Callable[[], None] = sender._send_keyframe
    sender._send_keyframe = replacement  # type: ignore[method-assign]
    return original


def send_keyframe(sender: RTCRtpSender) -> None:
    """Ask ``sender``'s encoder for a key frame, as a PLI would (the instance's current
    ``_send_keyframe``, hooked or not)."""
    sender._send_keyframe()


def sender_ssrc(sender: RTCRtpSender) -> int:
    """The SSRC of the sender's media packets (RTX uses another)."""
    ssrc: int = sender._ssrc
    return ssrc


def set_sender_stream_id(sender: RTCRtpSender, stream_id: str) -> None:
    """The MediaStream id the sender announces (``a=msid:<stream_id> <track id>``)."""
    sender._stream_id = stream_id


def hook_sender(
    sender: RTCRtpSender, next_frame: NextEncodedFrame, keyframe: Callable[[], None]
) -> tuple[NextEncodedFrame, Callable[[], None]]:
    """Install ``next_frame`` as the sender's per-frame step
    (:func:`hook_next_encoded_frame`) and ``keyframe`` as its key-frame handler
    (:func:`hook_send_keyframe`), on the instance; return both originals."""
    original_next = hook_next_encoded_frame(sender, lambda _original: next_frame)
    return original_next, hook_send_keyframe(sender, keyframe)


def sender_frame_hook(sender: RTCRtpSender) -> NextEncodedFrame:
    """The sender's current per-frame step (``_next_encoded_frame``, hooked or not)."""
    step: NextEncodedFrame = sender._next_encoded_frame
    return step


# -- receivers ---------------------------------------------------------------------------


def decoder_queue(receiver: RTCRtpReceiver) -> Any:
    """The receiver's decoder queue: ``put((codec, JitterFrame))`` per frame, ``None`` to
    stop the decoder thread."""
    return getattr(receiver, _RECEIVER_QUEUE)


def set_decoder_queue(receiver: RTCRtpReceiver, queue: Any) -> None:
    """Replace the decoder queue; ``queue`` needs ``put``, ``put_nowait`` and ``get``."""
    setattr(receiver, _RECEIVER_QUEUE, queue)


def receiver_started(receiver: RTCRtpReceiver) -> bool:
    """Whether ``receive()`` already started the decoder thread (rtcrtpreceiver.py:406)."""
    return getattr(receiver, _RECEIVER_THREAD) is not None


def depayloaded(packet: Any) -> bytes:
    """The codec payload of an RTP packet handed to a jitter buffer: aiortc stores it on
    the packet as ``_data`` before ``JitterBuffer.add`` (rtcrtpreceiver.py:543)."""
    data: bytes = packet._data
    return data


def set_jitter_buffer(receiver: RTCRtpReceiver, buffer: Any) -> None:
    """Replace the receiver's jitter buffer (an ``aiortc.jitterbuffer.JitterBuffer``)."""
    setattr(receiver, _RECEIVER_JITTER, buffer)


def receiver_bitrate_estimator(receiver: RTCRtpReceiver) -> Any:
    """The receiver's remote bitrate estimator (``None``: it sends no REMB)."""
    return getattr(receiver, _RECEIVER_ESTIMATOR, None)


def slim_receiver(receiver: RTCRtpReceiver, *, receives: bool) -> None:
    """Shrink what a video receiver keeps for the cyclic garbage collector to walk: its
    remote bitrate estimator (rtcrtpreceiver.py:301, fed at :482 only by packets with
    abs-send-time) holds a 1,000-object rate counter (:mod:`e2ee.rtc.rate`).  A receiver
    that will never get media (``receives=False``: the router's side of a subscription)
    loses the estimator, which aiortc treats as "no REMB" (it checks for ``None``); one
    that does keeps it, with the counter in flat arrays.  Audio receivers have none."""
    estimator = getattr(receiver, _RECEIVER_ESTIMATOR, None)
    if estimator is None:
        return
    if not receives:
        setattr(receiver, _RECEIVER_ESTIMATOR, None)
        return
    counter = estimator.incoming_bitrate
    if not isinstance(counter, CompactRateCounter):  # not made by compact_estimators
        estimator.incoming_bitrate = CompactRateCounter(counter._window_size, counter._scale)


def slim_receivers(pc: RTCPeerConnection, *, receives: bool) -> None:
    """:func:`slim_receiver` for every transceiver ``pc`` has so far."""
    for transceiver in pc.getTransceivers():
        slim_receiver(transceiver.receiver, receives=receives)


def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> Coroutine[Any, Any, None]:
    """Send an RTCP PLI for ``media_ssrc`` (rtcrtpreceiver.py:630; it catches
    ``ConnectionError`` itself)."""
    coro: Coroutine[Any, Any, None] = receiver._send_rtcp_pli(media_ssrc)
    return coro


def send_nack(
    receiver: RTCRtpReceiver, media_ssrc: int, lost: list[int]
) -> Coroutine[Any, Any, None]:
    """Send an RTCP generic NACK (RFC 4585 §6.2.1) for the sequence numbers ``lost`` of
    ``media_ssrc`` (rtcrtpreceiver.py:619; it catches ``ConnectionError`` itself)."""
    coro: Coroutine[Any, Any, None] = receiver._send_rtcp_nack(media_ssrc, lost)
    return coro


# -- peer connections --------------------------------------------------------------------


def hook_create_transceiver(
    pc: RTCPeerConnection, after: Callable[[], None]
) -> Callable[..., Any] | None:
    """Call ``after()`` each time ``pc`` creates a transceiver: its private
    ``__createTransceiver`` (the one place aiortc creates them, for ``addTrack``,
    ``addTransceiver`` and ``setRemoteDescription``) is wrapped on the instance.  Returns
    the wrapper (to remove it with ``del pc.__dict__[NAME]``), or ``None`` if this aiortc
    has no such method."""
    original = getattr(pc, _PC_CREATE_TRANSCEIVER, None)
    if original is None:
        return None

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        after()
        return result

    setattr(pc, _PC_CREATE_TRANSCEIVER, wrapper)
    return wrapper


def compact_estimators(pc: RTCPeerConnection) -> None:
    """Make every video receiver ``pc`` creates from now on start with its bitrate
    counter already flat (:mod:`e2ee.rtc.rate`), instead of building aiortc's 1,000-object
    one that :func:`slim_receiver` then throws away: 0.5 ms and a young collection per
    receiver, paid on the loop at every publish and subscribe (``e2ee bench soak``).

    ``RemoteBitrateEstimator()`` (rate.py:510) looks ``RateCounter`` up in its module at
    call time; the name is swapped only for the duration of the synchronous
    ``__createTransceiver`` call, on this instance, and restored even if it raises."""
    original = getattr(pc, _PC_CREATE_TRANSCEIVER, None)
    if original is None:
        return

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        saved = aiortc_rate.RateCounter
        aiortc_rate.RateCounter = CompactRateCounter  # type: ignore[misc, assignment]
        try:
            return original(*args, **kwargs)
        finally:
            aiortc_rate.RateCounter = saved  # type: ignore[misc]

    setattr(pc, _PC_CREATE_TRANSCEIVER, wrapper)


def unhook_create_transceiver(pc: RTCPeerConnection, wrapper: Callable[..., Any]) -> None:
    """Undo :func:`hook_create_transceiver` (if ``wrapper`` is still installed)."""
    if pc.__dict__.get(_PC_CREATE_TRANSCEIVER) is wrapper:
        del pc.__dict__[_PC_CREATE_TRANSCEIVER]


# -- encoders ----------------------------------------------------------------------------


class PacketizingVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder with a public seam between encoding and packetization.

    aiortc calls the (class)method ``_packetize(buffer, picture_id)`` with each whole
    encoded VP8 frame, on both the ``encode()`` path (raw frames) and the ``pack()`` path
    (pre-encoded ``av.Packet``-like objects), vpx.py.  Subclasses override
    :meth:`transform_frame`: return the bytes to packetize instead, or ``None`` to send
    nothing for this frame.
    """

    def transform_frame(self, frame: bytes) -> bytes | None:
        return frame

    def _packetize(self, buffer: bytes, picture_id: int) -> list[bytes]:  # type: ignore[override]
        # An instance override of the base classmethod: both paths call self._packetize,
        # and super() still reaches the base implementation.
        if not buffer:
            return []
        out = self.transform_frame(buffer)
        if out is None:
            return []
        payloads: list[bytes] = super()._packetize(out, picture_id)
        return payloads
