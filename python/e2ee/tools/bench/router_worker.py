"""The load generators of ``e2ee bench router``: publisher and subscriber processes.

:mod:`e2ee.tools.bench.router` runs them as ``python -m e2ee.tools.bench.router_worker ROLE CONFIG``
(CONFIG is a JSON object).  They read one JSON command per line on stdin, answer one JSON
object per line on stdout and log to stderr.  All WebRTC traffic stays on loopback: the
parent sets ``E2EE_ICE_ADDRESSES=127.0.0.1`` and each worker also calls
:func:`e2ee.rtc.net.restrict_ice_addresses` with ``127.0.0.1``.

Media (:func:`prepare_media`, done once by the parent)
    A loop of real VP8 frames (libvpx through PyAV: 640x480, 30 fps, ~1 Mbit/s, a key
    frame every 2 s; a gradient with a moving noise patch so that the rate controller
    fills the budget) and of real Opus frames (libopus, 20 ms, 48 kbit/s tone).

Publisher (one process per publisher)
    Two tracks that return the pre-encoded frames (aiortc's ``pack()`` path: no encoding
    on the publisher), paced at 30 and 50 frames/s.  At send time each frame gets a stamp
    right after its clear codec header (VP8: 10 bytes on key frames, 3 on deltas; Opus:
    1), ``MAGIC | seq (u32) | CLOCK_MONOTONIC ns (u64)``, and is then encrypted with
    :class:`e2ee.FrameEncryptor`, so the stamp travels inside the SFrame ciphertext and the
    router forwards exactly what an E2EE client sends (16 bytes more per frame).  A PLI
    from the router makes the video loop jump to its next key frame, as a real encoder
    would send one.

Subscriber (up to ``per_process`` subscribers per process)
    One signaling connection per subscriber and one ``RTCPeerConnection`` per
    subscription (as the router makes them).  Nothing is decoded: each receiver's private
    jitter buffer is replaced by :class:`_Assembler`, which emits a VP8 frame as soon as
    its marker packet is in (aiortc's buffer waits for the first packet of the *next*
    frame, which would add a frame interval to every measurement), and its decoder queue
    by :class:`_FrameSink`, which takes each frame on the event loop (no thread hop),
    decrypts it with :class:`e2ee.FrameDecryptor` and reads the stamp: latency =
    receive time - send time (both CLOCK_MONOTONIC on the same host, so the clocks
    agree), lost frames = gaps in ``seq``.  RTP packets are counted as they arrive
    (RTX included).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import math
import random
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MAGIC", "STAMP", "load_media", "main", "prepare_media"]

log = logging.getLogger("e2ee.tools.bench.router_worker")

#: The stamp each publisher writes into the encrypted part of every frame.
STAMP = struct.Struct(">4sIQ")
MAGIC = b"E2BR"
#: VP8 payload bytes per RTP packet in aiortc's packetizer (1300 minus a 4-byte descriptor).
VP8_PAYLOAD_BYTES = 1296
VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
AUDIO_FRAME_SAMPLES = 960  # 20 ms

_MEDIA_MAGIC = b"E2BRMEDIA1\n"
_RECORD = struct.Struct(">cBI")  # kind (b"v" / b"a"), key flag, length


# -- media -------------------------------------------------------------------------------


@dataclass
class Media:
    video: list[bytes] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)

    @property
    def keyframes(self) -> list[int]:
        return [i for i, f in enumerate(self.video) if f and f[0] & 1 == 0]


def _encode_video(
    seconds: float, width: int, height: int, fps: int, bitrate: int, gop: int
) -> list[bytes]:
    import av

    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.bit_rate = bitrate
    codec.gop_size = gop
    codec.time_base = fractions.Fraction(1, VIDEO_CLOCK)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rnd = random.Random(20260522)
    row = bytes((x * 255) // width for x in range(width))
    base = bytes(row * height)
    chroma = bytes([128]) * ((width // 2) * (height // 2))
    patch = min(96, width // 2, height // 2)
    frames: list[bytes] = []
    for n in range(max(1, round(seconds * fps))):
        luma = bytearray(base)
        bx = (n * 5) % (width - patch)
        by = (n * 3) % (height - patch)
        for y in range(by, by + patch):
            luma[y * width + bx : y * width + bx + patch] = rnd.randbytes(patch)
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, data, w in (
            (frame.planes[0], bytes(luma), width),
            (frame.planes[1], chroma, width // 2),
            (frame.planes[2], chroma, width // 2),
        ):
            if plane.line_size == w:
                plane.update(data)
            else:  # pragma: no cover - padded planes
                rows = len(data) // w
                buf = bytearray(plane.line_size * rows)
                for y in range(rows):
                    buf[y * plane.line_size : y * plane.line_size + w] = data[y * w : (y + 1) * w]
                plane.update(bytes(buf))
        frame.pts = n * (VIDEO_CLOCK // fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        frames.extend(bytes(p) for p in codec.encode(frame))
    frames.extend(bytes(p) for p in codec.encode(None))
    return [f for f in frames if f]


def _encode_audio(seconds: float, bitrate: int) -> list[bytes]:
    import av

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_CLOCK
    codec.format = "s16"
    codec.layout = "mono"
    codec.bit_rate = bitrate
    codec.time_base = fractions.Fraction(1, AUDIO_CLOCK)
    codec.options = {"application": "voip"}
    period = AUDIO_CLOCK // 400
    one = [round(6000 * math.sin(2 * math.pi * i / period)) for i in range(period)]
    pcm = struct.pack(f"<{AUDIO_FRAME_SAMPLES}h", *(one * (AUDIO_FRAME_SAMPLES // period)))
    packets: list[bytes] = []
    for n in range(max(1, round(seconds * AUDIO_CLOCK / AUDIO_FRAME_SAMPLES))):
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = n * AUDIO_FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, AUDIO_CLOCK)
        packets.extend(bytes(p) for p in codec.encode(frame))
    return [p for p in packets if p]


def prepare_media(
    path: Path,
    *,
    seconds: float = 10.0,
    width: int = 640,
    height: int = 480,
    fps: int = 30,
    bitrate: int = 1_000_000,
    gop: int = 60,
    audio_bitrate: int = 48_000,
) -> dict[str, Any]:
    """Encode the media loop once and write it to ``path``; returns a summary."""
    video = _encode_video(seconds, width, height, fps, bitrate, gop)
    audio = _encode_audio(min(seconds, 2.0), audio_bitrate)
    with open(path, "wb") as f:
        f.write(_MEDIA_MAGIC)
        for kind, frames in ((b"v", video), (b"a", audio)):
            for data in frames:
                key = 1 if kind == b"v" and data[0] & 1 == 0 else 0
                f.write(_RECORD.pack(kind, key, len(data)))
                f.write(data)
    sizes = [len(v) for v in video]
    packets = [math.ceil((n + STAMP.size + 16) / VP8_PAYLOAD_BYTES) for n in sizes]
    return {
        "video_codec": "VP8 (libvpx, realtime, cpu-used 8)",
        "width": width,
        "height": height,
        "fps": fps,
        "video_frames": len(video),
        "video_keyframes": sum(1 for v in video if v[0] & 1 == 0),
        "video_bitrate_bps": round(sum(sizes) * 8 * fps / len(sizes)),
        "video_frame_bytes_mean": round(sum(sizes) / len(sizes), 1),
        "video_frame_bytes_max": max(sizes),
        "video_packets_per_frame_mean": round(sum(packets) / len(packets), 3),
        "audio_codec": "Opus (libopus, 20 ms)",
        "audio_frames_per_s": AUDIO_CLOCK // AUDIO_FRAME_SAMPLES,
        "audio_frame_bytes_mean": round(sum(len(a) for a in audio) / max(1, len(audio)), 1),
        "stamp_bytes": STAMP.size,
    }


def load_media(path: Path) -> Media:
    data = path.read_bytes()
    if not data.startswith(_MEDIA_MAGIC):
        raise ValueError(f"{path}: not a bench media file")
    media = Media()
    pos = len(_MEDIA_MAGIC)
    while pos < len(data):
        kind, _key, n = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        (media.video if kind == b"v" else media.audio).append(data[pos : pos + n])
        pos += n
    return media


def clear_bytes(video: bool, frame: bytes) -> int:
    """The clear prefix of the E2EE frame format (RFC 6386 §9.1 key bit; Opus TOC)."""
    if not video:
        return 1
    return 3 if frame[0] & 1 else 10


# -- the parent link ---------------------------------------------------------------------


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _commands(handle: Callable[[dict[str, Any]], Any]) -> None:
    """Reads commands from stdin until ``quit`` or EOF; ``handle`` may be async."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, "")

    threading.Thread(target=reader, name="commands", daemon=True).start()
    while True:
        line = await lines.get()
        if not line:
            return
        cmd = json.loads(line)
        if cmd.get("cmd") == "quit":
            return
        try:
            result = handle(cmd)
            if asyncio.iscoroutine(result):
                result = await result
            _reply({"ok": True, **(result or {})})
        except Exception as exc:
            log.exception("command %s failed", cmd.get("cmd"))
            _reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


class _Signaling:
    """A minimal client of the signaling WebSocket (:mod:`e2ee.server.signaling`)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.hello: dict[str, Any] = {}
        self._ids = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, http: Any, url: str, session_id: str, token: str) -> _Signaling:
        ws = await http.ws_connect(
            f"{url.replace('http', 'ws', 1)}/v1/sessions/{session_id}/ws",
            params={"token": token},
            heartbeat=None,
        )
        sig = cls(ws)
        sig.hello = await ws.receive_json(timeout=30)
        if sig.hello.get("type") != "session":
            await ws.close()
            raise RuntimeError(f"signaling refused: {sig.hello}")
        sig._reader = asyncio.create_task(sig._read())
        return sig

    async def _read(self) -> None:
        import aiohttp

        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            fut = self._pending.pop(data.get("id"), None) if "id" in data else None
            if fut is not None and not fut.done():
                fut.set_result(data)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RuntimeError("signaling closed"))

    async def request(self, msg: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        self._ids += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._ids] = fut
        await self.ws.send_str(json.dumps({**msg, "id": self._ids}))
        reply = await asyncio.wait_for(fut, timeout)
        if reply.get("type") == "error":
            raise RuntimeError(f"{msg['type']}: {reply.get('code')}: {reply.get('message')}")
        return reply

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


async def _key_ring(cfg: dict[str, Any]) -> Any:
    from e2ee.crypto.keyring import KeyRing

    ring = KeyRing(
        cfg["session_id"],
        suite=cfg["suite"],
        kdf_iterations=cfg["kdf_iterations"],
        grace_period=0,
    )
    await ring.set_secret_async(cfg["secret"])
    return ring


def _rtc_configuration() -> Any:
    from aiortc import RTCConfiguration

    return RTCConfiguration(iceServers=[])


# -- publisher ---------------------------------------------------------------------------


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


async def _publisher(cfg: dict[str, Any]) -> None:
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from e2ee.crypto.frames import FrameEncryptor
    from e2ee.rtc import compat

    media = load_media(Path(cfg["media"]))
    ring = await _key_ring(cfg)
    video = _loop_track("video", media.video, cfg.get("fps", 30), FrameEncryptor(ring, "vp8"))
    audio = _loop_track(
        "audio", media.audio, AUDIO_CLOCK / AUDIO_FRAME_SAMPLES, FrameEncryptor(ring, "opus")
    )
    async with aiohttp.ClientSession() as http:
        sig = await _Signaling.connect(http, cfg["url"], cfg["session_id"], cfg["token"])
        pc = RTCPeerConnection(_rtc_configuration())
        pc.addTrack(audio)
        sender = pc.addTrack(video)
        compat.hook_send_keyframe(sender, video.request_keyframe)
        await pc.setLocalDescription(await pc.createOffer())
        reply = await sig.request(
            {"type": "publish", "sdp": pc.localDescription.sdp, "name": cfg.get("name", "")}
        )
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        _reply({"ok": True, "event": "published", "stream_id": reply["stream_id"]})

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
            await _commands(handle)
        finally:
            await pc.close()
            await sig.close()


# -- subscriber --------------------------------------------------------------------------


class _Receiver:
    """What one subscriber receives of one published track, counted per window."""

    def __init__(self, sub: int, stream_id: str, kind: str, decryptor: Any) -> None:
        self.sub = sub
        self.stream_id = stream_id
        self.kind = kind
        self.video = kind == "video"
        self.decryptor = decryptor
        self.frames_total = 0
        self.mark()

    def mark(self) -> None:
        self.frames = 0
        self.packets = 0
        self.packets_estimate = 0
        self.bytes = 0
        self.errors = 0
        self.incomplete = 0
        self.seq_min: int | None = None
        self.seq_max = -1
        self.latencies_us: list[int] = []

    def on_frame(self, data: bytes) -> None:
        now = time.monotonic_ns()
        try:
            plain: bytes = self.decryptor.decrypt(data)
            magic, seq, sent = STAMP.unpack_from(plain, clear_bytes(self.video, plain))
        except Exception:
            self.errors += 1
            return
        if magic != MAGIC:
            self.errors += 1
            return
        self.frames_total += 1
        self.frames += 1
        n = len(data)
        self.bytes += n
        self.packets_estimate += math.ceil(n / VP8_PAYLOAD_BYTES) if self.video else 1
        if self.seq_min is None or seq < self.seq_min:
            self.seq_min = seq
        if seq > self.seq_max:
            self.seq_max = seq
        self.latencies_us.append((now - sent) // 1000)

    def report(self) -> dict[str, Any]:
        expected = 0 if self.seq_min is None else self.seq_max - self.seq_min + 1
        return {
            "sub": self.sub,
            "stream_id": self.stream_id,
            "kind": self.kind,
            "frames": self.frames,
            "lost": max(0, expected - self.frames),
            "packets": self.packets,
            "packets_estimate": self.packets_estimate,
            "bytes": self.bytes,
            "errors": self.errors,
            "incomplete": self.incomplete,
        }


class _Partial:
    __slots__ = ("chunks", "first", "last")

    def __init__(self) -> None:
        self.chunks: dict[int, bytes] = {}
        self.first: int | None = None
        self.last: int | None = None


class _Assembler:
    """Stands in for the receiver's private jitter buffer (``add(packet)`` only).

    Audio: one packet is one frame.  VP8: a frame is complete when its first packet
    (descriptor S=1, partition 0), its marker packet and every sequence number between
    have arrived, in any order (NACK/RTX still work: aiortc's NACK generator runs before
    this).  Frames that never complete are evicted and counted as ``incomplete``.
    """

    def __init__(self, rx: _Receiver) -> None:
        from aiortc.jitterbuffer import JitterFrame

        from e2ee.rtc import compat

        self._frame = JitterFrame
        self._payload = compat.depayloaded
        self._rx = rx
        self._pending: dict[int, _Partial] = {}

    def add(self, packet: Any) -> tuple[bool, Any]:
        rx = self._rx
        rx.packets += 1
        data = self._payload(packet)
        if not rx.video:
            return False, self._frame(data, packet.timestamp)
        ts = packet.timestamp
        part = self._pending.get(ts)
        if part is None:
            if len(self._pending) >= 8:
                self._pending.pop(next(iter(self._pending)))
                rx.incomplete += 1
            part = self._pending[ts] = _Partial()
        seq = packet.sequence_number
        part.chunks[seq] = data
        payload = packet.payload
        if payload and payload[0] & 0x1F == 0x10:
            part.first = seq
        if packet.marker:
            part.last = seq
        if part.first is not None and part.last is not None:
            count = ((part.last - part.first) & 0xFFFF) + 1
            if len(part.chunks) >= count:
                chunks = part.chunks
                first = part.first
                try:
                    frame = b"".join(chunks[(first + i) & 0xFFFF] for i in range(count))
                except KeyError:
                    return False, None
                del self._pending[ts]
                return False, self._frame(frame, ts)
        return False, None


class _FrameSink:
    """Stands in for the receiver's decoder queue: frames go to the :class:`_Receiver` on
    the event loop; aiortc's decoder thread only ever gets the stop sentinel."""

    def __init__(self, rx: _Receiver) -> None:
        self._rx = rx
        self._stopped = threading.Event()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            self._stopped.set()
            return
        try:
            self._rx.on_frame(item[1].data)
        except Exception:  # never raise inside aiortc's receive path
            log.exception("frame handling failed")

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> None:
        self._stopped.wait()
        return None


class _SubscriberProcess:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.ring: Any = None
        self.http: Any = None
        self.receivers: list[_Receiver] = []
        self.pcs: list[Any] = []
        self.signaling: list[_Signaling] = []
        self.count = 0
        self.marked_at = time.monotonic()

    async def start(self) -> None:
        import aiohttp

        self.ring = await _key_ring(self.cfg)
        self.http = aiohttp.ClientSession()

    async def _subscribe_one(self, token: str, streams: list[str]) -> list[_Receiver]:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from e2ee.crypto.frames import FrameDecryptor
        from e2ee.rtc import compat

        index = self.count
        self.count += 1
        sig = await _Signaling.connect(self.http, self.cfg["url"], self.cfg["session_id"], token)
        self.signaling.append(sig)
        receivers: list[_Receiver] = []
        for stream_id in streams:
            reply = await sig.request({"type": "subscribe", "stream_id": stream_id})
            pc = RTCPeerConnection(_rtc_configuration())
            self.pcs.append(pc)
            await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "offer"))
            for transceiver in pc.getTransceivers():
                kind = transceiver.kind
                codec = "vp8" if kind == "video" else "opus"
                rx = _Receiver(index, stream_id, kind, FrameDecryptor(self.ring, codec))
                # Set before receive() starts the decoder thread, as the router's ingress
                # (e2ee.sfu.ingress) does.
                compat.set_jitter_buffer(transceiver.receiver, _Assembler(rx))
                compat.set_decoder_queue(transceiver.receiver, _FrameSink(rx))
                receivers.append(rx)
            await pc.setLocalDescription(await pc.createAnswer())
            await sig.request(
                {
                    "type": "answer",
                    "subscription_id": reply["subscription_id"],
                    "sdp": pc.localDescription.sdp,
                }
            )
        self.receivers.extend(receivers)
        return receivers

    async def add(self, tokens: list[str], streams: list[str], timeout: float) -> dict[str, Any]:
        started = time.monotonic()
        limit = asyncio.Semaphore(4)

        async def one(token: str) -> list[_Receiver]:
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


async def _subscriber(cfg: dict[str, Any]) -> None:
    proc = _SubscriberProcess(cfg)
    await proc.start()
    _reply({"ok": True, "event": "started"})
    try:
        await _commands(proc.handle)
    finally:
        await proc.close()


# -- entry point -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("publisher", "subscriber"):
        print("usage: python -m e2ee.tools.bench.router_worker publisher|subscriber CONFIG_JSON")
        return 2
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format=f"{args[0]} %(levelname)s %(message)s"
    )
    from e2ee.rtc import net

    net.restrict_ice_addresses(["127.0.0.1"])
    cfg = json.loads(args[1])
    role = _publisher if args[0] == "publisher" else _subscriber
    asyncio.run(role(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
