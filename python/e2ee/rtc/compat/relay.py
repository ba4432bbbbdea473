"""The router's packet relay: a sender's SRTP session and socket, NACKs, SR counters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import aioice.ice
from aiortc import (
    RTCDtlsTransport,
    RTCRtpSender,
)

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
