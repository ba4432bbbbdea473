"""Test-only helpers for tests/integration/test_router.py: in-process signaling through a
Router, and recorders of the encoded frames a publisher sends and a subscriber receives.

The recorders use the same aiortc seams as e2ee.transform and e2ee.sfu, through
e2ee.rtc.compat: the sender's encoder, its per-frame step and the receiver's decoder queue.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from e2ee.rtc import compat
from e2ee.sfu import Router
from e2ee.wire.vp8 import parse_vp8_payload_descriptor
from support.media import new_pc, on_tracks


class RecordingVp8Encoder(compat.PacketizingVp8Encoder):
    """aiortc's VP8 encoder, recording every whole encoded frame it packetizes and every
    key frame request (``force_keyframe``) it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []
        self.forced = 0
        self.forced_at: list[float] = []
        self.keyframes_at: list[float] = []

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        if force_keyframe:
            self.forced += 1
            self.forced_at.append(time.monotonic())
        return super().encode(frame, force_keyframe)

    def transform_frame(self, frame: bytes) -> bytes | None:
        self.frames.append(bytes(frame))
        if frame[0] & 1 == 0:
            self.keyframes_at.append(time.monotonic())
        return frame


def install_recording_encoder(sender: RTCRtpSender) -> RecordingVp8Encoder:
    """Make ``sender`` use a :class:`RecordingVp8Encoder` (before its first frame)."""
    encoder = RecordingVp8Encoder()
    compat.set_sender_encoder(sender, encoder)
    return encoder


def record_sent_wire_frames(sender: RTCRtpSender, out: list[bytes]) -> None:
    """Record the VP8 frames ``sender`` puts on the wire (after any E2EE encoder): the RTP
    payloads of each frame with their payload descriptors stripped, joined."""

    def wrap(original: compat.NextEncodedFrame) -> compat.NextEncodedFrame:
        async def wrapped(codec: Any) -> Any:
            enc = await original(codec)
            if enc is not None and codec.name == "VP8":
                out.append(
                    b"".join(p[parse_vp8_payload_descriptor(p).size :] for p in enc.payloads)
                )
            return enc

        return wrapped

    compat.hook_next_encoded_frame(sender, wrap)


class RecordingQueue:
    """Wraps a receiver's decoder queue: records each reassembled frame, passes it on."""

    def __init__(self, inner: Any, out: list[tuple[float, bytes]]) -> None:
        self._inner = inner
        self._out = out

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            self._out.append((time.monotonic(), bytes(item[1].data)))
        self._inner.put(item, block, timeout)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def record_received_frames(pc: RTCPeerConnection, kind: str = "video") -> list[tuple[float, bytes]]:
    """Record ``(time, frame bytes)`` of every ``kind`` frame ``pc`` reassembles, before any
    E2EE decryption (register after ``protect()`` so its hook sits inside this one)."""
    out: list[tuple[float, bytes]] = []

    @pc.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        if track.kind != kind:
            return
        for transceiver in pc.getTransceivers():
            receiver = transceiver.receiver
            if receiver.track is track:
                compat.set_decoder_queue(
                    receiver, RecordingQueue(compat.decoder_queue(receiver), out)
                )

    return out


def only_codec(kind: str, mime: str) -> list[RTCRtpCodecCapability]:
    return [
        c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.lower() == mime.lower()
    ]


async def wait_connected(pc: RTCPeerConnection, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if time.monotonic() > deadline:
            raise TimeoutError(f"not connected: {pc.connectionState}")
        await asyncio.sleep(0.01)


async def publish(
    router: Router,
    stream_id: str,
    tracks: list[MediaStreamTrack],
    pc: RTCPeerConnection | None = None,
) -> RTCPeerConnection:
    """A send-only publisher of ``tracks`` to ``router`` (not waiting for the connection)."""
    pc = pc or new_pc()
    for track in tracks:
        pc.addTransceiver(track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer = await router.publish(stream_id, pc.localDescription)
    await pc.setRemoteDescription(answer)
    return pc


async def subscribe(
    router: Router,
    subscription_id: str,
    stream_id: str,
    pc: RTCPeerConnection | None = None,
) -> tuple[RTCPeerConnection, dict[str, MediaStreamTrack]]:
    """A subscriber of ``stream_id``: answers the router's offer and waits until connected."""
    pc = pc or new_pc()
    tracks = on_tracks(pc)
    offer = await router.subscribe(subscription_id, stream_id)
    await pc.setRemoteDescription(offer)
    await pc.setLocalDescription(await pc.createAnswer())
    await router.accept_answer(subscription_id, pc.localDescription)
    await wait_connected(pc)
    return pc, tracks


def video_ssrc_of(description_sdp: str) -> int:
    """The first video SSRC announced in an SDP."""
    from aiortc import sdp

    desc = sdp.SessionDescription.parse(description_sdp)
    for media in desc.media:
        if media.kind == "video" and media.ssrc:
            return int(media.ssrc[0].ssrc)
    raise AssertionError("no video ssrc")
