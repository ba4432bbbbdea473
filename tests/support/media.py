"""Helpers for the aiortc integration tests: synthetic tracks, in-process signaling, and a
collector of decoded frames.

Everything is real: libvpx and libopus through PyAV, aiortc peers on the local host with
ICE host candidates only (``RTCConfiguration(iceServers=[])``).  No numpy: frames are
built from byte patterns and checked by sampling bytes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection

from e2ee.tools.synthetic import (  # noqa: F401 - re-exported for the tests
    AUDIO_RATE,
    LEFT_LUMA,
    RIGHT_LUMA,
    TONE_HZ,
    VIDEO_CLOCK_RATE,
    EncodedVp8Track,
    FrameCollector,
    Received,
    SyntheticAudioTrack,
    SyntheticVideoTrack,
    looks_like_source,
    tone_ratio,
    video_halves,
)


def new_pc() -> RTCPeerConnection:
    """A peer connection for loopback tests: host candidates only, no STUN/TURN."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def connect(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    """Negotiate ``offerer`` -> ``answerer`` in process by exchanging the SDP objects.

    aiortc gathers all candidates inside ``setLocalDescription``, so no trickle is needed.
    Returns once both peers report ``connectionState == "connected"``.
    """
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    deadline = time.monotonic() + 10
    while not (offerer.connectionState == answerer.connectionState == "connected"):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"not connected: {offerer.connectionState} / {answerer.connectionState}"
            )
        await asyncio.sleep(0.02)


def on_tracks(pc: RTCPeerConnection) -> dict[str, MediaStreamTrack]:
    """Record the remote tracks of ``pc`` by kind as the "track" events arrive."""
    tracks: dict[str, MediaStreamTrack] = {}

    @pc.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        tracks[track.kind] = track

    return tracks


# -- Synthetic sources -------------------------------------------------------------------


@dataclass
class Peer:
    """One aiortc peer, optionally protected, with everything it reported."""

    pc: RTCPeerConnection
    transform: object | None = None
    events: list[object] = field(default_factory=list)
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)
    collectors: dict[str, FrameCollector] = field(default_factory=dict)

    def events_of(self, type: str, kind: str | None = None) -> list[object]:
        return [e for e in self.events if e.type == type and (kind is None or e.kind == kind)]

    def collect(self) -> None:
        """Start a collector on every remote track received so far."""
        for kind, track in self.tracks.items():
            if kind not in self.collectors:
                self.collectors[kind] = FrameCollector(track).start()

    async def close(self) -> None:
        for collector in self.collectors.values():
            await collector.stop()
        await self.pc.close()


def make_peer(ring: object | None) -> Peer:
    """A fresh peer connection; protected with ``ring`` unless ``ring`` is None."""
    from e2ee.transform.protect import protect

    peer = Peer(new_pc())
    peer.tracks = on_tracks(peer.pc)
    if ring is not None:
        peer.transform = protect(peer.pc, ring, on_event=peer.events.append)
    return peer


async def call(publisher: Peer, subscriber: Peer, tracks: list[MediaStreamTrack]) -> None:
    """``publisher`` sends ``tracks`` to ``subscriber`` (send-only), connect, and start
    collecting what ``subscriber`` decodes."""
    for track in tracks:
        publisher.pc.addTransceiver(track, direction="sendonly")
    await connect(publisher.pc, subscriber.pc)
    subscriber.collect()
