"""The client owns its peer connections (e2ee.client.peers), with real aiortc peers on
loopback in this process (no server): a connection the remote end closes is reported
and ends its publisher or subscriber, after telling the server; one the owner closes is
not reported; the server's word ends only the streams of the current link; a track lent
to a connection outlives it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiortc import RTCPeerConnection

from e2ee.client import peers
from e2ee.client.errors import SessionError
from e2ee.client.peers import LentTrack, PeerSet, Publisher, Subscriber
from e2ee.tools.synthetic import SyntheticVideoTrack
from support.media import connect, new_pc


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


class Host:
    """What a PeerSet needs of its session: a request function that fails as told, the
    events it emits, the tasks it spawns, and the link number."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.generation = 1
        self.sent: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.tasks: list[asyncio.Future[Any]] = []
        self.set = PeerSet(
            generation=lambda: self.generation,
            request=self.request,
            emit=lambda kind, msg: self.events.append({"type": kind, **msg}),
            spawn=lambda aw: self.tasks.append(asyncio.ensure_future(aw)),
        )

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(message)
        if self.fail is not None:
            raise SessionError(self.fail, "as told")
        return {"type": "ok"}

    async def settle(self) -> None:
        while not all(t.done() for t in self.tasks):
            await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def pcs() -> AsyncIterator[Callable[[], RTCPeerConnection]]:
    made: list[RTCPeerConnection] = []

    def make() -> RTCPeerConnection:
        made.append(new_pc())
        return made[-1]

    yield make
    for pc in made:
        await pc.close()


async def pair(
    make: Callable[[], RTCPeerConnection], track: Any = None
) -> tuple[RTCPeerConnection, RTCPeerConnection]:
    local, remote = make(), make()
    local.addTrack(track if track is not None else SyntheticVideoTrack())
    await connect(local, remote)
    return local, remote


@pytest.mark.asyncio
async def test_a_connection_the_remote_end_closes_is_reported_one_closed_by_its_owner_not(
    pcs: Callable[[], RTCPeerConnection],
) -> None:
    local, remote = await pair(pcs)
    lost: list[str] = []
    owner_saw: list[str] = []
    peers.watch(local, lost.append)
    peers.watch(remote, owner_saw.append)

    await peers.close(remote)  # the owner's close: not a loss

    await until(lambda: lost == ["closed"], "the remote end's close was not reported")
    assert local.connectionState == "closed"
    assert owner_saw == []
    assert peers.closed_by_us(remote)
    assert not peers.closed_by_us(local)


@pytest.mark.asyncio
async def test_a_lost_publisher_connection_tells_the_server_and_ends_it(
    pcs: Callable[[], RTCPeerConnection],
) -> None:
    host = Host(fail="unknown_stream")  # the server no longer has it
    source = SyntheticVideoTrack()
    local, remote = await pair(pcs, LentTrack(source))
    pub = Publisher("s1", host.set.add(local), None, video=source, generation=1)
    host.set.adopt_publisher(pub)

    await remote.close()

    await until(lambda: bool(host.events), "no publisher_ended")
    await host.settle()
    assert host.sent == [{"type": "unpublish", "stream_id": "s1"}]
    [event] = host.events
    assert event["type"] == "publisher_ended"
    assert event["publisher"] is pub
    assert (event["reason"], event["failed"]) == ("connection_closed", True)
    assert host.set.publishers == {}
    assert host.set.pcs == set()
    assert source.readyState == "ended"  # ended for good: the application's track too


@pytest.mark.asyncio
async def test_a_connection_lost_with_the_link_is_left_for_the_reconnect(
    pcs: Callable[[], RTCPeerConnection],
) -> None:
    host = Host(fail="disconnected")
    local, remote = await pair(pcs)
    sub = Subscriber("s1", "sub1", host.set.add(local), None, generation=1)
    host.set.adopt_subscriber(sub)

    await remote.close()

    await until(lambda: bool(host.sent), "no unsubscribe was tried")
    await host.settle()
    assert host.sent == [{"type": "unsubscribe", "subscription_id": "sub1"}]
    assert host.events == []
    assert sub.ended is None
    assert host.set.subscribers == {"sub1": sub}
    host.generation = 2
    assert host.set.stale() == ([], [sub])


@pytest.mark.asyncio
async def test_the_server_ends_only_the_streams_of_the_current_link(
    pcs: Callable[[], RTCPeerConnection],
) -> None:
    host = Host()
    old = Publisher("s-old", host.set.add(pcs()), None, generation=1)
    sub = Subscriber("s-theirs", "sub-old", host.set.add(pcs()), None, generation=1)
    host.set.adopt_publisher(old)
    host.set.adopt_subscriber(sub)
    host.generation = 2  # reconnected: these ids were the dropped link's

    host.set.stream_destroyed("s-old", "disconnected")
    host.set.stream_destroyed("s-theirs", "disconnected")
    host.set.subscription_expired("sub-old")
    await host.settle()
    assert host.events == []
    assert old.ended is None
    assert sub.ended is None

    new = Publisher("s-new", host.set.add(pcs()), None, generation=2)
    host.set.adopt_publisher(new)
    host.set.stream_destroyed("s-new", "force_unpublished")
    await host.settle()
    assert [(e["type"], e["reason"], e["failed"]) for e in host.events] == [
        ("publisher_ended", "force_unpublished", False)
    ]
    assert new.ended == "force_unpublished"
    assert new.pc.connectionState == "closed"
    assert new.pc not in host.set.pcs


@pytest.mark.asyncio
async def test_end_all_closes_every_connection_without_events(
    pcs: Callable[[], RTCPeerConnection],
) -> None:
    host = Host()
    stray = host.set.add(pcs())  # a connection in negotiation, no publisher yet
    pub = Publisher("s1", host.set.add(pcs()), None, generation=1)
    host.set.adopt_publisher(pub)

    await host.set.end_all("disconnected")

    assert host.set.pcs == set()
    assert host.set.publishers == {}
    assert stray.connectionState == pub.pc.connectionState == "closed"
    assert pub.ended == "disconnected"
    assert host.events == []


@pytest.mark.asyncio
async def test_a_lent_track_ends_with_its_connection_and_the_source_lives_on(
    pcs: Callable[[], RTCPeerConnection],
) -> None:
    source = SyntheticVideoTrack()
    lent = LentTrack(source)
    local, _ = await pair(pcs, lent)
    assert lent.kind == "video"

    await peers.close(local)  # aiortc stops the sender's track

    assert lent.readyState == "ended"
    assert source.readyState == "live"
    frame = await asyncio.wait_for(LentTrack(source).recv(), 5)  # the next connection's
    assert (frame.width, frame.height) == (320, 240)


def test_a_lent_track_passes_key_frame_requests_to_its_source() -> None:
    class PreEncoded(SyntheticVideoTrack):
        asked = 0

        def request_keyframe(self) -> None:
            self.asked += 1

    source = PreEncoded()
    lent = LentTrack(source)
    lent.request_keyframe()
    assert source.asked == 1
    # A source that encodes (aiortc's encoder takes the PLI) has nothing to pass on.
    assert not hasattr(LentTrack(SyntheticVideoTrack()), "request_keyframe")
