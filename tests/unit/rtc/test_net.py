"""ICE candidates stay on the addresses allowed (loopback in tests)."""

from __future__ import annotations

import re

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from e2ee.rtc import net


@pytest.mark.asyncio
async def test_tests_offer_loopback_only() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    candidates = set(re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ host", sdp))
    assert candidates == {"127.0.0.1"}


def test_restrict_filters_by_family_and_refuses_nonsense() -> None:
    before = aioice.ice.get_host_addresses
    try:
        net.restrict_ice_addresses(["127.0.0.1", "::1"])
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(False, True) == ["::1"]
        with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
            net.restrict_ice_addresses(["localhost"])
        with pytest.raises(ValueError, match="at least one"):
            net.restrict_ice_addresses([])
    finally:
        aioice.ice.get_host_addresses = before
