"""The subscriber role of ``e2ee bench router`` (up to ``per_process`` subscribers per
process).

One signaling connection per subscriber and one ``RTCPeerConnection`` per subscription
(as the router makes them); every track's receive path is replaced by
:mod:`e2ee.tools.bench.router_worker.receive`, so frames are counted, decrypted and
timestamped, never decoded.  Commands: ``add`` (more subscribers, each subscribed to every
stream; answers once all receive or the timeout passes), ``mark`` (start a window),
``report`` (the window's counts and latencies).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from e2ee.tools.bench.router_worker.link import (
    Signaling,
    commands,
    key_ring,
    reply,
    rtc_configuration,
)
from e2ee.tools.bench.router_worker.receive import Assembler, FrameSink, Receiver

__all__ = ["run_subscriber"]


class _SubscriberProcess:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.ring: Any = None
        self.http: Any = None
        self.receivers: list[Receiver] = []
        self.pcs: list[Any] = []
        self.signaling: list[Signaling] = []
        self.count = 0
        self.marked_at = time.monotonic()

    async def start(self) -> None:
        import aiohttp

        self.ring = await key_ring(self.cfg)
        self.http = aiohttp.ClientSession()

    async def _subscribe_one(self, token: str, streams: list[str]) -> list[Receiver]:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from e2ee.crypto.frames import FrameDecryptor
        from e2ee.rtc import compat

        index = self.count
        self.count += 1
        sig = await Signaling.connect(self.http, self.cfg["url"], self.cfg["session_id"], token)
        self.signaling.append(sig)
        receivers: list[Receiver] = []
        for stream_id in streams:
            offer = await sig.request({"type": "subscribe", "stream_id": stream_id})
            pc = RTCPeerConnection(rtc_configuration())
            self.pcs.append(pc)
            await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
            for transceiver in pc.getTransceivers():
                kind = transceiver.kind
                codec = "vp8" if kind == "video" else "opus"
                rx = Receiver(index, stream_id, kind, FrameDecryptor(self.ring, codec))
                # Set before receive() starts the decoder thread, as the router's ingress
                # (e2ee.sfu.ingress) does.
                compat.set_jitter_buffer(transceiver.receiver, Assembler(rx))
                compat.set_decoder_queue(transceiver.receiver, FrameSink(rx))
                receivers.append(rx)
            await pc.setLocalDescription(await pc.createAnswer())
            await sig.request(
                {
                    "type": "answer",
                    "subscription_id": offer["subscription_id"],
                    "sdp": pc.localDescription.sdp,
                }
            )
        self.receivers.extend(receivers)
        return receivers

    async def add(self, tokens: list[str], streams: list[str], timeout: float) -> dict[str, Any]:
        started = time.monotonic()
        limit = asyncio.Semaphore(4)

        async def one(token: str) -> list[Receiver]:
            async with limit:
                return await self._subscribe_one(token, streams)

        groups = await asyncio.gather(*(one(t) for t in tokens))
        fresh = [rx for g in groups for rx in g]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(rx.frames_total > 0 for rx in fresh):
                break
            await asyncio.sleep(0.05)
        waiting = sum(1 for rx in fresh if rx.frames_total == 0)
        return {
            "subscribers": self.count,
            "not_receiving": waiting,
            "join_s": round(time.monotonic() - started, 3),
        }

    def mark(self) -> dict[str, Any]:
        for rx in self.receivers:
            rx.mark()
        self.marked_at = time.monotonic()
        return {}

    def report(self) -> dict[str, Any]:
        window = time.monotonic() - self.marked_at
        latencies: dict[str, list[int]] = {"video": [], "audio": []}
        for rx in self.receivers:
            latencies[rx.kind].extend(rx.latencies_us)
        return {
            "window_s": window,
            "receivers": [rx.report() for rx in self.receivers],
            "latencies_us": latencies,
            "connection_states": sorted({pc.connectionState for pc in self.pcs}),
        }

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd.get("cmd")
        if name == "add":
            return await self.add(cmd["tokens"], cmd["streams"], float(cmd.get("timeout", 30)))
        if name == "mark":
            return self.mark()
        if name == "report":
            return self.report()
        raise ValueError(f"unknown command {name!r}")

    async def close(self) -> None:
        await asyncio.gather(*(pc.close() for pc in self.pcs), return_exceptions=True)
        await asyncio.gather(*(s.close() for s in self.signaling), return_exceptions=True)
        if self.http is not None:
            await self.http.close()


async def run_subscriber(cfg: dict[str, Any]) -> None:
    """Hold subscribers for the parent, answer its commands until ``quit``."""
    proc = _SubscriberProcess(cfg)
    await proc.start()
    reply({"ok": True, "event": "started"})
    try:
        await commands(proc.handle)
    finally:
        await proc.close()
