"""The version gate and the behavioural probe (:func:`check`)."""

from __future__ import annotations

import asyncio
import functools
from fractions import Fraction
from typing import Any

import aioice.ice
import aiortc
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.codecs.base import Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from e2ee.rtc.compat.base import (
    _PC_CREATE_TRANSCEIVER,
    _RECEIVER_JITTER,
    _RECEIVER_QUEUE,
    SUPPORTED_VERSION,
    CompatError,
    _uses,
)
from e2ee.rtc.compat.media import set_sender_encoder
from e2ee.rtc.compat.relay import _SENDER_SR_FIELDS

# -- version gate and probe --------------------------------------------------------------


class _ProbeEncoder(Encoder):
    def __init__(self) -> None:
        self.packed = 0

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise AssertionError("the probe sends a packet, not a frame")

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        self.packed += 1
        return [b"e2ee-probe"], 0


class _ProbePacket:
    pts = 0
    time_base = Fraction(1, 90000)

    def __bytes__(self) -> bytes:
        return b"\x00"


class _ProbeTrack(MediaStreamTrack):
    kind = "video"

    async def recv(self) -> Any:  # returns at once: the probe never suspends
        return _ProbePacket()


class _ProbeTransport:
    state = "new"


def _probe_send_path() -> None:
    """Drive one real ``RTCRtpSender._next_encoded_frame`` with a preset encoder and check
    that aiortc used it: if it did not, an E2EE encoder set the same way would be ignored
    and frames would leave in clear."""
    sender = RTCRtpSender(_ProbeTrack(), _ProbeTransport())  # type: ignore[arg-type]
    encoder = _ProbeEncoder()
    set_sender_encoder(sender, encoder)
    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    coro = sender._next_encoded_frame(codec)
    try:
        coro.send(None)
    except StopIteration as stop:
        result = stop.value
    else:  # pragma: no cover - only if aiortc started awaiting something else here
        coro.close()
        raise CompatError("RTCRtpSender._next_encoded_frame suspended in the probe")
    if encoder.packed != 1 or getattr(result, "payloads", None) != [b"e2ee-probe"]:
        raise CompatError("RTCRtpSender no longer sends through its preset encoder")


@functools.cache
def check() -> None:
    """Raise :class:`CompatError` unless the installed aiortc has every seam above and
    still sends through a preset encoder.  Cached: the probe runs once per process."""
    version = getattr(aiortc, "__version__", "")
    if not (version == SUPPORTED_VERSION or version.startswith(SUPPORTED_VERSION + ".")):
        raise CompatError(
            f"aiortc {version or '(unknown)'} is installed; e2ee's hooks are checked against "
            f"aiortc {SUPPORTED_VERSION}.x (pip install 'aiortc>={SUPPORTED_VERSION},<1.17')"
        )
    missing = [
        f"{owner.__name__}.{name}"
        for owner, name in (
            (RTCRtpSender, "_next_encoded_frame"),
            (RTCRtpSender, "_send_keyframe"),
            (RTCRtpSender, "_retransmit"),
            (RTCRtpReceiver, "_send_rtcp_pli"),
            (RTCRtpReceiver, "_send_rtcp_nack"),
            (Vp8Encoder, "_packetize"),
            (RTCPeerConnection, _PC_CREATE_TRANSCEIVER),
        )
        if not hasattr(owner, name)
    ]
    for method in ("__init__", "_handle_rtp_packet", "receive"):
        if not _uses(getattr(RTCRtpReceiver, method, None), _RECEIVER_QUEUE):
            missing.append(f"RTCRtpReceiver.{_RECEIVER_QUEUE}")
            break
    if not _uses(getattr(RTCRtpReceiver, "_handle_rtp_packet", None), _RECEIVER_JITTER):
        missing.append(f"RTCRtpReceiver.{_RECEIVER_JITTER}")
    sr_fields = RTCRtpSender._run_rtcp.__code__.co_names
    missing += [f"RTCRtpSender.{n}" for n in _SENDER_SR_FIELDS if n not in sr_fields]
    if not _uses(aioice.ice.StunProtocol.send_data, "sendto"):
        missing.append("aioice StunProtocol.send_data -> sendto")
    if missing:
        raise CompatError(f"aiortc {version} lacks {', '.join(missing)}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # RTCRtpSender() wants an event loop: lend it a private one
        asyncio.run(_probe_on_a_loop())
    else:
        _probe_send_path()


async def _probe_on_a_loop() -> None:
    _probe_send_path()
