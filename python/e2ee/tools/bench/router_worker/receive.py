"""What a bench subscriber puts in place of aiortc's receive path, so nothing is decoded.

Each receiver's private jitter buffer is replaced by :class:`Assembler`, which emits a VP8
frame as soon as its marker packet is in (aiortc's buffer waits for the first packet of
the *next* frame, which would add a frame interval to every measurement), and its decoder
queue by :class:`FrameSink`, which takes each frame on the event loop (no thread hop) and
hands it to the track's :class:`Receiver`.  That decrypts it with
:class:`e2ee.FrameDecryptor` and reads the stamp: latency = receive time - send time (both
CLOCK_MONOTONIC on the same host, so the clocks agree), lost frames = gaps in ``seq``.
RTP packets are counted as they arrive (RTX included).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from e2ee.tools.bench.router_worker.media import MAGIC, STAMP, VP8_PAYLOAD_BYTES, clear_bytes

__all__ = ["Assembler", "FrameSink", "Receiver"]

log = logging.getLogger("e2ee.tools.bench.router_worker")


class Receiver:
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


class Assembler:
    """Stands in for the receiver's private jitter buffer (``add(packet)`` only).

    Audio: one packet is one frame.  VP8: a frame is complete when its first packet
    (descriptor S=1, partition 0), its marker packet and every sequence number between
    have arrived, in any order (NACK/RTX still work: aiortc's NACK generator runs before
    this).  Frames that never complete are evicted and counted as ``incomplete``.
    """

    def __init__(self, rx: Receiver) -> None:
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


class FrameSink:
    """Stands in for the receiver's decoder queue: frames go to the :class:`Receiver` on
    the event loop; aiortc's decoder thread only ever gets the stop sentinel."""

    def __init__(self, rx: Receiver) -> None:
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
