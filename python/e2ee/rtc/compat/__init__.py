"""Every private aiortc name this project relies on, in one place (this package: one
module per seam), behind one version gate and one behavioural probe.  Nothing else in
``e2ee`` (nor in its tests and benchmarks) names a private aiortc attribute; a test greps
the tree for them.

Why private names at all: aiortc has no encoded-frame transform API (WebRTC's
``RTCRtpScriptTransform``).  The E2EE transform and the router need three seams:

* the sender's encoder (``RTCRtpSender.__encoder``, rtcrtpsender.py:104, created lazily
  in ``_next_encoded_frame`` at :308-309), which turns a frame into RTP payloads: E2EE
  presets an encrypting one, the router a packetizer that never encodes;
* the receiver's decoder queue (``RTCRtpReceiver.__decoder_queue``, rtcrtpreceiver.py:291),
  which ``_handle_rtp_packet`` fills on the event loop (:567) with each reassembled frame,
  and its jitter buffer (``__jitter_buffer``, :295/:299, used at :551);
* the key-frame paths: ``RTCRtpSender._send_keyframe`` (called on a PLI/FIR,
  rtcrtpsender.py:277-281) and ``RTCRtpReceiver._send_rtcp_pli`` (rtcrtpreceiver.py:630),
  with ``_send_rtcp_nack`` (:619) for the router's repeated NACKs.

The E2EE transform (:mod:`e2ee.transform`) also wraps, per instance, the sender's
``_next_encoded_frame`` (to preset its encoder before each frame) and ``_send_keyframe``
(so pre-encoded tracks get ``request_keyframe()``), see :func:`hook_sender`; overrides
``Vp8Encoder._packetize`` (:class:`PacketizingVp8Encoder`); builds
``aiortc.jitterbuffer.JitterFrame`` objects for the decoder queue; and wraps the
connection's ``_RTCPeerConnection__createTransceiver`` (:func:`hook_create_transceiver`) to
protect every transceiver the moment it is created.

Checked against aiortc :data:`SUPPORTED_VERSION` (``pyproject.toml`` pins that minor).
To move to the next aiortc minor: read the diff of ``rtcrtpsender.py``,
``rtcrtpreceiver.py``, ``rtcpeerconnection.py``, ``jitterbuffer.py`` and
``codecs/vpx.py`` for every name below, update the line numbers here, widen
:data:`SUPPORTED_VERSION` and the pin together, and run the whole suite: the probe
(:func:`check`) and ``tests/unit/rtc/test_compat.py`` fail first if a seam moved.
"""

from __future__ import annotations

from e2ee.rtc.compat.base import (
    SUPPORTED_VERSION,
    CompatError,
)
from e2ee.rtc.compat.guard import (
    SendRtp,
    bypass_sender_hooks,
    check_outbound,
    hook_transport_send,
    negotiated_header_extensions,
    sender_ssrcs,
)
from e2ee.rtc.compat.ice import (
    drain_ice_reads,
    drain_now,
    ice_protocols,
    srtp_rx_session,
)
from e2ee.rtc.compat.media import (
    NextEncodedFrame,
    PacketizingVp8Encoder,
    compact_estimators,
    decoder_queue,
    depayloaded,
    hook_create_transceiver,
    hook_next_encoded_frame,
    hook_send_keyframe,
    hook_sender,
    receiver_bitrate_estimator,
    receiver_started,
    send_keyframe,
    send_nack,
    send_pli,
    sender_encoder,
    sender_frame_hook,
    sender_ssrc,
    set_decoder_queue,
    set_jitter_buffer,
    set_sender_encoder,
    set_sender_stream_id,
    slim_receiver,
    slim_receivers,
    unhook_create_transceiver,
)
from e2ee.rtc.compat.probe import (
    check,
)
from e2ee.rtc.compat.relay import (
    _SENDER_SR_FIELDS as _SENDER_SR_FIELDS,
)
from e2ee.rtc.compat.relay import (
    RtpPath,
    hook_retransmit,
    note_rtp_sent,
    rtp_path,
    send_rtp_async,
    srtp_tx_keying,
)

__all__ = [
    "SUPPORTED_VERSION",
    "CompatError",
    "NextEncodedFrame",
    "PacketizingVp8Encoder",
    "RtpPath",
    "SendRtp",
    "bypass_sender_hooks",
    "check",
    "check_outbound",
    "compact_estimators",
    "decoder_queue",
    "depayloaded",
    "drain_ice_reads",
    "drain_now",
    "hook_create_transceiver",
    "hook_next_encoded_frame",
    "hook_retransmit",
    "hook_send_keyframe",
    "hook_sender",
    "hook_transport_send",
    "ice_protocols",
    "negotiated_header_extensions",
    "note_rtp_sent",
    "receiver_bitrate_estimator",
    "receiver_started",
    "rtp_path",
    "send_keyframe",
    "send_nack",
    "send_pli",
    "send_rtp_async",
    "sender_encoder",
    "sender_frame_hook",
    "sender_ssrc",
    "sender_ssrcs",
    "set_decoder_queue",
    "set_jitter_buffer",
    "set_sender_encoder",
    "set_sender_stream_id",
    "slim_receiver",
    "slim_receivers",
    "srtp_rx_session",
    "srtp_tx_keying",
    "unhook_create_transceiver",
]
