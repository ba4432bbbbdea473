"""What every part of :mod:`e2ee.rtc.compat` shares: the supported aiortc minor, the
name-mangled attribute names, :class:`CompatError`."""

from __future__ import annotations

from typing import Any

#: The aiortc minor whose private names are checked here.
SUPPORTED_VERSION = "1.16"

# Name-mangled attributes (``self.__x`` inside class ``C`` is ``C._C__x``).
_SENDER_ENCODER = "_RTCRtpSender__encoder"  # rtcrtpsender.py:104
_RECEIVER_QUEUE = "_RTCRtpReceiver__decoder_queue"  # rtcrtpreceiver.py:291
_RECEIVER_THREAD = "_RTCRtpReceiver__decoder_thread"  # rtcrtpreceiver.py:292
_RECEIVER_JITTER = "_RTCRtpReceiver__jitter_buffer"  # rtcrtpreceiver.py:295/299
_RECEIVER_ESTIMATOR = "_RTCRtpReceiver__remote_bitrate_estimator"  # rtcrtpreceiver.py:297/301
_PC_CREATE_TRANSCEIVER = "_RTCPeerConnection__createTransceiver"  # rtcpeerconnection.py:1181


class CompatError(RuntimeError):
    """The installed aiortc is not one whose private seams this module knows."""


def _uses(fn: Any, name: str) -> bool:
    code = getattr(fn, "__code__", None)
    return code is not None and name in code.co_names
