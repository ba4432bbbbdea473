"""A bench publisher's uplink: every RTP packet it sends is counted, and some are dropped
on purpose (the loss scenario of ``e2ee bench router``).

:class:`Uplink` wraps the publisher's DTLS transport's packet sender
(:func:`e2ee.rtc.compat.hook_transport_send`), which sees every RTP packet before SRTP:
media, RTX retransmissions (RFC 4588) and RTCP.  A dropped packet never reaches SRTP or
the socket, exactly as if the network had lost it; RTCP is never dropped.  Loss modes
(:meth:`Uplink.set_loss`): independent random loss with probability ``p`` per RTP packet,
and one burst (every RTP packet, retransmissions included, for ``burst_ms``).

Which publisher frame a packet belongs to comes from its RTP timestamp: the publisher
numbers frames ``n`` with ``pts = n * ticks`` and aiortc sends ``origin + pts``
(rtcrtpsender.py:375), so ``origin`` is learned from the first packet of each track
(sent while frame ``track.sent - 1`` is being packetized) and RTX packets carry the
timestamp of the packet they repeat (RFC 4588 §4).

It also records when each frame's last packet (the VP8 marker packet, RFC 7741 §4.1; an
Opus packet) was handed to SRTP and the socket, first time only, dropped or not: the
bench's latency starts there, so a publisher that was slow to send (its CPU busy) does
not count as router latency.
"""

from __future__ import annotations

import bisect
import random
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Uplink"]

_RTP = struct.Struct(">BBHII")
SendRtp = Callable[[bytes], Coroutine[Any, Any, None]]


class _Kind:
    """One SSRC's packets: which track, and the timestamp origin learned from it."""

    __slots__ = ("counter", "frames", "name", "origin", "ticks")

    def __init__(self, name: str, frames: Callable[[], int], ticks: int, counter: str) -> None:
        self.name = name
        self.frames = frames  # frames the track has returned so far
        self.ticks = ticks
        self.counter = counter  # "video", "rtx" or "audio"
        self.origin: int | None = None


class Uplink:
    """Counts, and drops by the current loss mode, the RTP packets a publisher sends."""

    def __init__(self, seed: int = 13) -> None:
        self._rng = random.Random(seed)
        self._kinds: dict[int, _Kind] = {}
        self._origins: dict[str, int] = {}
        # Each frame's last packet: when it was first sent (in frame order).
        self._wire_n: dict[str, list[int]] = {"video": [], "audio": []}
        self._wire_ns: dict[str, list[int]] = {"video": [], "audio": []}
        self.p = 0.0
        self.burst_from = 0.0
        self.burst_until = 0.0
        self.mark()

    def add_track(self, ssrcs: list[int], name: str, frames: Callable[[], int], ticks: int) -> None:
        """The SSRCs of one track (media first, then RTX if any)."""
        for i, ssrc in enumerate(ssrcs):
            counter = name if i == 0 else "rtx"
            self._kinds[ssrc] = _Kind(name, frames, ticks, counter)

    def wire_since(self, name: str, ns: int) -> dict[str, list[int]]:
        """Frame numbers and wire times of ``name``'s frames sent from ``ns`` on."""
        times = self._wire_ns[name]
        i = bisect.bisect_left(times, ns)
        return {"n": self._wire_n[name][i:], "ns": times[i:]}

    def mark(self) -> None:
        """Start a new window of counts."""
        self.sent = {"video": 0, "rtx": 0, "audio": 0}
        self.dropped = {"video": 0, "rtx": 0, "audio": 0}
        self.affected: dict[str, set[int]] = {"video": set(), "audio": set()}
        self.bursts: list[tuple[int, int]] = []

    def set_loss(self, p: float = 0.0, burst_ms: float = 0.0, burst_in_s: float = 0.0) -> None:
        """Random loss ``p`` from now on, and one burst of ``burst_ms`` starting
        ``burst_in_s`` seconds from now (0: none)."""
        self.p = p
        if burst_ms > 0:
            self.burst_from = time.monotonic() + burst_in_s
            self.burst_until = self.burst_from + burst_ms / 1000
            ns = time.monotonic_ns() + int(burst_in_s * 1e9)
            self.bursts.append((ns, ns + int(burst_ms * 1e6)))
        else:
            self.burst_from = self.burst_until = 0.0

    def _frame(self, kind: _Kind, ts: int) -> int:
        origin = self._origins.get(kind.name)
        if origin is None:
            n = kind.frames() - 1
            origin = self._origins[kind.name] = (ts - n * kind.ticks) & 0xFFFFFFFF
        return ((ts - origin) & 0xFFFFFFFF) // kind.ticks

    def wrap(self, send: SendRtp) -> SendRtp:
        """The transport's new packet sender (for :func:`e2ee.rtc.compat.hook_transport_send`)."""

        async def send_rtp(data: bytes) -> None:
            # RFC 5761 §4: RTCP packet types 192..223 are never RTP payload types.
            if len(data) >= 12 and not 191 < data[1] < 224:
                _first, b1, _seq, ts, ssrc = _RTP.unpack_from(data)
                kind = self._kinds.get(ssrc)
                if kind is not None:
                    self.sent[kind.counter] += 1
                    n = self._frame(kind, ts)
                    name = kind.counter
                    if (name == "audio" or (name == "video" and b1 & 0x80)) and (
                        not self._wire_n[name] or n > self._wire_n[name][-1]
                    ):
                        self._wire_n[name].append(n)
                        self._wire_ns[name].append(time.monotonic_ns())
                    if self._drop():
                        self.dropped[kind.counter] += 1
                        self.affected[kind.name].add(n)
                        return
            await send(data)

        return send_rtp

    def _drop(self) -> bool:
        if self.burst_until:
            now = time.monotonic()
            if self.burst_from <= now < self.burst_until:
                return True
        return self.p > 0 and self._rng.random() < self.p

    def report(self) -> dict[str, Any]:
        return {
            "loss_p": self.p,
            "packets_sent": dict(self.sent),
            "packets_dropped": dict(self.dropped),
            "frames_affected": {k: sorted(v) for k, v in self.affected.items()},
            "bursts_ns": [list(b) for b in self.bursts],
        }
