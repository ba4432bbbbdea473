"""ICE sockets: reading whole bursts, and the bench's light receivers."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import (
    RTCPeerConnection,
)

from e2ee.rtc import udp

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
