"""The outbound guard's seams (the E2EE send path)."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import aiortc
from aiortc import (
    RTCDtlsTransport,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtcrtpsender import RTCEncodedFrame

from e2ee.rtc.compat.base import (
    _SENDER_ENCODER,
    CompatError,
    _uses,
)

# -- the outbound guard (appended) -------------------------------------------------------
#
# The E2EE send-path guard (e2ee.transform.guard) sits at the last step before SRTP:
# ``RTCDtlsTransport._send_rtp`` (rtcdtlstransport.py:711), through which every packet
# of every sender and receiver on the transport goes: media (``RTCRtpSender._run_rtp``,
# rtcrtpsender.py:401), retransmissions (``_retransmit``, :349, RTX SSRC
# ``RTCRtpSender._rtx_ssrc``, :100) and RTCP (rtcrtpsender.py:482, rtcrtpreceiver.py:615).
# The negotiated header extensions of a transceiver are ``RTCRtpTransceiver._headerExtensions``
# (rtcrtptransceiver.py:46, set by createOffer at rtcpeerconnection.py:651 and by
# setRemoteDescription at :932); the audio level written per packet is the encoded
# frame's ``audio_level`` (rtcrtpsender.py:392).

#: The transport's packet sender, as :func:`hook_transport_send` wraps it.
SendRtp = Callable[[bytes], Coroutine[Any, Any, None]]

_TRANSPORT_SEND = "_send_rtp"  # rtcdtlstransport.py:711
_SENDER_NEXT_FRAME = "_next_encoded_frame"  # rtcrtpsender.py:294
_TRANSPORT_HOOKS: weakref.WeakKeyDictionary[RTCDtlsTransport, list[object]] = (
    weakref.WeakKeyDictionary()
)


def hook_transport_send(
    transport: RTCDtlsTransport,
    wrap: Callable[[SendRtp], SendRtp],
    *,
    key: object | None = None,
) -> bool:
    """Replace the transport's ``_send_rtp`` (every outgoing RTP and RTCP packet of every
    sender and receiver bundled on it, before SRTP) on the instance by
    ``wrap(current)``, once per ``key`` (default: ``wrap`` itself) and transport.
    Returns whether it installed the wrapper now (``False``: this key already had)."""
    key = wrap if key is None else key
    keys = _TRANSPORT_HOOKS.setdefault(transport, [])
    if any(k is key for k in keys):
        return False
    current: SendRtp = getattr(transport, _TRANSPORT_SEND)
    setattr(transport, _TRANSPORT_SEND, wrap(current))
    keys.append(key)
    return True


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """``(media SSRC, RTX SSRC)`` of the sender (both fixed when it is created; the RTX
    one is used only if RTX is negotiated)."""
    return sender._ssrc, sender._rtx_ssrc


def negotiated_header_extensions(
    transceiver: RTCRtpTransceiver,
) -> list[RTCRtpHeaderExtensionParameters]:
    """The RTP header extensions the transceiver's sender and receiver use: after
    ``setRemoteDescription``, those both descriptions list (aiortc's
    ``find_common_header_extensions``); after ``createOffer``, all aiortc offers."""
    return list(transceiver._headerExtensions)


def bypass_sender_hooks(sender: RTCRtpSender) -> None:
    """For tests: make ``sender`` behave as if aiortc stopped calling the E2EE hooks.

    Its per-frame step becomes aiortc's own class method again (an instance override, as
    :func:`hook_sender` installs, is removed) and its encoder is reset, so that aiortc
    builds a plain one of its own at the next frame (rtcrtpsender.py:308-309).  Its
    key-frame handler and any transport hook stay."""
    sender.__dict__.pop(_SENDER_NEXT_FRAME, None)
    setattr(sender, _SENDER_ENCODER, None)


@functools.cache
def check_outbound() -> None:
    """Raise :class:`CompatError` unless the installed aiortc sends every packet through
    the seams the outbound guard hooks (see above).  Cached."""
    missing = []
    if not callable(getattr(RTCDtlsTransport, _TRANSPORT_SEND, None)):
        missing.append(f"RTCDtlsTransport.{_TRANSPORT_SEND}")
    for method in ("_run_rtp", "_retransmit", "_send_rtcp"):
        if not _uses(getattr(RTCRtpSender, method, None), _TRANSPORT_SEND):
            missing.append(f"RTCRtpSender.{method} -> {_TRANSPORT_SEND}")
    if not _uses(RTCRtpSender.__init__, "_rtx_ssrc"):
        missing.append("RTCRtpSender._rtx_ssrc")
    if not _uses(RTCRtpTransceiver.__init__, "_headerExtensions"):
        missing.append("RTCRtpTransceiver._headerExtensions")
    if not _uses(RTCEncodedFrame.__init__, "audio_level"):
        missing.append("RTCEncodedFrame.audio_level")
    if missing:
        raise CompatError(f"aiortc {aiortc.__version__} lacks {', '.join(missing)}")
