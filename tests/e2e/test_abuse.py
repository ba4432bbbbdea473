"""Abuse of the session server by a participant with a valid token of the weakest role:
none of it may take the session (the other participants) or the server down.

Each test is a regression test of one attack of the issue "No participant can take a
session or the server down" (the number in its name).  They run against the server with
the fake media router (``fake_api``), in a child process like every e2e test; those that
shrink a budget (``ServerLimits``) serve the real application in-process (``app_api``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from e2ee.server.limits import ServerLimits
from support.app_server import app_api
from support.server import Api, Peer, Refused, fake_offer, refused

pytestmark = pytest.mark.timeout(90)


def _frames(texts: list[str]) -> bytes:
    """Client WebSocket text frames (masked with a zero key), to go out in one write."""
    out = bytearray()
    for text in texts:
        payload = text.encode()
        n = len(payload)
        if n < 126:
            out += bytes([0x81, 0x80 | n])
        else:
            out += bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
        out += b"\x00\x00\x00\x00" + payload
    return bytes(out)


def _drain(peer: Peer) -> list[dict[str, Any]]:
    return [peer.events.get_nowait() for _ in range(peer.events.qsize())]


async def _stream(api: Api, sid: str) -> tuple[Peer, str]:
    pub = await api.join(sid, "publisher")
    reply = await pub.request({"type": "publish", "sdp": fake_offer()})
    assert reply["type"] == "answer", reply
    return pub, reply["stream_id"]


@pytest.mark.asyncio
async def test_1_signal_flood_disconnects_nobody_else(fake_api: Api) -> None:
    sid = (await fake_api.create_session())["id"]
    honest = [await fake_api.join(sid, "subscriber") for _ in range(5)]
    attacker = await fake_api.join(sid, "subscriber")
    flood = [json.dumps({"type": "signal", "kind": "x", "data": str(i)}) for i in range(3000)]
    attacker.ws._writer.transport.write(_frames(flood))  # one TCP write

    # The attacker is refused over its limit, then closed after `disconnected`.
    assert await attacker.wait_closed(10) == 4029
    seen = _drain(attacker)
    assert "rate_limited" in {e.get("code") for e in seen}
    assert {"type": "disconnected", "reason": "rate_limited"} in seen
    # Everyone else is still connected, got a bounded share of the flood, and is served.
    for peer in honest:
        gone = await peer.event("connection_destroyed")
        assert (gone["connection"]["id"], gone["reason"]) == (attacker.id, "rate_limited")
        assert not peer.ws.closed
        assert (await peer.request({"type": "ping"}))["type"] == "pong"
    await honest[0].request({"type": "signal", "kind": "k", "data": "still here"})
    for peer in honest[1:]:
        assert (await peer.event("signal"))["data"] == "still here"


@pytest.mark.asyncio
async def test_2_unanswered_subscriptions_are_bounded_and_expire(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    limits = ServerLimits(pending_subscription_seconds=1.0)
    async with app_api(tmp_path, http, limits=limits) as api:
        sid = (await api.create_session())["id"]
        _pub, stream_id = await _stream(api, sid)
        sub = await api.join(sid, "subscriber")
        subscribe = {"type": "subscribe", "stream_id": stream_id}
        replies = await asyncio.gather(*(sub.request(subscribe) for _ in range(20)))
        offers = [r for r in replies if r["type"] == "offer"]
        # At most 8 wait at once (one that expired meanwhile frees its place).
        assert 8 <= len(offers) < 20, replies
        assert {r["code"] for r in replies if r["type"] == "error"} == {"limit_exceeded"}
        _, got = await api.call("GET", f"/v1/sessions/{sid}")
        assert got["router"]["subscribe"] == len(offers)

        # Unanswered, they expire: the client is told and the router lets them go.
        expired: set[str] = set()
        deadline = time.monotonic() + 20
        while len(expired) < len(offers):
            ev = await sub.event("subscription_expired", timeout=deadline - time.monotonic())
            assert ev["stream_id"] == stream_id
            expired.add(ev["subscription_id"])
        assert expired == {o["subscription_id"] for o in offers}
        for _ in range(50):
            _, got = await api.call("GET", f"/v1/sessions/{sid}")
            if got["router"].get("unsubscribe") == len(offers):
                break
            await asyncio.sleep(0.1)
        assert got["router"]["unsubscribe"] == len(offers)
        assert [s["subscriber_count"] for s in got["streams"]] == [0]
        reply = await sub.request(
            {"type": "answer", "subscription_id": offers[0]["subscription_id"], "sdp": "v=0"}
        )
        assert reply["code"] == "unknown_subscription"
        # The place is free again, and an answered subscription does not expire.
        offer = await sub.request(subscribe)
        assert offer["type"] == "offer"
        answer = {"type": "answer", "subscription_id": offer["subscription_id"], "sdp": "v=0"}
        assert (await sub.request(answer))["type"] == "ok"
        await asyncio.sleep(2.0)  # twice the expiry
        assert all(e["type"] != "subscription_expired" for e in _drain(sub))
        _, got = await api.call("GET", f"/v1/sessions/{sid}")
        assert [s["subscriber_count"] for s in got["streams"]] == [1]


@pytest.mark.asyncio
async def test_2_unanswered_subscriptions_are_bounded_per_token(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # A long expiry: nothing expires during the test.
    async with app_api(tmp_path, http, limits=ServerLimits(pending_subscription_seconds=60)) as api:
        sid = (await api.create_session())["id"]
        _pub, stream_id = await _stream(api, sid)
        token = api.mint(sid, "subscriber")
        conns = [await Peer.connect(api, sid, token) for _ in range(4)]
        subscribe = {"type": "subscribe", "stream_id": stream_id}
        # The token's four connections ask at once, four times each: 16 > 8.
        per_conn = await asyncio.gather(
            *(asyncio.gather(*(c.request(subscribe) for _ in range(4))) for c in conns)
        )
        replies = [r for batch in per_conn for r in batch]
        offers = [r for r in replies if r["type"] == "offer"]
        refusals = [r for r in replies if r["type"] == "error"]
        assert len(offers) == 8, replies
        assert {r["code"] for r in refusals} == {"limit_exceeded"}
        assert all("of one token" in r["message"] for r in refusals), refusals
        _, got = await api.call("GET", f"/v1/sessions/{sid}")
        assert got["router"]["subscribe"] == 8
        # Another participant (another token) is not held back by it.
        other = await api.join(sid, "subscriber")
        assert (await other.request(subscribe))["type"] == "offer"
        # Answering one frees one place for the token, on any of its connections.
        owner, offer = next(
            (c, r)
            for c, batch in zip(conns, per_conn, strict=True)
            for r in batch
            if r["type"] == "offer"
        )
        answer = {"type": "answer", "subscription_id": offer["subscription_id"], "sdp": "v=0"}
        assert (await owner.request(answer))["type"] == "ok"
        others = [c for c in conns if c is not owner]
        assert (await others[0].request(subscribe))["type"] == "offer"
        assert (await others[1].request(subscribe))["code"] == "limit_exceeded"
        # A connection that leaves takes its pending subscriptions with it (others[0]
        # holds at least the one it just got).
        await others[0].close()
        for _ in range(50):
            if (await others[1].request(subscribe))["type"] == "offer":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the connection that left freed no place")


@pytest.mark.asyncio
async def test_5_one_token_cannot_fill_the_session(fake_api: Api) -> None:
    sid = (await fake_api.create_session())["id"]  # 50 participants
    token = fake_api.mint(sid, "subscriber")
    results: list[Peer | Refused] = []
    for _ in range(8):
        try:
            results.append(await Peer.connect(fake_api, sid, token))
        except Refused as exc:
            results.append(exc)
    joined = [r for r in results if isinstance(r, Peer)]
    assert len(joined) == 4
    for r in results[4:]:
        assert isinstance(r, Refused)
        assert (r.error["code"], r.close_code) == ("token_connection_limit", 4429)
    # Those 4 connections are one participant: 49 others fit.
    others = await asyncio.gather(*(fake_api.join(sid, "subscriber") for _ in range(49)))
    assert len(others) == 49
    err, code = await refused(fake_api, sid, fake_api.mint(sid, "publisher"))
    assert (err["code"], code) == ("participant_limit", 4429)
    # A moderator is still admitted (a reserve above the limit).
    mod = await fake_api.join(sid, "moderator")
    assert mod.hello["connection"]["role"] == "moderator"
    # Closing one of the token's connections frees no participant place.
    await joined[0].close()
    await asyncio.sleep(0.2)
    err, code = await refused(fake_api, sid, fake_api.mint(sid, "publisher"))
    assert err["code"] == "participant_limit"


class RawClient:
    """A WebSocket client on a plain socket that reads only when told to: while it does
    not, the kernel buffers fill and the server's queue for it grows."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, api: Api, sid: str, token: str) -> RawClient:
        host, port = api.server.url.split("//")[1].split(":")
        # A fixed receive buffer (no autotuning up to megabytes), set before connecting.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /v1/sessions/{sid}/ws?token={token} HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame from the server (never masked)."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    def close(self) -> None:
        self.writer.close()


@pytest.mark.asyncio
async def test_10_too_slow_client_is_told_before_4008(fake_api: Api) -> None:
    sid = (await fake_api.create_session())["id"]
    raw = await RawClient.connect(fake_api, sid, fake_api.mint(sid, "subscriber"))
    try:
        opcode, payload = await raw.frame()
        hello = json.loads(payload)
        victim = hello["connection"]["id"]
        # From now on the client reads nothing until the server gave up on it.
        senders = [await fake_api.join(sid, "publisher") for _ in range(20)]
        msg = json.dumps({"type": "signal", "to": victim, "kind": "bulk", "data": "z" * 8000})

        async def send(peer: Peer, stop: asyncio.Event) -> None:
            for _ in range(30):
                await peer.send_raw(msg)
            while not stop.is_set():
                await peer.send_raw(msg)
                await asyncio.sleep(0.1)

        stop = asyncio.Event()
        tasks = [asyncio.create_task(send(p, stop)) for p in senders]
        try:
            while True:
                ev = await senders[0].event("connection_destroyed", timeout=30)
                if ev["connection"]["id"] == victim:
                    break
            assert ev["reason"] == "too_slow"
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Nobody else was dropped.
        assert not any(p.ws.closed for p in senders)
        assert (await senders[1].request({"type": "ping"}))["type"] == "pong"

        last: Any = None
        while True:
            opcode, payload = await asyncio.wait_for(raw.frame(), 20)
            if opcode != 0x1:
                break
            last = json.loads(payload)
        assert last == {"type": "disconnected", "reason": "too_slow"}
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 4008
    finally:
        raw.close()


@pytest.mark.asyncio
async def test_12_subscriber_counts_are_coalesced(fake_api: Api) -> None:
    sid = (await fake_api.create_session())["id"]
    pub, stream_id = await _stream(fake_api, sid)
    subs = await asyncio.gather(*(fake_api.join(sid, "subscriber") for _ in range(30)))
    _drain(pub)
    offers = await asyncio.gather(
        *(s.request({"type": "subscribe", "stream_id": stream_id}) for s in subs)
    )
    assert all(o["type"] == "offer" for o in offers), offers
    await asyncio.sleep(1.0)
    counts = [e for e in _drain(pub) if e["type"] == "subscriber_count"]
    assert 1 <= len(counts) <= 6, counts
    assert counts[-1] == {"type": "subscriber_count", "stream_id": stream_id, "count": 30}
    assert 1 <= len([e for e in _drain(subs[0]) if e["type"] == "subscriber_count"]) <= 6


@pytest.mark.asyncio
async def test_3_oversized_sdp_is_refused_before_parsing(fake_api: Api) -> None:
    sid = (await fake_api.create_session())["id"]
    pub = await fake_api.join(sid, "publisher")
    head = fake_offer(audio=None)
    many = head + "".join(
        f"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{i}\r\na=rtpmap:96 VP8/90000\r\n"
        for i in range(140)
    )
    big = fake_offer() + "a=x-padding:" + "p" * (70 * 1024) + "\r\n"
    for sdp in (many, big):
        started = time.monotonic()
        reply = await pub.request({"type": "publish", "sdp": sdp})
        assert (reply["type"], reply["code"]) == ("error", "bad_request"), reply
        assert time.monotonic() - started < 1.0
    assert "4 media sections" in (await pub.request({"type": "publish", "sdp": many}))["message"]
    # Answers too.
    _pub, stream_id = await _stream(fake_api, sid)
    sub = await fake_api.join(sid, "subscriber")
    offer = await sub.request({"type": "subscribe", "stream_id": stream_id})
    reply = await sub.request(
        {"type": "answer", "subscription_id": offer["subscription_id"], "sdp": big}
    )
    assert (reply["type"], reply["code"]) == ("error", "bad_request")
    # A normal offer still works.
    assert (await pub.request({"type": "publish", "sdp": fake_offer()}))["type"] == "answer"


@pytest.mark.asyncio
async def test_1_a_flooder_gets_no_fresh_budget_by_reconnecting(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # 20 deliveries a second: with 5 others, a broadcast costs 5, so 4 fit in the burst.
    limits = ServerLimits(signal_delivery_rate=2.0, signal_delivery_burst=20.0)
    async with app_api(tmp_path, http, limits=limits) as api:
        sid = (await api.create_session())["id"]
        honest = [await api.join(sid, "subscriber") for _ in range(5)]
        token = api.mint(sid, "subscriber")
        flood = [json.dumps({"type": "signal", "kind": "x", "data": str(i)}) for i in range(300)]
        began = time.monotonic()
        for _ in range(3):  # flood, get closed, come back with the same token, again
            attacker = await Peer.connect(api, sid, token)
            attacker.ws._writer.transport.write(_frames(flood))
            assert await attacker.wait_closed(10) == 4029
        await asyncio.sleep(0.3)
        elapsed = time.monotonic() - began
        # What reached an honest participant: the burst once, plus the refill meanwhile
        # (each reconnection used to bring a full bucket of 40 signals).
        got = [e for e in _drain(honest[0]) if e.get("type") == "signal"]
        assert 4 <= len(got) <= 4 + int(elapsed * 2 / 5) + 1, (len(got), elapsed)
        # A signal to one connection costs one delivery: still room for it later.
        await asyncio.sleep(0.6)
        await honest[1].request({"type": "signal", "kind": "k", "data": "hi", "to": honest[0].id})
        assert (await honest[0].event("signal"))["data"] == "hi"


@pytest.mark.asyncio
async def test_4_one_token_cannot_reconnect_in_a_loop(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    limits = ServerLimits(token_connect_rate=0.5, token_connect_burst=3.0)
    async with app_api(tmp_path, http, limits=limits) as api:
        sid = (await api.create_session())["id"]
        watcher = await api.join(sid, "subscriber")
        token = api.mint(sid, "subscriber")
        for _ in range(3):
            peer = await Peer.connect(api, sid, token)
            await peer.close()
        err, code = await refused(api, sid, token)
        assert (err["code"], code) == ("rate_limited", 4429)
        # Another participant is not held back; the token may come back after a while.
        assert (await api.join(sid, "subscriber")).hello["connection"]["role"] == "subscriber"
        await asyncio.sleep(2.1)
        await (await Peer.connect(api, sid, token)).close()
        created = [e for e in _drain(watcher) if e.get("type") == "connection_created"]
        assert len(created) == 5  # 3 + the other participant + the one after the wait
