"""The subscriber role of ``e2ee bench router``: one process terminating many subscriptions.

One signaling connection per subscriber and one ``RTCPeerConnection`` per subscription
(as the router makes them).  ``kind`` (the process's configuration) picks the receive
path: ``light`` (default; :mod:`~e2ee.tools.bench.router_worker.light`: RTP taken off the
ICE sockets, all read by one reader of :mod:`~e2ee.tools.bench.router_worker.sockets`,
``receiver`` ``native`` (default: frames found in Rust) or ``python`` (a header read in
Python per packet), a decrypted probe now and then) or ``full``
(:mod:`~e2ee.tools.bench.router_worker.receive`: aiortc's receive path, every frame
decrypted).  Either way nothing is decoded and each (subscriber, track) records its
window in a :class:`~e2ee.tools.bench.router_worker.window.TrackWindow`.

Commands: ``add`` (more subscribers: ``subs``, a list of ``[token, [stream ids]]``;
answers once every new track has delivered a frame or the timeout passes), ``mark``
(start a window), ``report`` (the window's records).
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
from e2ee.tools.bench.router_worker.sockets import (
    RECEIVERS,
    NativeReader,
    SocketReader,
    new_reader,
)
from e2ee.tools.bench.router_worker.window import TrackWindow

__all__ = ["run_subscriber"]

#: Seconds between two decrypted probes of a track on the light path (a probe costs as
#: much as a few hundred packets; SRTP's index estimate, RFC 3711 §3.3.1, wants one at
#: least every 2^15 packets, some minutes here).
PROBE_S = 5.0
#: Frames per second by kind (the publishers' video rate comes with the configuration).
_AUDIO_FPS = 50


class _SubscriberProcess:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.kind = cfg.get("kind", "light")
        if self.kind not in ("light", "full"):
            raise ValueError(f"unknown subscriber kind {self.kind!r}")
        self.receiver = cfg.get("receiver", RECEIVERS[0])
        if self.receiver not in RECEIVERS:
            raise ValueError(f"unknown receiver {self.receiver!r}")
        self.fps = int(cfg.get("fps", 30))
        self.probe_s = float(cfg.get("probe_s", PROBE_S))
        self.ring: Any = None
        self.http: Any = None
        self.tracks: list[TrackWindow] = []
        self.lights: list[Any] = []
        self.reader: NativeReader | SocketReader | None = None
        self.pcs: list[Any] = []
        self.signaling: list[Signaling] = []
        self.count = 0
        self.marked_at = time.monotonic()

    async def start(self) -> None:
        import aiohttp

        self.ring = await key_ring(self.cfg)
        self.http = aiohttp.ClientSession()

    def _full(self, pc: Any, index: int, stream_id: str) -> list[TrackWindow]:
        """aiortc's receive path, frames taken before the decoder."""
        from e2ee.crypto.frames import FrameDecryptor
        from e2ee.rtc import compat
        from e2ee.tools.bench.router_worker.receive import Assembler, FrameSink, Receiver

        tracks: list[TrackWindow] = []
        for transceiver in pc.getTransceivers():
            kind = transceiver.kind
            codec = "vp8" if kind == "video" else "opus"
            rx = Receiver(index, stream_id, kind, FrameDecryptor(self.ring, codec))
            # Set before receive() starts the decoder thread, as the router's ingress does.
            compat.set_jitter_buffer(transceiver.receiver, Assembler(rx))
            compat.set_decoder_queue(transceiver.receiver, FrameSink(rx))
            tracks.append(rx)
        return tracks

    def _light(self, pc: Any, index: int, stream_id: str, sdp: str) -> list[TrackWindow]:
        """RTP off the ICE socket (after ``setLocalDescription`` gathered it)."""
        from e2ee.crypto.frames import FrameDecryptor
        from e2ee.rtc import compat
        from e2ee.tools.bench.router_worker.light import (
            LightSubscription,
            LightTrack,
            payload_kinds,
        )
        from e2ee.tools.bench.router_worker.media import VIDEO_CLOCK

        session: list[Any] = []

        def srtp() -> Any:
            if not session:
                s = compat.srtp_rx_session(pc)
                if s is None:
                    return None
                session.append(s)
            return session[0]

        by_kind: dict[str, LightTrack] = {}
        for transceiver in pc.getTransceivers():
            kind = transceiver.kind
            codec = "vp8" if kind == "video" else "opus"
            track = LightTrack(
                index,
                stream_id,
                kind,
                FrameDecryptor(self.ring, codec),
                srtp,
                round(self.probe_s * (self.fps if kind == "video" else _AUDIO_FPS)),
            )
            if kind == "video":
                track.set_ticks(VIDEO_CLOCK // self.fps)
            by_kind[kind] = track
        light = LightSubscription(payload_kinds(sdp), by_kind)
        protocols = compat.ice_protocols(pc)
        if not protocols:
            raise RuntimeError("light subscriber: no ICE socket to take RTP from")
        if self.reader is None:
            self.reader = new_reader(self.receiver, asyncio.get_running_loop())
        if isinstance(self.reader, NativeReader):
            light.attach(self.reader, protocols)
        else:
            for protocol in protocols:
                self.reader.take(protocol, light.wrap(protocol.datagram_received))
        self.lights.append(light)
        return list(by_kind.values())

    async def _subscribe_one(self, token: str, streams: list[str]) -> list[TrackWindow]:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        index = self.count
        self.count += 1
        sig = await Signaling.connect(self.http, self.cfg["url"], self.cfg["session_id"], token)
        self.signaling.append(sig)
        tracks: list[TrackWindow] = []
        for stream_id in streams:
            offer = await sig.request({"type": "subscribe", "stream_id": stream_id})
            pc = RTCPeerConnection(rtc_configuration())
            self.pcs.append(pc)
            await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
            if self.kind == "full":
                tracks.extend(self._full(pc, index, stream_id))
            await pc.setLocalDescription(await pc.createAnswer())
            if self.kind == "light":
                tracks.extend(self._light(pc, index, stream_id, offer["sdp"]))
            await sig.request(
                {
                    "type": "answer",
                    "subscription_id": offer["subscription_id"],
                    "sdp": pc.localDescription.sdp,
                }
            )
        self.tracks.extend(tracks)
        return tracks

    async def add(self, subs: list[list[Any]], timeout: float) -> dict[str, Any]:
        started = time.monotonic()
        limit = asyncio.Semaphore(4)

        async def one(token: str, streams: list[str]) -> list[TrackWindow]:
            async with limit:
                return await self._subscribe_one(token, streams)

        groups = await asyncio.gather(*(one(token, streams) for token, streams in subs))
        fresh = [t for g in groups for t in g]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(t.frames_total > 0 for t in fresh):
                break
            await asyncio.sleep(0.05)
        return {
            "subscribers": self.count,
            "not_receiving": sum(1 for t in fresh if t.frames_total == 0),
            "join_s": round(time.monotonic() - started, 3),
        }

    def mark(self) -> dict[str, Any]:
        for t in self.tracks:
            t.mark()
        if self.reader is not None:
            self.reader.wakeups = self.reader.datagrams = self.reader.gro_datagrams = 0
            self.reader.cpu_s = 0.0
        self.marked_at = time.monotonic()
        return {}

    def report(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "receiver": self.receiver if self.kind == "light" else None,
            "window_s": time.monotonic() - self.marked_at,
            "receivers": [t.report() for t in self.tracks],
            "other_packets": sum(light.other_packets for light in self.lights),
            "reader": None
            if self.reader is None
            else {
                "wakeups": self.reader.wakeups,
                "datagrams": self.reader.datagrams,
                "cpu_s": self.reader.cpu_s,
                "kernel_timestamps": self.reader.kernel_timestamps,
                "gro": isinstance(self.reader, NativeReader) and self.reader.gro,
                "gro_datagrams": self.reader.gro_datagrams,
            },
            "connection_states": sorted({pc.connectionState for pc in self.pcs}),
        }

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd.get("cmd")
        if name == "add":
            return await self.add(cmd["subs"], float(cmd.get("timeout", 30)))
        if name == "mark":
            return self.mark()
        if name == "report":
            return self.report()
        raise ValueError(f"unknown command {name!r}")

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
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
