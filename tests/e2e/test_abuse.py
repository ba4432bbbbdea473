"""Abuse of the session server by a participant with a valid token of the weakest role:
none of it may take the session (the other participants) or the server down.

Each test is a regression test of one attack of the issue "No participant can take a
session or the server down" (the number in its name).  They run against the server with
the fake media router (``fake_api``), in a child process like every e2e test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from typing import Any

import pytest

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
async def test_2_unanswered_subscriptions_are_bounded_and_expire(fake_api: Api) -> None:
    sid = (await fake_api.create_session())["id"]
    _pub, stream_id = await _stream(fake_api, sid)
    sub = await fake_api.join(sid, "subscriber")
    replies = [
        await sub.request({"type": "subscribe", "stream_id": stream_id}, timeout=15)
        for _ in range(20)
    ]
    offers = [r for r in replies if r["type"] == "offer"]
    assert len(offers) == 8, replies
    assert {r["code"] for r in replies if r["type"] == "error"} == {"limit_exceeded"}
    _, got = await fake_api.call("GET", f"/v1/sessions/{sid}")
    assert got["router"]["subscribe"] == 8

    # Unanswered, they expire: the client is told and the router lets them go.
    expired: set[str] = set()
    deadline = time.monotonic() + 40
    while len(expired) < 8:
        ev = await sub.event("subscription_expired", timeout=deadline - time.monotonic())
        assert ev["stream_id"] == stream_id
        expired.add(ev["subscription_id"])
    assert expired == {o["subscription_id"] for o in offers}
    await asyncio.sleep(0.5)
    _, got = await fake_api.call("GET", f"/v1/sessions/{sid}")
    assert got["router"]["unsubscribe"] == 8
    assert [s["subscriber_count"] for s in got["streams"]] == [0]
    reply = await sub.request(
        {"type": "answer", "subscription_id": offers[0]["subscription_id"], "sdp": "v=0"}
    )
    assert reply["code"] == "unknown_subscription"
    # The place is free again, and an answered subscription does not expire.
    offer = await sub.request({"type": "subscribe", "stream_id": stream_id})
    assert offer["type"] == "offer"
    ok = await sub.request(
        {"type": "answer", "subscription_id": offer["subscription_id"], "sdp": "v=0"}
    )
    assert ok["type"] == "ok"


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
    assert "16 media sections" in (await pub.request({"type": "publish", "sdp": many}))["message"]
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
