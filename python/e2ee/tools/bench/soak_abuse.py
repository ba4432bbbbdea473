"""The abusive participants of ``e2ee bench soak``: each holds a valid ``publisher`` token
of the session (the weakest role that may publish) and misbehaves, one kind at a time,
moving on to the next kind every ``abuse_phase`` seconds (participant ``i`` starts at
kind ``i``, so every kind keeps running):

``signal_flood``
    3,000 broadcast ``signal`` messages written at once, then read back; reconnects with
    the same token and repeats.  Expected: ``rate_limited`` errors and close 4029.
``subscribe_no_answer``
    ``subscribe`` to every stream over and over, never answering the offers.  Expected:
    ``limit_exceeded`` past 8 pending, ``subscription_expired`` after 15 s,
    ``rate_limited``.
``publish_churn``
    ``publish``/``unpublish`` of a real offer as fast as the server answers.  Expected:
    ``rate_limited``.
``oversized``
    An offer with 140 media sections, one over 64 KiB, one with a format-less ``m=``
    line, a 300 KiB message and a 1.1 MiB frame.  Expected: ``bad_request``,
    ``message_too_large``, close 1009.
``reconnect_loop``
    Six connections at once with the same token, closed and opened again.  Expected:
    ``token_connection_limit`` (close 4429) for the ones past 4.
``slowloris``
    50 TCP connections that send a request head one byte every 2 s, and one malformed
    request.  Expected: the server closes them (header timeout) and answers the
    malformed one 400.

Every answer is counted by kind and outcome: ``ok``, an error ``code``, ``close:CODE``,
``refused:CODE`` (at connect), an event, ``closed_by_server`` (slowloris); ``oversized``
labels each case (``140_sections/bad_request``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

__all__ = ["KINDS", "AbuseWorker", "rejections"]

log = logging.getLogger("e2ee.tools.bench.soak")

KINDS = (
    "signal_flood",
    "subscribe_no_answer",
    "publish_churn",
    "oversized",
    "reconnect_loop",
    "slowloris",
)
#: Outcomes that are not the server refusing something.
_ACCEPTED = frozenset(
    {"ok", "offer", "answer", "connected", "sent", "close:1000", "closed_by_client"}
)


def rejections(counts: dict[str, int]) -> int:
    """How many of ``counts`` (outcome -> n) are the server refusing or ending something."""
    # A labelled outcome ("no_formats/answer") is judged by its last part.
    return sum(n for k, n in counts.items() if k.rsplit("/", 1)[-1] not in _ACCEPTED)


async def _offer(media_sections: int = 2) -> str:
    """A real aiortc offer (sendonly audio and video), its candidates on loopback."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        for i in range(media_sections):
            pc.addTransceiver("audio" if i % 2 == 0 else "video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


class _Conn:
    """One raw signaling WebSocket: sends without waiting, counts what comes back."""

    def __init__(self, ws: Any, count: Counter[str], streams: set[str]) -> None:
        self.ws = ws
        self.count = count
        self.streams = streams
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())
        self._n = 0
        self._closing = False
        #: Prefixed to the outcome of each reply (which case of a kind it answered).
        self.label = ""

    async def _read(self) -> None:
        import aiohttp

        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            kind = data.get("type")
            if kind == "stream_created":
                self.streams.add(data["stream"]["id"])
            elif kind == "stream_destroyed":
                self.streams.discard(data["stream"]["id"])
            elif kind in ("subscription_expired", "disconnected"):
                self.count[f"{kind}:{data.get('reason', '')}".rstrip(":")] += 1
            if "id" in data:
                self.count[self.label + str(data.get("code", kind))] += 1
                self.replies.put_nowait(data)
        self.count["closed_by_client" if self._closing else f"close:{self.ws.close_code}"] += 1

    async def send(self, msg: dict[str, Any]) -> None:
        self._n += 1
        await self.ws.send_str(json.dumps({**msg, "id": self._n}))

    async def request(self, msg: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        await self.send(msg)
        with contextlib.suppress(TimeoutError):
            while True:
                reply = await asyncio.wait_for(self.replies.get(), timeout)
                if reply.get("id") == self._n:
                    return reply
        return {}

    @property
    def closed(self) -> bool:
        return bool(self.ws.closed) or self._reader.done()

    async def wait_closed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)

    async def close(self) -> None:
        self._closing = not self._reader.done()
        with contextlib.suppress(Exception):
            await self.ws.close()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self._reader, 2)


class _Abuser:
    """One abusive participant: its token, its counters by kind, and the kinds."""

    def __init__(self, worker: AbuseWorker, index: int, token: str) -> None:
        self.w = worker
        self.index = index
        self.token = token
        # Its own loopback address (127.0.0.0/8 is all loopback): the server's
        # per-address limits then fall on it, not on the honest clients at 127.0.0.1.
        self.address = f"127.0.1.{index % 254 + 1}"
        self.http: Any = None
        self.counts: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
        self.streams: set[str] = set()

    async def connect(self, kind: str) -> _Conn | None:
        import aiohttp

        count = self.counts[kind]
        url = f"{self.w.url}/v1/sessions/{self.w.cfg['session_id']}/ws"
        if self.http is None:
            connector = aiohttp.TCPConnector(local_addr=(self.address, 0), limit=0)
            self.http = aiohttp.ClientSession(connector=connector)
        try:
            ws = await self.http.ws_connect(
                url, params={"token": self.token}, heartbeat=None, max_msg_size=0
            )
            hello = await ws.receive_json(timeout=15)
        except aiohttp.WSServerHandshakeError as exc:  # refused before the upgrade
            count[f"refused:http_{exc.status}"] += 1
            return None
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError) as exc:
            count[f"connect_failed:{type(exc).__name__}"] += 1
            return None
        if hello.get("type") != "session":
            count[f"refused:{hello.get('code', '?')}"] += 1
            await ws.close()
            return None
        count["connected"] += 1
        self.streams.update(s["id"] for s in hello.get("streams", []))
        return _Conn(ws, count, self.streams)

    async def run(self, until: float) -> None:
        phase = self.w.cfg["abuse_phase"]
        k = self.index
        while time.monotonic() < until:
            kind = KINDS[k % len(KINDS)]
            end = min(until, time.monotonic() + phase)
            try:
                await getattr(self, kind)(end)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counts[kind][f"client_error:{type(exc).__name__}"] += 1
                log.warning("abuser %d %s: %r", self.index, kind, exc)
                await asyncio.sleep(0.5)
            k += 1

    # -- the kinds -----------------------------------------------------------------------

    async def signal_flood(self, until: float) -> None:
        while time.monotonic() < until:
            conn = await self.connect("signal_flood")
            if conn is None:
                await asyncio.sleep(1.0)
                continue
            with contextlib.suppress(ConnectionError, RuntimeError):
                for _ in range(3000):
                    await conn.send({"type": "signal", "kind": "flood", "data": "x" * 64})
            await conn.wait_closed(max(0.1, min(5.0, until - time.monotonic())))
            await conn.close()
            await asyncio.sleep(0.5)

    async def subscribe_no_answer(self, until: float) -> None:
        conns = [c for c in [await self.connect("subscribe_no_answer")] if c is not None]
        try:
            while time.monotonic() < until and conns and not conns[0].closed:
                for stream_id in list(self.streams)[:20]:
                    await conns[0].send({"type": "subscribe", "stream_id": stream_id})
                await asyncio.sleep(1.0)
        finally:
            for c in conns:
                await c.close()

    async def publish_churn(self, until: float) -> None:
        conn = await self.connect("publish_churn")
        if conn is None:
            return
        try:
            while time.monotonic() < until and not conn.closed:
                reply = await conn.request({"type": "publish", "sdp": self.w.offer})
                if reply.get("type") == "answer":
                    await conn.request({"type": "unpublish", "stream_id": reply["stream_id"]})
                elif not reply:
                    break
        finally:
            await conn.close()

    async def oversized(self, until: float) -> None:
        w = self.w
        while time.monotonic() < until:
            conn = await self.connect("oversized")
            if conn is None:
                await asyncio.sleep(1.0)
                continue
            try:
                cases = {
                    "140_sections/": w.big_offer,
                    "over_64KiB/": w.offer + "a=x-pad:" + "y" * 70_000 + "\r\n",
                    "no_formats/": w.bad,
                }
                for label, sdp in cases.items():
                    conn.label = label
                    reply = await conn.request({"type": "publish", "sdp": sdp})
                    if reply.get("type") == "answer":  # not refused: take it back
                        conn.label = "unpublish/"
                        await conn.request({"type": "unpublish", "stream_id": reply["stream_id"]})
                conn.label = "300KiB_message/"
                await conn.request({"type": "signal", "kind": "big", "data": "z" * 300_000})
                conn.label = ""
                await conn.ws.send_str("w" * (1_100_000))  # past the 1 MiB frame limit
                await conn.wait_closed(max(0.1, min(5.0, until - time.monotonic())))
            finally:
                await conn.close()
            await asyncio.sleep(0.5)

    async def reconnect_loop(self, until: float) -> None:
        while time.monotonic() < until:
            conns = await asyncio.gather(*(self.connect("reconnect_loop") for _ in range(6)))
            await asyncio.sleep(0.2)
            for c in conns:
                if c is not None:
                    await c.close()
            await asyncio.sleep(0.3)

    async def slowloris(self, until: float) -> None:
        count = self.counts["slowloris"]
        host, port = self.w.host_port
        socks = []
        local = (self.address, 0)
        for _ in range(50):
            try:
                socks.append(await asyncio.open_connection(host, port, local_addr=local))
            except OSError as exc:
                count[f"connect_failed:{type(exc).__name__}"] += 1
        for reader, writer in socks:
            count["sent"] += 1
            self.w.spawn(_trickle(reader, writer, count))
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
        with contextlib.suppress(TimeoutError, OSError):
            status = (await asyncio.wait_for(reader.readline(), 10)).split(b" ")[1:2]
            count[f"malformed:{(status or [b'?'])[0].decode()}"] += 1
        writer.close()
        await asyncio.sleep(max(0.0, until - time.monotonic()))


async def _trickle(reader: Any, writer: Any, count: Counter[str]) -> None:
    """A request head sent one byte every 2 s, until the server closes (or 120 s)."""
    started = time.monotonic()
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: " + b"a" * 200
    try:
        writer.write(head[:16])
        for i in range(16, len(head)):
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1024), 2.0) == b"":
                    break
                # An answer before the head is complete is a refusal too.
                count["answered_early"] += 1
                break
            if time.monotonic() - started > 120:
                count["still_open_after_120s"] += 1
                return
            writer.write(head[i : i + 1])
        count["closed_by_server"] += 1
    except OSError:
        count["closed_by_server"] += 1
    finally:
        writer.close()


class AbuseWorker:
    """The abusive participants of one process."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.url: str = cfg["url"]
        parts = urlsplit(self.url)
        self.host_port = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.abusers = [_Abuser(self, a["index"], a["token"]) for a in cfg["abusers"]]
        self.offer = self.big_offer = self.bad = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._main: asyncio.Future[Any] | None = None

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, until: float) -> None:
        self.offer = await _offer()
        big = await _offer(2)
        section = big[big.index("m=video") :]
        self.big_offer = big + section * 138  # 140 media sections
        # An m= line without formats (RFC 8866 §5.14 requires at least one).
        self.bad = re.sub(r"(m=video \d+ UDP/TLS/RTP/SAVPF)[^\r\n]*", r"\1", self.offer)
        if self.bad == self.offer:
            raise RuntimeError("soak: could not strip the video formats from the offer")
        self._main = asyncio.gather(*(a.run(until) for a in self.abusers))

    def counts(self) -> dict[str, dict[str, int]]:
        total: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
        for a in self.abusers:
            for kind, c in a.counts.items():
                total[kind].update(c)
        return {k: dict(c) for k, c in total.items()}

    def status(self) -> dict[str, Any]:
        counts = self.counts()
        return {"rejections": sum(rejections(c) for c in counts.values())}

    async def stop(self) -> dict[str, Any]:
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(BaseException):
                await self._main
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for a in self.abusers:
            if a.http is not None:
                await a.http.close()
        return {"abuse": self.counts()}
