"""A lagging event loop still reads whole bursts from each ICE socket (e2ee.rtc.compat
:func:`~e2ee.rtc.compat.drain_ice_reads`).

asyncio reads one datagram per socket per loop turn; a router whose turns are long read
its publishers' sockets slower than they send, and RFC 7675 consent checks queued behind
the media expired (``e2ee bench soak``).  Here a burst of STUN Binding requests (no
credentials: aioice answers each with a 400 at once) is sent to a real router's and a
real client-side peer connection's ICE socket, and the loop is let run three turns: all
of them must have been answered, where asyncio's own reader answers at most three.
Counted, not timed.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aioice import stun
from aiortc import RTCConfiguration, RTCPeerConnection, sdp

from e2ee.rtc import compat
from e2ee.sfu import Router
from support.media import SyntheticVideoTrack, new_pc
from support.router import publish

pytestmark = pytest.mark.timeout(40)

BURST = 12
TURNS = 3


def host_port(description: Any) -> int:
    """The UDP port of the first 127.0.0.1 host candidate of a description."""
    for media in sdp.SessionDescription.parse(description.sdp).media:
        for candidate in media.ice_candidates:
            if candidate.ip == "127.0.0.1":
                return int(candidate.port)
    raise AssertionError("no loopback candidate in the description")


async def answered_in_turns(port: int, burst: int = BURST, turns: int = TURNS) -> int:
    """Sends ``burst`` Binding requests to ``port``, lets the loop run ``turns`` turns,
    returns how many answers came back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        for _ in range(burst):
            request = stun.Message(
                message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST
            )
            sock.sendto(bytes(request), ("127.0.0.1", port))
        for _ in range(turns):
            await asyncio.sleep(0)
        answers = 0
        while True:
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                return answers
            assert stun.parse_message(data).message_class == stun.Class.ERROR
            answers += 1


@pytest.mark.asyncio
async def test_the_router_reads_a_whole_burst_from_a_publishers_socket(
    cleanup: list[Any],
) -> None:
    router = Router(rtc_configuration=RTCConfiguration(iceServers=[]))
    cleanup.append(router)
    pub = new_pc()
    cleanup.append(pub)
    await publish(router, "alice", [SyntheticVideoTrack(160, 120)], pub)
    port = host_port(pub.remoteDescription)  # the router's socket for this publisher
    assert await answered_in_turns(port) == BURST


@pytest.mark.asyncio
async def test_a_drained_peer_connection_reads_a_whole_burst(cleanup: list[Any]) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    cleanup.append(pc)
    compat.drain_ice_reads(pc)  # as e2ee.client.Session does for each connection
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    assert compat.drain_now(pc) >= 1  # idempotent: already drained at gathering
    assert await answered_in_turns(host_port(pc.localDescription)) == BURST


@pytest.mark.asyncio
async def test_without_draining_asyncio_reads_one_datagram_a_turn(cleanup: list[Any]) -> None:
    # The premise of the two tests above: they would fail with asyncio's own reader.
    pc = new_pc()
    cleanup.append(pc)
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    assert await answered_in_turns(host_port(pc.localDescription)) <= TURNS
