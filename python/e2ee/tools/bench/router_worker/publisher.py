"""The publisher role of ``e2ee bench router`` (one process per publisher).

Two tracks that return the pre-encoded frames of the media loop (aiortc's ``pack()`` path:
no encoding on the publisher), paced at 30 and 50 frames/s.  At send time each frame gets
the stamp right after its clear codec header (VP8: 10 bytes on key frames, 3 on deltas;
Opus: 1) and is then encrypted with :class:`e2ee.FrameEncryptor`, so the stamp travels
inside the SFrame ciphertext and the router forwards exactly what an E2EE client sends
(16 bytes more per frame).  A PLI from the router makes the video loop jump to its next
key frame, as a real encoder would send one.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from pathlib import Path
from typing import Any

from e2ee.tools.bench.router_worker.link import (
    Signaling,
    commands,
    key_ring,
    reply,
    rtc_configuration,
)
from e2ee.tools.bench.router_worker.media import (
    AUDIO_CLOCK,
    AUDIO_FRAME_SAMPLES,
    MAGIC,
    STAMP,
    VIDEO_CLOCK,
    clear_bytes,
    load_media,
)

__all__ = ["run_publisher"]


class _Packet:
    """A duck-typed ``av.Packet`` for aiortc's ``pack()``."""

    __slots__ = ("data", "pts", "time_base")

    def __init__(self, data: bytes, pts: int, time_base: fractions.Fraction) -> None:
        self.data = data
        self.pts = pts
        self.time_base = time_base

    def __bytes__(self) -> bytes:
        return self.data


def _loop_track(kind: str, frames: list[bytes], rate: float, encryptor: Any) -> Any:
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    video = kind == "video"
    clock = VIDEO_CLOCK if video else AUDIO_CLOCK
    ticks = round(clock / rate)
    time_base = fractions.Fraction(1, clock)
    keyframes = [i for i, f in enumerate(frames) if f[0] & 1 == 0] if video else []

    class LoopTrack(MediaStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self.kind = kind
            self.sent = 0
            self.keyframes_sent = 0
            self.keyframe_requests = 0
            self._index = 0
            self._jump = False
            self._start: float | None = None

        def request_keyframe(self) -> None:
            """The sender's key frame hook (a PLI from the router)."""
            self.keyframe_requests += 1
            self._jump = True

        async def recv(self) -> _Packet:  # type: ignore[override]
            if self.readyState != "live":
                raise MediaStreamError
            n = self.sent
            if self._start is None:
                self._start = time.monotonic()
            wait = self._start + n / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._jump and keyframes:
                self._jump = False
                later = [k for k in keyframes if k >= self._index]
                self._index = later[0] if later else keyframes[0]
            data = frames[self._index]
            self._index = (self._index + 1) % len(frames)
            clear = clear_bytes(video, data)
            if video and clear == 10:
                self.keyframes_sent += 1
            stamp = STAMP.pack(MAGIC, n & 0xFFFFFFFF, time.monotonic_ns())
            wire: bytes = encryptor.encrypt(data[:clear] + stamp + data[clear:])
            self.sent = n + 1
            return _Packet(wire, n * ticks, time_base)

    return LoopTrack()


async def run_publisher(cfg: dict[str, Any]) -> None:
    """Publish the media loop, answer ``report`` commands until ``quit``."""
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from e2ee.crypto.frames import FrameEncryptor
    from e2ee.rtc import compat

    media = load_media(Path(cfg["media"]))
    ring = await key_ring(cfg)
    video = _loop_track("video", media.video, cfg.get("fps", 30), FrameEncryptor(ring, "vp8"))
    audio = _loop_track(
        "audio", media.audio, AUDIO_CLOCK / AUDIO_FRAME_SAMPLES, FrameEncryptor(ring, "opus")
    )
    async with aiohttp.ClientSession() as http:
        sig = await Signaling.connect(http, cfg["url"], cfg["session_id"], cfg["token"])
        pc = RTCPeerConnection(rtc_configuration())
        pc.addTrack(audio)
        sender = pc.addTrack(video)
        compat.hook_send_keyframe(sender, video.request_keyframe)
        await pc.setLocalDescription(await pc.createOffer())
        answer = await sig.request(
            {"type": "publish", "sdp": pc.localDescription.sdp, "name": cfg.get("name", "")}
        )
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        reply({"ok": True, "event": "published", "stream_id": answer["stream_id"]})

        def handle(cmd: dict[str, Any]) -> dict[str, Any]:
            if cmd.get("cmd") == "report":
                return {
                    "video_frames_sent": video.sent,
                    "audio_frames_sent": audio.sent,
                    "keyframes_sent": video.keyframes_sent,
                    "keyframe_requests": video.keyframe_requests,
                    "connection_state": pc.connectionState,
                }
            raise ValueError(f"unknown command {cmd.get('cmd')!r}")

        try:
            await commands(handle)
        finally:
            await pc.close()
            await sig.close()
