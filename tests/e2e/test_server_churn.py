"""Churn through the real session server and media router leaves nothing behind.

``e2ee bench soak`` saw the server's resident size grow under churn and stay high after
everyone left.  These tests serve the real application in-process (its budgets shrunk
through ``ServerLimits``) with the real router, and churn real aiortc peers through it:
publish, subscribe and answer, an unanswered subscription that expires, a signal flood
until the server disconnects the flooder (4029), leave.  After each run the live objects
of every type that holds a peer connection or per-participant state, the server's
containers, and the asyncio tasks are back to their baseline (counted, never RSS or
time); and the server handed the memory back to the OS (:mod:`e2ee.server.memory`).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCSessionDescription

from e2ee.server.app import HUB
from e2ee.server.errors import CLOSE_RATE_LIMITED
from e2ee.server.hub import MAX_CACHED_SESSIONS, MAX_REMEMBERED_DELETIONS, Hub
from e2ee.server.limits import ServerLimits
from e2ee.server.memory import MemoryTrimmer
from e2ee.server.store import SessionRecord
from e2ee.tools.synthetic import SyntheticAudioTrack, SyntheticVideoTrack
from support.app_server import app_server
from support.media import new_pc
from support.server import Api

pytestmark = pytest.mark.timeout(180)

CYCLES = 3

#: Types (module.qualname) that must not outlive a participant.
TRACKED = (
    "aiortc.rtcpeerconnection.RTCPeerConnection",
    "aiortc.rtcdtlstransport.RTCDtlsTransport",
    "aiortc.rtcicetransport.RTCIceTransport",
    "aiortc.rtcicetransport.RTCIceGatherer",
    "aiortc.rtcrtpreceiver.RTCRtpReceiver",
    "aiortc.rtcrtpsender.RTCRtpSender",
    "aiortc.rate.RemoteBitrateEstimator",
    "aioice.ice.Connection",
    "e2ee.sfu.router.Router",
    "e2ee.sfu.router._Stream",
    "e2ee.sfu.router._Subscription",
    "e2ee.sfu.ingress.Forwarder",
    "e2ee.sfu.egress.RelayTrack",
    "e2ee.sfu.keyframes.PliScheduler",
    "e2ee.server.connection.Connection",
    "e2ee.server.rooms.Room",
    "e2ee.server.rooms.Stream",
    "e2ee.server.rooms.Subscription",
    "e2ee.server.signaling.Session",
    "e2ee.server.limits.RateLimiter",
)


def live_objects() -> dict[str, int]:
    gc.collect()
    counts = collections.Counter(
        f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
    )
    out = {name: counts[name] for name in TRACKED}
    # aiortc's decoder threads (one per receiver); the loop's executor pool may grow.
    out["threads"] = sum(1 for t in threading.enumerate() if not t.name.startswith("asyncio_"))
    return out


def containers(hub: Hub) -> dict[str, int]:
    """The sizes of the server's per-participant containers."""
    sizes = {"rooms": len(hub.rooms), "cached_sessions": hub.cached_sessions}
    for room in hub.rooms.values():  # none once everyone left; listed if a room lingers
        sizes |= {
            "connections": len(room.connections),
            "streams": len(room.streams),
            "subscriptions": len(room.subscriptions),
            "subscribing": len(room.subscribing),
        }
        router = room.router_if_any
        if router is not None:
            stats = router.stats()
            sizes |= {
                "router_streams": len(stats["streams"]),
                "router_subscriptions": len(stats["subscriptions"]),
            }
    return sizes


async def eventually(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def churn_once(api: Api, sid: str) -> None:
    """One participant publishes, another subscribes (answered, then one unanswered that
    expires), a third floods signals until disconnected; then all leave."""
    publisher, subscriber = await api.join(sid), await api.join(sid, "subscriber")
    flooder = await api.join(sid, "subscriber")
    video, audio = SyntheticVideoTrack(160, 120), SyntheticAudioTrack()
    pub_pc, sub_pc = new_pc(), new_pc()
    try:
        pub_pc.addTransceiver(video, direction="sendonly")
        pub_pc.addTransceiver(audio, direction="sendonly")
        await pub_pc.setLocalDescription(await pub_pc.createOffer())
        reply = await publisher.request(
            {"type": "publish", "sdp": pub_pc.localDescription.sdp}, timeout=30
        )
        assert reply["type"] == "answer", reply
        await pub_pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        stream_id = reply["stream_id"]

        offer = await subscriber.request({"type": "subscribe", "stream_id": stream_id}, 30)
        assert offer["type"] == "offer", offer
        await sub_pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await sub_pc.setLocalDescription(await sub_pc.createAnswer())
        answered = await subscriber.request(
            {
                "type": "answer",
                "subscription_id": offer["subscription_id"],
                "sdp": sub_pc.localDescription.sdp,
            },
            30,
        )
        assert answered["type"] == "ok", answered
        assert await eventually(lambda: sub_pc.connectionState == "connected")

        unanswered = await subscriber.request({"type": "subscribe", "stream_id": stream_id}, 30)
        assert unanswered["type"] == "offer", unanswered
        expired = await subscriber.event("subscription_expired", timeout=30)
        assert expired["subscription_id"] == unanswered["subscription_id"]

        flood = json.dumps({"type": "signal", "kind": "flood"})
        for _ in range(150):  # 40 in the burst, then refusals until the strikes run out
            await flooder.send_raw(flood)
        assert await flooder.wait_closed(30) == CLOSE_RATE_LIMITED
    finally:
        for peer in (publisher, subscriber, flooder):
            await peer.close()
        await pub_pc.close()
        await sub_pc.close()
        video.stop()
        audio.stop()


def counting(calls: list[int]) -> Callable[[], int]:
    """A stand-in for ``malloc_trim(0)`` that records its calls."""

    def trim() -> int:
        calls.append(1)
        return 1

    return trim


async def back_to(baseline: dict[str, int]) -> dict[str, tuple[int, int]]:
    """``{type: (baseline, now)}`` of the types still above ``baseline`` once settled."""
    leftover: dict[str, tuple[int, int]] = {}

    def settled() -> bool:
        leftover.clear()
        now = live_objects()
        leftover.update({k: (baseline[k], n) for k, n in now.items() if n > baseline[k]})
        return not leftover

    await eventually(settled)
    return leftover


@pytest.mark.asyncio
async def test_churn_leaves_no_live_objects_and_trims(tmp_path: Path) -> None:
    limits = ServerLimits(pending_subscription_seconds=3.0)  # answered well within
    async with (
        aiohttp.ClientSession() as http,
        app_server(tmp_path, limits=limits, fake_router=False) as server,
    ):
        hub = server.app[HUB]
        hub.trimmer.close()
        trims: list[int] = []
        hub.trimmer = MemoryTrimmer(0.2, trim=counting(trims))
        api = Api(server, http)
        sid = (await api.create_session())["id"]
        await churn_once(api, sid)  # warm-up: imports, caches, a first room
        assert await eventually(lambda: not hub.rooms)
        api.peers.clear()  # the client's own bookkeeping, not the server's
        empty_objects, empty_tasks = live_objects(), len(asyncio.all_tasks())

        # A participant stays throughout, as in the soak: the room and its router live
        # on while the others churn, so nothing is freed by a router closing.
        anchor = await api.join(sid, "subscriber")
        await churn_once(api, sid)
        base_objects, base_containers = live_objects(), containers(hub)
        assert base_containers["router_streams"] == 0, base_containers
        base_tasks = len(asyncio.all_tasks())
        for _ in range(CYCLES):
            await churn_once(api, sid)
        assert await eventually(lambda: len(asyncio.all_tasks()) <= base_tasks), [
            t.get_coro() for t in asyncio.all_tasks()
        ]
        assert await back_to(base_objects) == {}, "live objects (baseline, now)"
        assert containers(hub) == base_containers
        assert hub.trimmer.trims >= 1  # closed peer connections: a trim (a fake one here)

        # Everyone left: the room, its router and all their objects are gone.
        trims_before = hub.trimmer.trims
        await anchor.close()
        api.peers.clear()
        assert await eventually(lambda: not hub.rooms), containers(hub)
        assert await eventually(lambda: len(asyncio.all_tasks()) <= empty_tasks)
        assert await back_to(empty_objects) == {}, "live objects (baseline, now)"
        assert hub.cached_sessions <= 1
        assert await eventually(lambda: hub.trimmer.trims > trims_before)
        assert hub.trimmer.trims == len(trims)


@pytest.mark.asyncio
async def test_memory_trimmer_coalesces_requests() -> None:
    calls: list[int] = []
    trimmer = MemoryTrimmer(0.05, trim=counting(calls))
    for _ in range(100):
        trimmer.request()
    assert await eventually(lambda: trimmer.trims == 1, timeout=10)
    await asyncio.sleep(0.2)
    assert calls == [1]  # 100 requests, one trim
    trimmer.request()
    assert await eventually(lambda: trimmer.trims == 2, timeout=10)
    trimmer.request()
    trimmer.close()  # cancelled before it ran
    await asyncio.sleep(0.2)
    assert trimmer.trims == 2
    assert MemoryTrimmer().available  # glibc here: the real malloc_trim is found


@pytest.mark.asyncio
async def test_memory_trimmer_comes_sooner_when_a_room_empties() -> None:
    trimmer = MemoryTrimmer(3600.0, trim=lambda: 1)
    trimmer.request()  # due in an hour
    trimmer.request(emptied=True)  # a room ended: collect and trim within a second
    assert await eventually(lambda: trimmer.trims == 1, timeout=30)
    assert trimmer.collections == 1
    trimmer.close()


@pytest.mark.asyncio
async def test_memory_trimmer_never_collects_while_others_have_media() -> None:
    busy = [True]
    trimmer = MemoryTrimmer(3600.0, trim=lambda: 1, idle=lambda: not busy[0])
    trimmer.request(emptied=True)  # a room ended while another still has media
    assert await eventually(lambda: trimmer.trims == 1, timeout=30)
    assert trimmer.collections == 0  # no full collection on the loop: trimmed only
    busy[0] = False
    trimmer.request(emptied=True)
    assert await eventually(lambda: trimmer.trims == 2, timeout=30)
    assert trimmer.collections == 1
    trimmer.close()


def _record(session_id: str) -> SessionRecord:
    return SessionRecord(session_id, "routed", False, None, None, 10, 0.0)


@pytest.mark.asyncio
async def test_session_cache_is_bounded(tmp_path: Path) -> None:
    async with app_server(tmp_path) as server:
        hub = server.app[HUB]
        live = _record("live")
        hub.remember(live)
        hub.room(live)  # a session with a live room keeps its record
        for i in range(3 * MAX_CACHED_SESSIONS):
            hub.remember(_record(f"s{i}"))
        assert hub.cached_sessions <= MAX_CACHED_SESSIONS
        assert await hub.session("live") is live
        await hub.retire(hub.rooms["live"])


@pytest.mark.asyncio
async def test_deleted_sessions_remembered_are_bounded(tmp_path: Path) -> None:
    async with app_server(tmp_path) as server:
        hub = server.app[HUB]
        for i in range(MAX_REMEMBERED_DELETIONS + 100):
            hub.forget(f"d{i}", deleted=True)
        assert hub.remembered_deletions == MAX_REMEMBERED_DELETIONS
        # The newest still guard a racing read; the oldest are left to the store.
        record = _record(f"d{MAX_REMEMBERED_DELETIONS + 99}")
        await hub.store.create_session(record)
        assert await hub.session(record.id) is None
        old = _record("d0")
        await hub.store.create_session(old)
        assert await hub.session(old.id) == old
