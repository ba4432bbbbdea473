"""Upstream loss repaired at the router's ingress (:mod:`e2ee.sfu.assembler`, timers and
NACKs run by :class:`e2ee.sfu.ingress.Forwarder`): a real aiortc publisher whose
transport drops chosen RTP packets before SRTP, as a lossy network would, and a real
router.  The checks are counters and the order in which the publisher sent packets,
never durations.  The publisher sends 6 frames/s so that one frame interval (167 ms)
dwarfs the router's timers (tens of ms) even on a loaded machine."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiortc import RTCConfiguration

from e2ee.rtc import compat
from e2ee.sfu import Router
from e2ee.tools.synthetic import SyntheticVideoTrack
from support.media import new_pc
from support.router import publish, wait_connected

pytestmark = pytest.mark.timeout(40)

_RTP = struct.Struct(">BBHII")
SendRtp = Callable[[bytes], Coroutine[Any, Any, None]]


def _payload_start(data: bytes) -> int:
    """After the fixed header, the CSRCs and any header extension (RFC 3550 §5.3.1)."""
    start = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        start += 4 + 4 * struct.unpack_from(">H", data, start + 2)[0]
    return start


class Dropper:
    """The publisher's packet sender, wrapped: drops every first transmission of the
    ``target``-th video frame and the first ``drop_repairs`` retransmissions of each of
    its packets; ``log`` is what was sent, in order: ``("media", seq, ts)`` and
    ``("repair", seq, 0)``."""

    def __init__(self, ssrcs: tuple[int, int], target: int, drop_repairs: int) -> None:
        self.media, self.rtx = ssrcs
        self.target = target
        self.drop_repairs = drop_repairs
        self.timestamps: list[int] = []
        self.seen: set[int] = set()
        self.dropped: set[int] = set()
        self.repairs_dropped: dict[int, int] = {}
        self.log: list[tuple[str, int, int]] = []

    def wrap(self, send: SendRtp) -> SendRtp:
        async def send_rtp(data: bytes) -> None:
            if len(data) >= 12 and not 191 < data[1] < 224:  # RTP, not RTCP (RFC 5761 §4)
                _b0, _b1, seq, ts, ssrc = _RTP.unpack_from(data)
                if ssrc == self.rtx:  # RFC 4588 §4: the original sequence number first
                    seq = struct.unpack_from(">H", data, _payload_start(data))[0]
                if ssrc == self.rtx or (ssrc == self.media and seq in self.seen):
                    if seq in self.dropped and self.repairs_dropped.get(seq, 0) < self.drop_repairs:
                        self.repairs_dropped[seq] = self.repairs_dropped.get(seq, 0) + 1
                        return
                    self.log.append(("repair", seq, 0))
                elif ssrc == self.media:
                    self.seen.add(seq)
                    if not self.timestamps or self.timestamps[-1] != ts:
                        self.timestamps.append(ts)
                    if len(self.timestamps) == self.target:
                        self.dropped.add(seq)
                        return
                    self.log.append(("media", seq, ts))
            await send(data)

        return send_rtp

    def frames_after_target(self) -> int:
        return max(0, len(self.timestamps) - self.target)


async def _publish_with_loss(
    cleanup: list[Any], target: int, drop_repairs: int
) -> tuple[Router, Dropper]:
    router = Router(rtc_configuration=RTCConfiguration(iceServers=[]))
    cleanup.append(router)
    pub = new_pc()
    cleanup.append(pub)
    await publish(router, "alice", [SyntheticVideoTrack(320, 240, fps=6)], pub)
    sender = pub.getSenders()[0]
    dropper = Dropper(compat.sender_ssrcs(sender), target, drop_repairs)
    compat.hook_transport_send(sender.transport, dropper.wrap)
    await wait_connected(pub)
    deadline = time.monotonic() + 20
    while dropper.frames_after_target() < 3:  # the lost frame and two after it
        assert time.monotonic() < deadline, "the publisher stopped sending"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    return router, dropper


def _video_stats(router: Router) -> dict[str, Any]:
    stats: dict[str, Any] = router.stats()["streams"]["alice"]["tracks"]["0"]
    return stats


@pytest.mark.asyncio
async def test_a_frame_lost_whole_is_asked_for_before_the_next_frame(
    cleanup: list[Any],
) -> None:
    router, dropper = await _publish_with_loss(cleanup, target=8, drop_repairs=0)
    assert dropper.dropped
    lost_ts = dropper.timestamps[dropper.target - 1]
    next_ts = dropper.timestamps[dropper.target]
    log = dropper.log
    first_repair = min(
        i for i, (k, s, _) in enumerate(log) if k == "repair" and s in dropper.dropped
    )
    next_frame = min(i for i, (k, _, ts) in enumerate(log) if k == "media" and ts == next_ts)
    # Without the router's own NACK, the loss shows only when the next frame arrives
    # (aiortc NACKs on the packet after a hole): the repair would follow that frame.
    assert first_repair < next_frame, (lost_ts, log[first_repair - 2 : next_frame + 2])
    stats = _video_stats(router)
    assert stats["tail_nacks"] >= 1
    assert stats["gaps"] == 0  # repaired: no frame given up, no key frame needed


@pytest.mark.asyncio
async def test_a_lost_retransmission_is_asked_for_again(cleanup: list[Any]) -> None:
    router, dropper = await _publish_with_loss(cleanup, target=8, drop_repairs=2)
    # Each lost packet lost twice more: the repairs asked for by the router's early NACK
    # and by aiortc's NACK when the next frame showed the hole.
    assert dropper.repairs_dropped == dict.fromkeys(dropper.dropped, 2)
    repaired = {s for k, s, _ in dropper.log if k == "repair"}
    assert dropper.dropped <= repaired
    stats = _video_stats(router)
    # aiortc's receiver NACKs a hole once: without the router asking again, the frame
    # would be given up after nack_wait and subscribers would wait for a key frame.
    assert stats["gaps"] == 0
    assert stats["nacks_sent"] >= 2
    assert stats["nack_repairs"] >= len(dropper.dropped)
