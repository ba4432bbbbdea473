"""Every private aiortc name this project relies on, in one place, behind one version gate
and one behavioural probe.  Nothing else in ``e2ee`` (nor in its tests and benchmarks)
names a private aiortc attribute; a test greps the tree for them.

Why private names at all: aiortc has no encoded-frame transform API (WebRTC's
``RTCRtpScriptTransform``).  The E2EE transform and the router need three seams:

* the sender's encoder (``RTCRtpSender.__encoder``, rtcrtpsender.py:104, created lazily
  in ``_next_encoded_frame`` at :308-309), which turns a frame into RTP payloads: E2EE
  presets an encrypting one, the router a packetizer that never encodes;
* the receiver's decoder queue (``RTCRtpReceiver.__decoder_queue``, rtcrtpreceiver.py:291),
  which ``_handle_rtp_packet`` fills on the event loop (:567) with each reassembled frame,
  and its jitter buffer (``__jitter_buffer``, :295/:299, used at :551);
* the key-frame paths: ``RTCRtpSender._send_keyframe`` (called on a PLI/FIR,
  rtcrtpsender.py:277-281) and ``RTCRtpReceiver._send_rtcp_pli`` (rtcrtpreceiver.py:630).

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

import asyncio
import functools
import weakref
from collections.abc import Callable, Coroutine
from fractions import Fraction
from typing import Any

import aioice.ice
import aiortc
from aiortc import (
    MediaStreamTrack,
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.codecs.base import Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters
from aiortc.rtcrtpsender import RTCEncodedFrame

from e2ee.rtc import udp

__all__ = [
    "SUPPORTED_VERSION",
    "PacketizingVp8Encoder",
    "SendRtp",
    "bypass_sender_hooks",
    "check",
    "check_outbound",
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
    "negotiated_header_extensions",
    "note_rtp_sent",
    "receiver_started",
    "rtp_path",
    "send_keyframe",
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
    "srtp_tx_keying",
]

#: The aiortc minor whose private names are checked here.
SUPPORTED_VERSION = "1.16"

# Name-mangled attributes (``self.__x`` inside class ``C`` is ``C._C__x``).
_SENDER_ENCODER = "_RTCRtpSender__encoder"  # rtcrtpsender.py:104
_RECEIVER_QUEUE = "_RTCRtpReceiver__decoder_queue"  # rtcrtpreceiver.py:291
_RECEIVER_THREAD = "_RTCRtpReceiver__decoder_thread"  # rtcrtpreceiver.py:292
_RECEIVER_JITTER = "_RTCRtpReceiver__jitter_buffer"  # rtcrtpreceiver.py:295/299
_PC_CREATE_TRANSCEIVER = "_RTCPeerConnection__createTransceiver"  # rtcpeerconnection.py:1181


class CompatError(RuntimeError):
    """The installed aiortc is not one whose private seams this module knows."""


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


def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> Coroutine[Any, Any, None]:
    """Send an RTCP PLI for ``media_ssrc`` (rtcrtpreceiver.py:630; it catches
    ``ConnectionError`` itself)."""
    coro: Coroutine[Any, Any, None] = receiver._send_rtcp_pli(media_ssrc)
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


def _uses(fn: Any, name: str) -> bool:
    code = getattr(fn, "__code__", None)
    return code is not None and name in code.co_names


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


# -- the router's packet relay --------------------------------------------------------
#
# The router relays each publisher packet's payload to every subscriber with only the RTP
# header rewritten, bypassing the sender's per-frame path (``_run_rtp``, whose
# ``track.recv()`` then just waits for the end).  It needs, per sender: the transport's
# SRTP session (``RTCDtlsTransport._tx_srtp``, rtcdtlstransport.py:496) and the ICE
# pair's UDP transport (``RTCIceTransport._connection``, rtcicetransport.py:273; aioice
# ``Connection._nominated``, ice.py:449; ``StunProtocol.send_data`` is a plain
# ``sendto``, ice.py:342); NACKs (``RTCRtpSender._retransmit``, rtcrtpsender.py:332) and
# the counters the sender's RTCP SR reports (rtcrtpsender.py:403-406, read by
# ``_run_rtcp``).

_SENDER_SR_FIELDS = (
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__octet_count",
    "_RTCRtpSender__packet_count",
)

#: ``(protect, transport, address)``: SRTP-protect one RTP packet; the ICE pair's asyncio
#: datagram transport and the remote address to ``sendto``.
RtpPath = tuple[Callable[[bytes], bytes], asyncio.DatagramTransport, Any]


def rtp_path(sender: RTCRtpSender) -> RtpPath | None:
    """The sender's synchronous path to the wire, or ``None`` while it has none: DTLS not
    connected, no nominated ICE pair, or a pair that is not plain UDP (a TURN relay:
    then :func:`send_rtp_async` is the way)."""
    dtls = sender.transport
    if dtls is None or dtls.state != "connected":
        return None
    srtp = getattr(dtls, "_tx_srtp", None)
    connection = getattr(dtls.transport, "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    if srtp is None or not nominated:
        return None
    pair: Any = nominated.get(1)
    protocol: Any = getattr(pair, "protocol", None)
    if protocol is None or type(protocol).send_data is not aioice.ice.StunProtocol.send_data:
        return None
    transport = protocol.transport
    if transport is None or transport.is_closing():
        return None
    return srtp.protect, transport, pair.remote_addr


def send_rtp_async(sender: RTCRtpSender, packet: bytes) -> Coroutine[Any, Any, None]:
    """Protect and send one RTP packet through aiortc's own transport path."""
    coro: Coroutine[Any, Any, None] = sender.transport._send_rtp(packet)
    return coro


def hook_retransmit(
    sender: RTCRtpSender, replacement: Callable[[int], Coroutine[Any, Any, None]]
) -> None:
    """Replace ``sender._retransmit(sequence_number)`` (called per NACKed packet,
    rtcrtpsender.py:284-286) on the instance."""
    sender._retransmit = replacement  # type: ignore[method-assign,assignment]


def note_rtp_sent(
    sender: RTCRtpSender, ntp_timestamp: int, rtp_timestamp: int, octets: int, packets: int
) -> None:
    """Account packets sent around ``_run_rtp``: the sender's next RTCP SR reports this
    NTP/RTP timestamp pair and adds ``octets`` and ``packets`` to its counts (RFC 3550
    §6.4.1)."""
    ntp_name, rtp_name, octet_name, packet_name = _SENDER_SR_FIELDS
    setattr(sender, ntp_name, ntp_timestamp)
    setattr(sender, rtp_name, rtp_timestamp)
    setattr(sender, octet_name, getattr(sender, octet_name) + octets)
    setattr(sender, packet_name, getattr(sender, packet_name) + packets)


def srtp_tx_keying(dtls: RTCDtlsTransport) -> tuple[str, bytes, bytes] | None:
    """``(profile name, master key, master salt)`` of the transport's sending direction,
    exported again from its DTLS session exactly as ``RTCDtlsTransport._setup_srtp``
    keys ``_tx_srtp`` (rtcdtlstransport.py:453-496: ``_ssl.get_selected_srtp_profile()``,
    ``export_keying_material(b"EXTRACTOR-dtls_srtp", ...)``, the server's write key
    being the second half, RFC 5764 §4.2; ``SRTPProtectionProfile.get_key_and_salt``,
    :58).  ``None`` until DTLS is connected, or for a profile aiortc does not list."""
    ssl = getattr(dtls, "_ssl", None)
    if ssl is None or dtls.state != "connected":
        return None
    selected = ssl.get_selected_srtp_profile()
    for profile in getattr(dtls, "_srtp_profiles", ()):
        if profile.openssl_profile == selected:
            break
    else:
        return None
    key_len, salt_len = profile.key_length, profile.salt_length
    view = ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len))
    material = bytes(profile.get_key_and_salt(view, 1 if dtls._role == "server" else 0))
    return profile.openssl_profile.decode(), material[:key_len], material[key_len:]


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


# -- draining ICE sockets -----------------------------------------------------------------
#
# asyncio's selector loop reads ONE datagram per socket per loop iteration
# (``_SelectorDatagramTransport._read_ready``), so a socket's throughput is capped at one
# packet per iteration.  A router whose iterations take 50-100 ms under load reads a
# publisher's socket at 10-20 packets a second, less than the publisher sends: the
# kernel queue fills (Recv-Q ~500 kB seen on every publisher socket in ``e2ee bench
# soak``), everything behind it, RFC 7675 consent checks included, is answered seconds
# late or dropped, and the publisher's aioice (one try, 0.5 s, 6 in a row) expires
# consent.  :func:`drain_ice_reads` makes each readiness event read up to
# :data:`e2ee.rtc.udp.DRAIN_BATCH` datagrams instead (libuv, hence uvloop, reads 32).
# aioice's sockets: ``RTCIceGatherer._connection`` (rtcicetransport.py:202), its
# ``Connection._protocols`` (aioice ice.py:451, filled by ``gather_candidates``).


def drain_ice_reads(pc: RTCPeerConnection, batch: int = udp.DRAIN_BATCH) -> None:
    """Make every ICE socket of ``pc`` read up to ``batch`` datagrams per readiness
    event, from the moment its candidates are gathered (``setLocalDescription``)."""

    @pc.on("icegatheringstatechange")
    def _gathered() -> None:
        if pc.iceGatheringState == "complete":
            drain_now(pc, batch)


def drain_now(pc: RTCPeerConnection, batch: int = udp.DRAIN_BATCH) -> int:
    """Drain the ICE sockets ``pc`` has now (idempotent); returns how many it drains."""
    count = 0
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        gatherer = dtls.transport.iceGatherer if dtls is not None else None
        connection = getattr(gatherer, "_connection", None)
        for protocol in list(getattr(connection, "_protocols", ())):
            transport = getattr(protocol, "transport", None)
            if transport is not None and udp.drain_transport(transport, batch):
                count += 1
    return count


# -- bench receivers: RTP straight off the ICE socket (appended) -------------------------
#
# ``e2ee bench router``'s light subscribers let aiortc do ICE, DTLS, RTCP and signalling
# but read each ICE socket themselves: RTP is handled where it arrives, everything else
# goes to the aioice protocol's ``datagram_received`` (ice.py:284) as asyncio would hand
# it, instead of RTP taking aioice's queue -> ``RTCDtlsTransport._recv_next``
# (rtcdtlstransport.py:626) -> SRTP -> RTP parse -> receiver.  aioice's sockets:
# ``RTCIceGatherer._connection`` (rtcicetransport.py:202), ``Connection._protocols``
# (ice.py:451).  The samples they unprotect use the DTLS transport's receive session
# ``_rx_srtp`` (rtcdtlstransport.py:377, set when DTLS completes, :487).


def ice_protocols(pc: RTCPeerConnection) -> list[asyncio.DatagramProtocol]:
    """The aioice protocol of each ICE socket ``pc`` has now (after
    ``setLocalDescription``); each has its asyncio ``transport``."""
    found: dict[int, asyncio.DatagramProtocol] = {}
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        gatherer = dtls.transport.iceGatherer if dtls is not None else None
        connection = getattr(gatherer, "_connection", None)
        for protocol in list(getattr(connection, "_protocols", ())):
            found.setdefault(id(protocol), protocol)
    return list(found.values())


def srtp_rx_session(pc: RTCPeerConnection) -> Any | None:
    """The SRTP session (``pylibsrtp.Session``) ``pc``'s bundled DTLS transport
    unprotects received packets with; ``None`` until DTLS completes."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None:
            return getattr(dtls, "_rx_srtp", None)
    return None
