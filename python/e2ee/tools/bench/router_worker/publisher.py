"""The publisher role of ``e2ee bench router`` (one process per publisher).

Two tracks that return the pre-encoded frames of the media loop (aiortc's ``pack()`` path:
no encoding on the publisher), paced at 30 and 50 frames/s.  At send time each frame gets
the stamp right after its clear codec header (VP8: 10 bytes on key frames, 3 on deltas;
Opus: 1) and is then encrypted with :class:`e2ee.FrameEncryptor`, so the stamp travels
inside the SFrame ciphertext and the router forwards exactly what an E2EE client sends
(16 bytes more per frame).  A PLI from the router makes the video loop jump to its next
key frame, as a real encoder would send one.

The publisher keeps what the parent needs to time every frame at every subscriber: the
send time of each frame ``n`` (the stamp's time, CLOCK_MONOTONIC), and each key frame
request with the key frame that answered it (``plis``: first PLI's arrival, ``n`` and
send time of the next key frame).  Its :class:`~e2ee.tools.bench.router_worker.uplink.Uplink`
counts (and in the loss scenario drops) the RTP packets it sends.  Commands: ``mark``,
``report`` (``since_ns``: send times from then on), ``loss`` (``p``, ``burst_ms``,
``burst_in_s``), ``state`` (the peer connection's).
"""

from __future__ import annotations

import asyncio
import bisect
import fractions
import logging
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
from e2ee.tools.bench.router_worker.uplink import Uplink

__all__ = ["run_publisher"]

log = logging.getLogger("e2ee.tools.bench.router_worker")


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
            self.ticks = ticks
            self.sent = 0
            self.keyframes_sent = 0
            self.keyframe_requests = 0
            self.sent_ns: list[int] = []  # send time of frame n, n = 0, 1, ...
            self.plis: list[tuple[int, int, int]] = []  # (PLI arrival, key frame n, its send)
            self._pli_at: int | None = None
            self._index = 0
            self._jump = False
            self._start: float | None = None

        def request_keyframe(self) -> None:
            """The sender's key frame hook (a PLI from the router)."""
            self.keyframe_requests += 1
            if self._pli_at is None:
                self._pli_at = time.monotonic_ns()
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
            now = time.monotonic_ns()
            if video and clear == 10:
                self.keyframes_sent += 1
                if self._pli_at is not None:
                    self.plis.append((self._pli_at, n, now))
                    self._pli_at = None
            self.sent_ns.append(now)
            stamp = STAMP.pack(MAGIC, n & 0xFFFFFFFF, now)
            wire: bytes = encryptor.encrypt(data[:clear] + stamp + data[clear:])
            self.sent = n + 1
            return _Packet(wire, n * ticks, time_base)

        def since(self, ns: int) -> dict[str, Any]:
            """Send times of the frames sent from ``ns`` on (``n0``: the first's n)."""
            n0 = bisect.bisect_left(self.sent_ns, ns)
            return {"n0": n0, "sent_ns": self.sent_ns[n0:]}

    return LoopTrack()


async def run_publisher(cfg: dict[str, Any]) -> None:
    """Publish the media loop, answer ``report`` commands until ``quit``."""
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from e2ee.crypto.frames import FrameEncryptor
    from e2ee.rtc import compat

    # aioice says at INFO why an ICE connection ends (consent expired, RFC 7675 §5.1).
    logging.getLogger("aioice.ice").setLevel(logging.INFO)
    media = load_media(Path(cfg["media"]))
    ring = await key_ring(cfg)
    video_fps = int(cfg.get("fps", 30))
    video = _loop_track("video", media.video, video_fps, FrameEncryptor(ring, "vp8"))
    audio = _loop_track(
        "audio", media.audio, AUDIO_CLOCK / AUDIO_FRAME_SAMPLES, FrameEncryptor(ring, "opus")
    )
    async with aiohttp.ClientSession() as http:
        sig = await Signaling.connect(http, cfg["url"], cfg["session_id"], cfg["token"])
        pc = RTCPeerConnection(rtc_configuration())
        audio_sender = pc.addTrack(audio)
        sender = pc.addTrack(video)
        compat.hook_send_keyframe(sender, video.request_keyframe)
        uplink = Uplink()
        uplink.add_track(
            list(compat.sender_ssrcs(sender)), "video", lambda: video.sent, video.ticks
        )
        uplink.add_track(
            [compat.sender_ssrc(audio_sender)], "audio", lambda: audio.sent, audio.ticks
        )
        await pc.setLocalDescription(await pc.createOffer())
        answer = await sig.request(
            {"type": "publish", "sdp": pc.localDescription.sdp, "name": cfg.get("name", "")}
        )
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

        @pc.on("connectionstatechange")
        def _state() -> None:  # in the worker's log: why a run lost its publisher
            log.warning(
                "publisher: connection %s (ICE %s)", pc.connectionState, pc.iceConnectionState
            )

        # After setRemoteDescription: both senders are on the bundled transport now.
        for transport in {id(s.transport): s.transport for s in (sender, audio_sender)}.values():
            compat.hook_transport_send(transport, uplink.wrap)
        reply({"ok": True, "event": "published", "stream_id": answer["stream_id"]})

        def handle(cmd: dict[str, Any]) -> dict[str, Any]:
            name = cmd.get("cmd")
            if name == "mark":
                uplink.mark()
                return {}
            if name == "state":
                return {"connection_state": pc.connectionState}
            if name == "loss":
                uplink.set_loss(
                    float(cmd.get("p", 0.0)),
                    float(cmd.get("burst_ms", 0.0)),
                    float(cmd.get("burst_in_s", 0.0)),
                )
                return {}
            if name == "report":
                since = int(cmd.get("since_ns", 0))
                return {
                    "video_frames_sent": video.sent,
                    "audio_frames_sent": audio.sent,
                    "keyframes_sent": video.keyframes_sent,
                    "keyframe_requests": video.keyframe_requests,
                    "connection_state": pc.connectionState,
                    "fps": video_fps,
                    "sent": {"video": video.since(since), "audio": audio.since(since)},
                    "wire": {k: uplink.wire_since(k, since) for k in ("video", "audio")},
                    "plis": [list(p) for p in video.plis],
                    "uplink": uplink.report(),
                }
            raise ValueError(f"unknown command {name!r}")

        try:
            await commands(handle)
        finally:
            await pc.close()
            await sig.close()
