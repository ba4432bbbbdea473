"""e2ee.rtc.compat: the version gate, the behavioural probe, and the encoder seam."""

from __future__ import annotations

import fractions
from collections.abc import Iterator
from typing import Any

import aiortc
import av
import pytest
from aiortc import RTCRtpSender
from aiortc.codecs.vpx import Vp8Encoder

from e2ee.rtc import compat
from e2ee.wire.vp8 import parse_vp8_payload_descriptor


@pytest.fixture
def fresh_check() -> Iterator[None]:
    compat.check.cache_clear()
    yield
    compat.check.cache_clear()


def test_the_installed_aiortc_passes(fresh_check: None) -> None:
    compat.check()


@pytest.mark.parametrize("version", ["1.15.0", "1.17.0", "2.0", ""])
def test_other_aiortc_versions_are_refused(
    fresh_check: None, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    monkeypatch.setattr(aiortc, "__version__", version)
    with pytest.raises(compat.CompatError, match=r"checked against aiortc 1\.16"):
        compat.check()


def test_the_probe_notices_a_sender_that_ignores_its_preset_encoder(
    fresh_check: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An aiortc whose sender builds its own encoder every time: an E2EE encoder preset
    # the usual way would never run, and frames would leave in clear.
    original = RTCRtpSender._next_encoded_frame

    async def own_encoder(self: RTCRtpSender, codec: Any) -> Any:
        compat.set_sender_encoder(self, Vp8Encoder())
        return await original(self, codec)

    monkeypatch.setattr(RTCRtpSender, "_next_encoded_frame", own_encoder)
    with pytest.raises(compat.CompatError, match="preset encoder"):
        compat.check()


def test_a_missing_seam_is_named(fresh_check: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(aiortc.RTCRtpReceiver, "_send_rtcp_pli")
    with pytest.raises(compat.CompatError, match=r"RTCRtpReceiver\._send_rtcp_pli"):
        compat.check()


class _Upper(compat.PacketizingVp8Encoder):
    """Replaces each frame by a marker of its length; drops frames ending in ``drop``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    def transform_frame(self, frame: bytes) -> bytes | None:
        self.seen.append(frame)
        if frame.endswith(b"drop"):
            return None
        return b"\x01\x00\x00" + len(frame).to_bytes(4, "big")


def _frames_of(payloads: list[bytes]) -> bytes:
    return b"".join(p[parse_vp8_payload_descriptor(p).size :] for p in payloads)


class _Packet:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pts = 0
        self.time_base = fractions.Fraction(1, 90000)

    def __bytes__(self) -> bytes:
        return self.data


def test_transform_frame_sees_every_frame_on_the_pack_path() -> None:
    encoder = _Upper()
    payloads, _ = encoder.pack(_Packet(b"\x01" + b"x" * 5000))
    assert encoder.seen == [b"\x01" + b"x" * 5000]
    assert _frames_of(payloads) == b"\x01\x00\x00" + (5001).to_bytes(4, "big")
    assert encoder.pack(_Packet(b"\x01 please drop"))[0] == []


def test_transform_frame_sees_every_frame_on_the_encode_path() -> None:
    raw = av.VideoFrame(width=320, height=240, format="yuv420p")
    for plane in raw.planes:
        plane.update(bytes(plane.buffer_size))
    raw.pts = 0
    raw.time_base = fractions.Fraction(1, 90000)
    encoder = _Upper()
    payloads, _ = encoder.encode(raw, force_keyframe=True)
    assert len(encoder.seen) == 1
    assert not encoder.seen[0][0] & 1  # a whole key frame
    assert _frames_of(payloads) == b"\x01\x00\x00" + len(encoder.seen[0]).to_bytes(4, "big")
