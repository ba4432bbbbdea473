"""Unit tests of the router's per-frame core, e2ee.sfu.policy: VP8 frame classification
and the per-subscriber queue gate (no network, no aiortc peers; the router itself is tested
in tests/integration/test_router.py)."""

from __future__ import annotations

from e2ee.sfu.policy import (
    ACCEPT,
    DROP,
    DROP_OLDEST,
    FLUSH_ACCEPT,
    FLUSH_DROP,
    VP8_DELTA,
    VP8_INVALID,
    VP8_KEY,
    FrameGate,
    classify_vp8,
)
from support import FIXTURES


def test_classify_vp8() -> None:
    key = (FIXTURES / "vp8_320x240_00_key.bin").read_bytes()
    delta = (FIXTURES / "vp8_320x240_01_delta.bin").read_bytes()
    assert classify_vp8(key) == VP8_KEY
    assert classify_vp8(delta) == VP8_DELTA
    assert classify_vp8(b"") == VP8_INVALID
    assert classify_vp8(b"\x00\x00") == VP8_INVALID
    assert classify_vp8(key[:9]) == VP8_INVALID
    assert classify_vp8(b"\x00\x00\x00\x01\x02\x03" + key[6:]) == VP8_INVALID  # no start code


def test_frame_gate_video() -> None:
    gate = FrameGate(3, video=True)
    assert gate.admit(False, 0) == DROP  # waits for a key frame
    assert gate.admit(True, 0) == ACCEPT
    assert gate.admit(False, 1) == ACCEPT
    assert gate.admit(False, 2) == ACCEPT
    assert gate.admit(False, 3) == FLUSH_DROP  # overflow: flush, wait for a key frame
    assert gate.need_keyframe
    assert gate.dropped_overflow == 4
    assert gate.admit(False, 0) == DROP
    assert gate.admit(True, 0) == ACCEPT
    assert gate.admit(True, 3) == FLUSH_ACCEPT  # a key frame restarts the queue
    gate.lost()
    assert gate.admit(False, 1) == DROP
    assert gate.dropped_waiting == 3


def test_frame_gate_audio() -> None:
    gate = FrameGate(2, video=False)
    assert gate.admit(False, 0) == ACCEPT
    assert gate.admit(False, 2) == DROP_OLDEST
    gate.lost()
    assert gate.admit(False, 1) == ACCEPT
    assert gate.dropped_overflow == 1
