"""The full receive path of a bench subscriber (``--subscriber-kind full``): aiortc's
own, up to the frame, with nothing decoded.

Per packet aiortc runs its whole receive path (aioice, the DTLS transport, SRTP, the RTP
parser, the receiver with its NACK generator); each receiver's private jitter buffer is
replaced by :class:`Assembler`, which emits a VP8 frame as soon as its marker packet is
in (aiortc's buffer waits for the first packet of the *next* frame, which would add a
frame interval to every measurement), and its decoder queue by :class:`FrameSink`, which
takes each frame on the event loop (no thread hop) and hands it to the track's
:class:`Receiver`.  That decrypts every frame with :class:`e2ee.FrameDecryptor` and reads
the stamp: the publisher's frame number and send time
(:class:`~e2ee.tools.bench.router_worker.window.TrackWindow` records them).  RTP packets
are counted as they reach the jitter buffer (RTX included).  This is what a real client
pays per packet, about ten times the light path's
(:mod:`~e2ee.tools.bench.router_worker.light`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from e2ee.tools.bench.router_worker.media import MAGIC, STAMP, clear_bytes
from e2ee.tools.bench.router_worker.window import TrackWindow

__all__ = ["Assembler", "FrameSink", "Receiver"]

log = logging.getLogger("e2ee.tools.bench.router_worker")


class Receiver(TrackWindow):
    """What one subscriber receives of one published track (every frame decrypted)."""

    __slots__ = ("decryptor",)

    def __init__(self, sub: int, stream_id: str, kind: str, decryptor: Any) -> None:
        super().__init__(sub, stream_id, kind)
        self.decryptor = decryptor

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
        self.probed(seq, sent)
        self.delivered(seq, now)


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
        rx.bytes += len(data)
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
