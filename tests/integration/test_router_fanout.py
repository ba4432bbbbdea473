"""The router's fan-out (e2ee.sfu.egress_fanout, e2ee._srtp.Fanout) between real aiortc
peers: one publisher, three subscribers whose aiortc (libsrtp) unprotects and decodes what
one Rust call per frame built, protected and wrote for all of them (UDP GSO for a frame's
runs of equal-size packets, where the kernel has it).  Byte-level checks, the would-block
path and NACKs are in tests/unit/sfu/test_egress_fanout.py."""

from __future__ import annotations

from typing import Any

import pytest
from aiortc import RTCConfiguration

from e2ee.sfu import Router
from support.media import FrameCollector, SyntheticAudioTrack, SyntheticVideoTrack, new_pc
from support.router import publish, subscribe, wait_connected

pytestmark = pytest.mark.timeout(40)


@pytest.mark.asyncio
async def test_three_subscribers_decode_what_one_call_per_frame_sent(
    cleanup: list[Any],
) -> None:
    router = Router(rtc_configuration=RTCConfiguration(iceServers=[]))
    cleanup.append(router)
    pub = new_pc()
    cleanup.append(pub)
    # 640x480: key frames of several packets, so the frames have runs to send as GSO.
    await publish(router, "alice", [SyntheticVideoTrack(640, 480), SyntheticAudioTrack()], pub)
    await wait_connected(pub)
    collectors = []
    for i in range(3):
        pc = new_pc()
        cleanup.append(pc)
        _, tracks = await subscribe(router, f"sub{i}", "alice", pc)
        video = FrameCollector(tracks["video"]).start()
        audio = FrameCollector(tracks["audio"]).start()
        cleanup.extend([video, audio])
        collectors.append((video, audio))
    for video, audio in collectors:
        assert await video.wait_for(15, timeout=10), f"video frames: {len(video.frames)}"
        assert await audio.wait_for(15, timeout=4), f"audio frames: {len(audio.frames)}"
        assert {(f.width, f.height) for f in video.frames} == {(640, 480)}
        assert all(f.good for f in video.frames)  # the real pictures, from a key frame on
    stats = router.stats()
    for i in range(3):
        per_kind = {t["kind"]: t for t in stats["subscriptions"][f"sub{i}"]["tracks"].values()}
        for kind, track in per_kind.items():
            assert track["fanout"], (kind, track)
            assert track["srtp_backend"] == "rust"
            # Loopback takes every datagram: all written by the fan-out itself.
            assert track["packets_mmsg"] == track["packets_rust"] == track["packets_forwarded"]
            assert track["packets_forwarded"] > 0
        assert per_kind["video"]["gso"]  # a kernel with UDP_SEGMENT (Linux >= 4.18)
