"""Benchmarks: the media layer's per-frame cost beside the raw SFrame core.

``FrameEncryptor.encrypt`` / ``FrameDecryptor.decrypt`` (codec prefix, KID management,
replay window, events) against ``sframe.Encryptor`` / ``Decryptor`` doing the same SFrame
work with the clear prefix passed as metadata by hand.  Groups ``media-{frame}-{op}``
compare the two; the media layer may add at most 0.5 µs a frame.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from e2ee import FrameDecryptor, FrameEncryptor, KeyRing
from e2ee.crypto import sframe

SUITE = sframe.CipherSuite.AES_256_CTR_HMAC_SHA512_80
# (codec, clear bytes, frame): an Opus packet, a VP8 delta frame, a VP8 key frame.
FRAMES = {
    "opus-100B": ("opus", 1, b"\xfc" + bytes(99)),
    "vp8-1200B": ("vp8", 3, b"\x31\x02\x00" + bytes(1197)),
    "vp8-10KB": ("vp8", 10, b"\x50\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01" + bytes(9990)),
}


def _ring() -> KeyRing:
    ring = KeyRing("bench", kdf_iterations=1000)
    ring.set_secret("benchmark secret")
    return ring


@pytest.mark.parametrize("frame_name", FRAMES)
@pytest.mark.parametrize("layer", ["media", "raw"])
def test_encrypt(benchmark: BenchmarkFixture, frame_name: str, layer: str) -> None:
    codec, n, frame = FRAMES[frame_name]
    benchmark.group = f"media-{frame_name}-encrypt"
    ring = _ring()
    op: Callable[[], bytes]
    if layer == "media":
        enc = FrameEncryptor(ring, codec)
        op = lambda: enc.encrypt(frame)  # noqa: E731
    else:
        raw = sframe.Encryptor(SUITE, ring.snapshot.current.key, 1)  # type: ignore[union-attr]
        clear, body = memoryview(frame)[:n], memoryview(frame)[n:]
        op = lambda: raw.encrypt(body, clear)  # noqa: E731
    benchmark.pedantic(op, rounds=2000, iterations=20, warmup_rounds=10)


@pytest.mark.parametrize("frame_name", FRAMES)
@pytest.mark.parametrize("layer", ["media", "raw"])
def test_decrypt(benchmark: BenchmarkFixture, frame_name: str, layer: str) -> None:
    codec, n, frame = FRAMES[frame_name]
    benchmark.group = f"media-{frame_name}-decrypt"
    ring = _ring()
    wire = FrameEncryptor(ring, codec).encrypt(frame)
    op: Callable[[], bytes]
    if layer == "media":
        dec = FrameDecryptor(ring, codec, replay_window=0)
        op = lambda: dec.decrypt(wire)  # noqa: E731
    else:
        raw = sframe.Decryptor(SUITE, replay_window=0)
        kid = sframe.decode_header(wire[n:])[0]
        raw.add_key(kid, ring.snapshot.current.key)  # type: ignore[union-attr]
        clear, body = memoryview(wire)[:n], memoryview(wire)[n:]
        op = lambda: raw.decrypt(body, clear)  # noqa: E731
    benchmark.pedantic(op, rounds=2000, iterations=20, warmup_rounds=10)
