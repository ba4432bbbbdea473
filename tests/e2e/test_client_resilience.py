"""The Python client owns its peer connections and survives faults (issue 11, case 12).

Against the real server with its router (fixtures ``server``/``api``), with real aiortc
peers, synthetic media and the E2EE transform:

* a stream the server ends (force-unpublished) closes the publisher's and every
  subscriber's peer connection, with ``publisher_ended`` / ``subscriber_ended``;
  ``disconnect()`` leaves no peer connection open;
* a subscribe that fails on the client after the server made the subscription ends it
  on the server too (the router holds no subscription afterwards);
* a WebSocket dropped under the client (a TCP proxy, tests/support/proxy.py, resets it)
  makes it reconnect, subscribe again or publish the same tracks again, and decrypted
  frames flow again; a moderator's removal is final; a server that stays unreachable
  makes it give up after its limit with ``reconnect_failed``;
* the network path itself breaks (100 % loss on the loopback of the test's own network
  namespace, ``tc``): the heartbeat notices, both clients reconnect, media resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiortc import RTCPeerConnection

import e2ee.client.session as session_module
from e2ee.client import ReconnectPolicy, Session, Subscriber
from e2ee.server.tokens import LEEWAY
from e2ee.tools.synthetic import FrameCollector, SyntheticAudioTrack, SyntheticVideoTrack
from e2ee.wire.params import SessionPolicy
from support.proxy import TcpProxy
from support.server import Api, ServerProcess

SECRET = "a shared secret for the test"
TEST_POLICY = SessionPolicy(min_iterations=1000)
#: Quick retries for the tests (the defaults start at 0.5 s and go up to 30 s).
QUICK = ReconnectPolicy(initial_delay=0.05, max_delay=0.5, max_attempts=20, connect_timeout=5)


class Events:
    """Every event of the given types a session emits, in order."""

    def __init__(self, session: Session, *kinds: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.t0 = time.monotonic()
        for kind in kinds:
            session.on(kind, self._add)

    def _add(self, event: dict[str, Any]) -> None:
        self.seen.append(event)
        self.times.append(time.monotonic() - self.t0)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["type"] == kind]

    async def wait(self, kind: str, count: int = 1, timeout: float = 20.0) -> dict[str, Any]:
        return (await self.wait_all(kind, count, timeout))[count - 1]

    async def wait_all(self, kind: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.of(kind)) < count:
            assert time.monotonic() < deadline, f"no {kind!r} event {count} (saw {self.types()})"
            await asyncio.sleep(0.02)
        return self.of(kind)

    def types(self) -> list[str]:
        return [f"{e['type']}@{t:.1f}" for e, t in zip(self.seen, self.times, strict=True)]


CLIENT_EVENTS = (
    "publisher_ended",
    "subscriber_ended",
    "connection_lost",
    "reconnecting",
    "reconnected",
    "reconnect_failed",
    "republished",
    "resubscribed",
    "disconnected",
    "stream_created",
)


async def new_session(api: Api) -> str:
    status, body = await api.call("POST", "/v1/sessions", {"e2ee": True, "kdf_iterations": 1000})
    assert status == 201, body
    return str(body["id"])


@pytest_asyncio.fixture
async def make() -> AsyncIterator[Callable[..., Session]]:
    """Sessions made by the test; each is disconnected at teardown."""
    made: list[Session] = []

    def factory(url: str, api: Api, sid: str, **kw: Any) -> Session:
        token = kw.pop("token", None) or api.mint(sid, kw.pop("role", "publisher"))
        s = Session(url, sid, token, encryption_secret=SECRET, policy=TEST_POLICY, **kw)
        made.append(s)
        return s

    yield factory
    for s in made:
        with contextlib.suppress(Exception):
            await s.disconnect()


@pytest_asyncio.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[TcpProxy]:
    p = await TcpProxy(server.url).start()
    yield p
    await p.close()


async def tracks_of(sub: Subscriber, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sub.audio is None or sub.video is None:
        assert time.monotonic() < deadline, "the subscription's tracks never arrived"
        await asyncio.sleep(0.02)


async def video_frames(sub: Subscriber, count: int = 10, timeout: float = 20.0) -> FrameCollector:
    """Decoded (decrypted) video frames of ``sub``'s current connection."""
    await tracks_of(sub)
    assert sub.video is not None
    collector = FrameCollector(sub.video).start()
    assert await collector.wait_for(count, timeout=timeout), "too few good video frames"
    await collector.stop()
    return collector


async def router(api: Api, sid: str) -> dict[str, Any]:
    status, info = await api.call("GET", f"/v1/sessions/{sid}")
    assert status == 200, info
    return dict(info["router"] or {})


def media() -> dict[str, Any]:
    return {"video": SyntheticVideoTrack(), "audio": SyntheticAudioTrack()}


# -- owning peer connections ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_force_unpublished_stream_closes_every_peer_connection_of_it(
    server: ServerProcess, api: Api, make: Callable[..., Session]
) -> None:
    sid = await new_session(api)
    alice, bob = make(server.url, api, sid), make(server.url, api, sid)
    a_events, b_events = Events(alice, *CLIENT_EVENTS), Events(bob, *CLIENT_EVENTS)
    await alice.connect()
    await bob.connect()
    pub = await alice.publish(**media())
    sub = await bob.subscribe(pub.stream_id)
    await tracks_of(sub)

    status, _ = await api.call("DELETE", f"/v1/sessions/{sid}/streams/{pub.stream_id}")
    assert status == 204

    ended = await a_events.wait("publisher_ended")
    assert ended["publisher"] is pub
    assert (ended["reason"], ended["failed"]) == ("force_unpublished", False)
    assert pub.pc.connectionState == "closed"
    assert pub.ended == "force_unpublished"
    assert alice.publishers == {}
    assert alice.peer_connections == []
    gone = await b_events.wait("subscriber_ended")
    assert gone["subscriber"] is sub
    assert gone["reason"] == "force_unpublished"
    assert sub.pc.connectionState == "closed"
    assert bob.subscribers == {}
    assert bob.peer_connections == []
    assert alice.connected
    assert bob.connected


@pytest.mark.asyncio
async def test_disconnect_leaves_no_peer_connection_open(
    server: ServerProcess, api: Api, make: Callable[..., Session]
) -> None:
    sid = await new_session(api)
    alice, bob = make(server.url, api, sid), make(server.url, api, sid)
    events = Events(alice, *CLIENT_EVENTS)
    await alice.connect()
    await bob.connect()
    theirs = await bob.publish(**media())
    mine = await alice.publish(**media())
    sub = await alice.subscribe(theirs.stream_id)
    pcs = alice.peer_connections
    assert set(pcs) == {mine.pc, sub.pc}

    await alice.disconnect()

    assert [pc.connectionState for pc in pcs] == ["closed", "closed"]
    assert alice.peer_connections == []
    assert alice.publishers == {}
    assert alice.subscribers == {}
    assert alice.closed.is_set()
    assert not alice.connected
    assert events.of("reconnecting") == []
    assert events.of("connection_lost") == []
    info = await router(api, sid)
    assert list(info["streams"]) == [theirs.stream_id]
    assert info["subscriptions"] == {}


@pytest.mark.asyncio
async def test_a_subscribe_that_fails_in_the_client_ends_the_subscription_on_the_server(
    server: ServerProcess, api: Api, make: Callable[..., Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = await new_session(api)
    alice, bob = make(server.url, api, sid), make(server.url, api, sid)
    await alice.connect()
    await bob.connect()
    pub = await alice.publish(**media())
    made: list[RTCPeerConnection] = []

    class Failing(RTCPeerConnection):  # the router's offer cannot be applied
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

        async def setRemoteDescription(self, description: Any) -> None:  # noqa: N802
            raise RuntimeError("injected: the offer cannot be applied")

    monkeypatch.setattr(session_module, "RTCPeerConnection", Failing)
    with pytest.raises(RuntimeError, match="injected"):
        await bob.subscribe(pub.stream_id)

    # The server made the subscription (a router peer connection) before the client
    # failed; the client's unsubscribe ended it before subscribe() raised.
    assert [pc.connectionState for pc in made] == ["closed"]
    assert bob.peer_connections == []
    assert bob.subscribers == {}
    info = await router(api, sid)
    assert info["subscriptions"] == {}
    assert info["streams"][pub.stream_id]["subscribers"] == 0


# -- reconnecting ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_dropped_subscriber_reconnects_subscribes_again_and_decrypts_again(
    server: ServerProcess, api: Api, proxy: TcpProxy, make: Callable[..., Session]
) -> None:
    sid = await new_session(api)
    alice = make(server.url, api, sid)
    bob = make(proxy.url, api, sid, reconnect=QUICK)
    events = Events(bob, *CLIENT_EVENTS)
    await alice.connect()
    await bob.connect()
    pub = await alice.publish(**media())
    sub = await bob.subscribe(pub.stream_id)
    await video_frames(sub, 5)
    old_pc, old_id = sub.pc, sub.subscription_id

    assert proxy.drop() == 1

    lost = await events.wait("connection_lost")
    assert lost["reconnecting"] is True
    assert lost["reason"] is None
    again = await events.wait("resubscribed")
    assert again["subscriber"] is sub
    assert again["old_subscription_id"] == old_id
    assert sub.subscription_id == again["subscription_id"] != old_id
    await events.wait("reconnected")
    assert old_pc.connectionState == "closed"
    assert events.of("reconnecting")[0]["attempt"] == 1
    assert bob.subscribers == {sub.subscription_id: sub}
    assert bob.peer_connections == [sub.pc]
    collector = await video_frames(sub, 10)  # decrypted with the same keys as before
    assert collector.count(good=True) >= 10
    info = await router(api, sid)
    assert list(info["subscriptions"]) == [sub.subscription_id]  # the old one is gone


@pytest.mark.asyncio
async def test_a_dropped_publisher_reconnects_and_publishes_the_same_tracks_again(
    server: ServerProcess, api: Api, proxy: TcpProxy, make: Callable[..., Session]
) -> None:
    sid = await new_session(api)
    alice = make(proxy.url, api, sid, reconnect=QUICK)
    bob = make(server.url, api, sid)
    a_events, b_events = Events(alice, *CLIENT_EVENTS), Events(bob, *CLIENT_EVENTS)
    await alice.connect()
    await bob.connect()
    tracks = media()
    pub = await alice.publish(**tracks, name="alice-cam")
    first = await bob.subscribe(pub.stream_id)
    await video_frames(first, 5)
    old_stream, old_pc = pub.stream_id, pub.pc
    old_kids = {s["kid"] for s in pub.stats()}

    proxy.drop()

    again = await a_events.wait("republished")
    assert again["publisher"] is pub
    assert again["old_stream_id"] == old_stream
    assert pub.stream_id == again["stream_id"] != old_stream
    assert (pub.video, pub.audio) == (tracks["video"], tracks["audio"])  # the same tracks
    assert old_pc.connectionState == "closed"
    assert alice.peer_connections == [pub.pc]
    # The new connection is protected like the first, with fresh KIDs (CTR from 0 is
    # then no nonce reuse).
    assert pub.transform is not None
    await a_events.wait("reconnected")
    # The others see the old stream end and the new one appear, under the same name.
    gone = await b_events.wait("subscriber_ended")
    assert gone["subscriber"] is first
    assert first.pc.connectionState == "closed"
    created = await b_events.wait("stream_created", count=2)  # the first was the old one
    assert created["stream"]["id"] == pub.stream_id
    assert created["stream"]["name"] == "alice-cam"
    collector = await video_frames(await bob.subscribe(pub.stream_id), 10)
    assert collector.count(good=True) >= 10
    new_kids = {s["kid"] for s in pub.stats()}
    assert len(new_kids) == 2
    assert not new_kids & old_kids
    assert all(s["frames_encrypted"] > 0 for s in pub.stats())


@pytest.mark.asyncio
async def test_a_moderator_removal_is_final(
    server: ServerProcess, api: Api, make: Callable[..., Session]
) -> None:
    sid = await new_session(api)
    alice = make(server.url, api, sid, reconnect=QUICK)
    events = Events(alice, *CLIENT_EVENTS)
    await alice.connect()
    pub = await alice.publish(**media())
    cid = alice.connection["id"]

    status, _ = await api.call("DELETE", f"/v1/sessions/{sid}/connections/{cid}")
    assert status == 204

    await asyncio.wait_for(alice.closed.wait(), 10)
    assert events.of("disconnected")[0]["reason"] == "force_disconnected"
    assert events.of("connection_lost")[0]["reconnecting"] is False
    assert events.of("reconnecting") == []  # closed is set only once it stays closed
    assert pub.pc.connectionState == "closed"
    assert alice.peer_connections == []
    assert pub.ended == "force_disconnected"


@pytest.mark.asyncio
async def test_reconnecting_gives_up_after_its_limit(
    server: ServerProcess, api: Api, proxy: TcpProxy, make: Callable[..., Session]
) -> None:
    sid = await new_session(api)
    policy = ReconnectPolicy(initial_delay=0.02, max_delay=0.1, max_attempts=3, connect_timeout=5)
    alice = make(proxy.url, api, sid, reconnect=policy)
    events = Events(alice, *CLIENT_EVENTS)
    await alice.connect()
    pub = await alice.publish(**media())
    proxy.refusing = True  # the server is unreachable from now on

    proxy.drop()

    failed = await events.wait("reconnect_failed")
    assert failed["attempts"] == 3
    assert [e["attempt"] for e in events.of("reconnecting")] == [1, 2, 3]
    assert all(0 <= e["delay"] <= 0.1 for e in events.of("reconnecting"))
    assert proxy.accepted > 1  # it did try (aiohttp may retry a reset connection once)
    assert alice.closed.is_set()
    assert alice.peer_connections == []
    assert pub.pc.connectionState == "closed"
    assert pub.ended == "reconnect_failed"
    assert events.of("reconnected") == []


@pytest.mark.asyncio
async def test_a_token_that_expired_meanwhile_ends_the_retries_at_once(
    server: ServerProcess, api: Api, proxy: TcpProxy, make: Callable[..., Session]
) -> None:
    sid = await new_session(api)
    start = time.time()
    # Valid for about 3 s more (the server accepts LEEWAY seconds past ``exp``).
    token = api.mint(sid, "publisher", ttl=4, now=start - LEEWAY - 1)
    alice = make(proxy.url, api, sid, token=token, reconnect=QUICK)
    events = Events(alice, *CLIENT_EVENTS)
    await alice.connect()
    await asyncio.sleep(max(0.0, start + 3.5 - time.time()))

    proxy.drop()

    failed = await events.wait("reconnect_failed")
    assert failed["attempts"] == 1
    assert "token_expired" in failed["error"]
    assert alice.closed.is_set()


# -- the network path breaks ---------------------------------------------------------------


def _only_loopback() -> bool:
    """Whether this process is in a network namespace with the loopback alone (the test
    command's ``unshare --net``): only then may a test change its qdisc."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def _tc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tc", *args], capture_output=True, text=True, check=False)


@contextlib.contextmanager
def _loss_on_loopback() -> Any:
    """100 % loss on ``lo`` while inside: netem if the kernel has it, else a FIFO of
    length 0 (every packet dropped on enqueue, the same to the sockets)."""
    for qdisc in (["netem", "loss", "100%"], ["pfifo", "limit", "0"]):
        done = _tc("qdisc", "add", "dev", "lo", "root", *qdisc)
        if done.returncode == 0:
            break
    else:
        pytest.skip(f"tc cannot add a dropping qdisc here: {done.stderr.strip()}")
    try:
        yield
    finally:
        _tc("qdisc", "del", "dev", "lo", "root")


@pytest.mark.asyncio
async def test_a_broken_network_path_is_noticed_and_media_resumes(
    server: ServerProcess, api: Api, make: Callable[..., Session]
) -> None:
    if not _only_loopback():
        pytest.skip("runs only in a network namespace with lo alone (unshare --net)")
    try:
        if _tc("qdisc", "show", "dev", "lo").returncode != 0:
            pytest.skip("tc cannot read the loopback's qdisc")
    except FileNotFoundError:
        pytest.skip("no tc (iproute2)")
    sid = await new_session(api)
    policy = ReconnectPolicy(initial_delay=0.2, max_delay=1.0, max_attempts=None, connect_timeout=2)
    alice = make(server.url, api, sid, reconnect=policy, heartbeat=1.0)
    bob = make(server.url, api, sid, reconnect=policy, heartbeat=1.0)
    a_events, b_events = Events(alice, *CLIENT_EVENTS), Events(bob, *CLIENT_EVENTS)
    await alice.connect()
    await bob.connect()
    pub = await alice.publish(**media(), name="alice-cam")
    await video_frames(await bob.subscribe(pub.stream_id), 5)

    # Bob follows alice's camera by name, as an application would: whatever stream
    # carries it after the break, he subscribes to it (or the client does it for him).
    subs: list[Subscriber] = []

    async def follow(event: dict[str, Any]) -> None:
        if event["stream"]["name"] == "alice-cam":
            subs.append(await bob.subscribe(event["stream"]["id"]))

    bob.on("stream_created", follow)
    bob.on("resubscribed", lambda e: subs.append(e["subscriber"]))

    with _loss_on_loopback():
        await a_events.wait("connection_lost", timeout=15)
        await b_events.wait("connection_lost", timeout=15)
        assert alice.peer_connections == []
        assert bob.peer_connections == []
        await a_events.wait("reconnecting", count=2)  # the first attempt found no path

    await a_events.wait("republished", timeout=30)
    await a_events.wait("reconnected", timeout=30)
    await b_events.wait("reconnected", timeout=30)
    deadline = time.monotonic() + 30
    while not any(s.stream_id == pub.stream_id and s.ended is None for s in subs):
        assert time.monotonic() < deadline, (
            f"bob never subscribed again: {b_events.types()} {a_events.types()} {subs}"
        )
        await asyncio.sleep(0.05)
    live = next(s for s in subs if s.stream_id == pub.stream_id and s.ended is None)
    collector = await video_frames(live, 10, timeout=20)
    assert collector.count(good=True) >= 10
