"""The light receive path of a bench subscriber: a few operations per RTP packet, so that
one process can terminate hundreds of subscriptions and the bench measures the router,
not its own clients.

aiortc still does ICE, DTLS, RTCP and signalling; every RTP datagram of the subscription
is taken where it arrives, on the ICE socket (:func:`e2ee.rtc.compat.ice_protocols`,
read by a reader of :mod:`~e2ee.tools.bench.router_worker.sockets`), and never reaches
aioice's queue, the DTLS transport, SRTP, the RTP parser, the receiver or a jitter
buffer.  Per packet (:meth:`LightTrack.packet`, or its port to Rust in
:class:`e2ee._srtp.RtpReader` on the native path, which then calls
:meth:`LightTrack.frame` once per frame): the clear RTP header is read (RFC 3550 §5.1:
the SRTP header is not encrypted, RFC 3711 §3.1), packets and bytes are counted,
sequence gaps counted as losses, and a frame is delivered at its marker packet if no
packet of it is missing (RTP timestamp changes mark frame starts), at the marker's
arrival time (the kernel's, from the reader).  This relies on the router
relaying whole frames, in order (:mod:`e2ee.sfu.assembler`): a packet that arrives after
a later one is ignored (``late``), and a frame whose packets are not all in by its marker
is not delivered (``incomplete``).

Which frame a delivered frame is (the publisher's frame number ``n``, whose send time
the publisher records) comes from its RTP timestamp: the publisher stamps frame ``n``
with ``n * ticks`` (3000 per video frame at 90 kHz, 960 per Opus frame at 48 kHz) and
the router shifts timestamps by a per-subscription constant, so ``n = n_ref + (ts -
ts_ref) / ticks``.  The reference comes from a *probe*: the first frame, and then one
frame every ``probe_every`` frames, is also SRTP-unprotected with the DTLS transport's
own receive session (:func:`e2ee.rtc.compat.srtp_rx_session`), depacketized, decrypted
with :class:`e2ee.FrameDecryptor` and its stamp read; a probe that disagrees with the
mapping counts as a mismatch and re-anchors it.  A probe that decrypts also proves the
frame complete (the SFrame tag covers all of it), which is how the first frame, whose
predecessor was never seen, is accepted.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from e2ee.tools.bench.router_worker.media import (
    AUDIO_FRAME_SAMPLES,
    MAGIC,
    STAMP,
    VIDEO_CLOCK,
    clear_bytes,
)
from e2ee.tools.bench.router_worker.window import TrackWindow

if TYPE_CHECKING:
    from e2ee.tools.bench.router_worker.sockets import NativeReader

__all__ = ["LightSubscription", "LightTrack", "payload_kinds"]

log = logging.getLogger("e2ee.tools.bench.router_worker")

#: The fixed RTP header (RFC 3550 §5.1): V/P/X/CC, M/PT, sequence number, timestamp, SSRC.
_RTP = struct.Struct(">BBHII")
_HALF32 = 1 << 31


def payload_kinds(sdp: str) -> dict[int, str]:
    """Payload type -> ``"video"`` (VP8), ``"audio"`` (Opus) or ``"rtx"``, from the
    router's offer."""
    from aiortc import sdp as aiortc_sdp

    kinds: dict[int, str] = {}
    for media in aiortc_sdp.SessionDescription.parse(sdp).media:
        for codec in media.rtp.codecs:
            name = codec.mimeType.split("/")[-1].lower()
            if codec.payloadType is None:
                continue
            if name == "rtx":
                kinds[codec.payloadType] = "rtx"
            elif name in ("vp8", "opus"):
                kinds[codec.payloadType] = media.kind
    return kinds


class LightTrack(TrackWindow):
    """One published track at one subscriber, on the light path (see the module docs)."""

    __slots__ = (
        "_after",
        "_base_n",
        "_base_ts",
        "_decryptor",
        "_depayload",
        "_ended",
        "_intact",
        "_native",
        "_native_id",
        "_next_probe",
        "_next_seq",
        "_parts",
        "_probe_every",
        "_probing",
        "_srtp",
        "_ticks",
        "_ts",
        "_uncertain",
        "late",
    )

    def __init__(
        self,
        sub: int,
        stream_id: str,
        kind: str,
        decryptor: Any,
        srtp: Callable[[], Any],
        probe_every: int,
    ) -> None:
        self._native: Any = None  # the RtpReader that runs packet() for this track
        self._native_id = -1
        super().__init__(sub, stream_id, kind)
        from aiortc.codecs.vpx import vp8_depayload

        self._decryptor = decryptor
        self._srtp = srtp
        self._probe_every = max(1, probe_every)
        self._depayload: Callable[[bytes], bytes] | None = vp8_depayload if self.video else None
        self._ticks = VIDEO_CLOCK // 30 if self.video else AUDIO_FRAME_SAMPLES
        self._next_seq = -1
        self._ts = -1
        self._after: int | None = None  # sequence number after the last marker seen
        self._ended = True
        self._intact = False
        self._uncertain = True
        self._parts: list[bytes] | None = None
        self._base_n = 0
        self._base_ts: int | None = None
        self._next_probe = 0
        self._probing = True
        self.late = 0

    def set_ticks(self, ticks: int) -> None:
        """RTP timestamp ticks per frame (the publisher's: clock / frame rate)."""
        self._ticks = ticks

    def attach(self, rtp: Any, number: int) -> None:
        """The native path: ``rtp`` (an :class:`e2ee._srtp.RtpReader`) runs
        :meth:`packet`'s work as track ``number`` and calls :meth:`frame`; it holds the
        packet counters, taken at :meth:`mark` and :meth:`report`."""
        self._native = rtp
        self._native_id = number
        rtp.set_probe(number, self._probing)

    def mark(self) -> None:
        super().mark()
        if self._native is not None:
            late = self._native.take_counters(self._native_id)[4]
            self.late += late  # like the Python path's, over the whole run

    # -- per packet (the hot path) ---------------------------------------------------------

    def packet(self, data: bytes, b1: int, seq: int, ts: int, arrival: int) -> None:
        self.packets += 1
        self.bytes += len(data)
        if seq != self._next_seq and not self._jump(seq):
            return
        self._next_seq = (seq + 1) & 0xFFFF
        if self.video:
            if ts != self._ts:
                self._start(data, seq, ts)
            elif self._parts is not None:
                self._parts.append(data)
            if not b1 & 0x80:
                return
            # The marker: the frame's last packet.
            self._ended = True
            self._after = (seq + 1) & 0xFFFF
            parts = self._parts
            self._parts = None
            if not self._intact:
                self.incomplete += 1
                return
        elif self._base_ts is None or self.frames_total >= self._next_probe:
            parts = [data]  # an Opus packet is a frame
        else:
            parts = None
        base_ts = self._base_ts
        if parts is None and base_ts is not None:
            d = (ts - base_ts) & 0xFFFFFFFF
            if d < _HALF32:  # the common case: a later frame on the publisher's grid
                frames, rest = divmod(d, self._ticks)
                if not rest:
                    self.frames_total += 1
                    self.ns.append(self._base_n + frames)
                    self.times.append(arrival)
                    return
        self._frame(ts, parts, arrival)

    # -- per frame (the native path; packet() ported to Rust) -------------------------------

    def frame(self, ts: int, arrival: int, parts: list[bytes] | None, uncertain: bool) -> None:
        """A frame complete by its RTP headers, with its packets when it is to be
        decrypted (a probe, or an uncertain video frame)."""
        self._uncertain = uncertain
        base_ts = self._base_ts
        if parts is None and base_ts is not None:
            d = (ts - base_ts) & 0xFFFFFFFF
            frames, rest = divmod(d, self._ticks)
            if d < _HALF32 and not rest:  # as in packet()
                self.frames_total += 1
                self.ns.append(self._base_n + frames)
                self.times.append(arrival)
            else:
                self._frame(ts, parts, arrival)
        else:
            self._frame(ts, parts, arrival)
        # What packet() decides per frame start: keep the next frame for a probe?  The
        # reader returns one kept frame per request, so ask again after every frame while
        # one is wanted (a probe before DTLS is up, or one that did not decrypt).
        probing = self._base_ts is None or self.frames_total >= self._next_probe
        if probing or self._probing:
            self._native.set_probe(self._native_id, probing)
        self._probing = probing

    def _jump(self, seq: int) -> bool:
        """A packet out of sequence: count the gap; ``False`` if it is late (its frame
        was judged already) and to be ignored."""
        expected = self._next_seq
        if expected < 0:
            return True
        gap = (seq - expected) & 0xFFFF
        if gap >= 0x8000:
            self.late += 1
            return False
        self.seq_gaps += gap
        self._intact = False
        return True

    def _start(self, data: bytes, seq: int, ts: int) -> None:
        """The first packet of a new video frame (a new RTP timestamp)."""
        if not self._ended:
            self.incomplete += 1  # the previous frame never got its marker
        self._ts = ts
        self._ended = False
        # Packets missing right before it may have been its own first ones: then only
        # decrypting it (the SFrame tag covers the whole frame) tells; so for the very
        # first frame too.
        self._uncertain = self._after is None or seq != self._after
        self._intact = True
        probe = self._uncertain or self._base_ts is None or self.frames_total >= self._next_probe
        self._parts = [data] if probe else None

    def _frame(self, ts: int, parts: list[bytes] | None, now: int) -> None:
        if parts is not None:
            probed = self._probe(parts)
            if probed is False:  # it did not decrypt: not a whole, authentic frame
                if self.video and self._uncertain:
                    self.incomplete += 1
                else:
                    self.errors += 1
                return
            if isinstance(probed, tuple):
                n, sent = probed
                self.probed(n, sent)
                mapped = self._map(ts)
                if mapped is not None and mapped != n:
                    self.mismatches += 1
                self._base_n, self._base_ts = n, ts
                self._next_probe = self.frames_total + 1 + self._probe_every
                self.delivered(n, now)
                return
        mapped = self._map(ts)
        if mapped is None:
            self.unmapped += 1
        else:
            self.delivered(mapped, now)

    def _map(self, ts: int) -> int | None:
        """The publisher's frame number of RTP timestamp ``ts`` (``None``: not known, or
        off the frame grid, which re-anchors the mapping at the next probe)."""
        base_ts = self._base_ts
        if base_ts is None:
            return None
        d = (ts - base_ts) & 0xFFFFFFFF
        if d >= _HALF32:
            d -= 1 << 32
        frames, rest = divmod(d, self._ticks)
        if rest:
            self.mismatches += 1
            self._base_ts = None
            return None
        return self._base_n + frames

    def _probe(self, parts: list[bytes]) -> tuple[int, int] | bool | None:
        """``(n, send time)`` from the stamp inside the decrypted frame; ``False`` if it
        does not decrypt; ``None`` before DTLS is complete (try the next frame)."""
        from aiortc.rtp import RtpPacket

        session = self._srtp()
        if session is None:
            return None
        try:
            payloads = [RtpPacket.parse(session.unprotect(p)).payload for p in parts]
            depayload = self._depayload
            frame = b"".join(map(depayload, payloads) if depayload else payloads)
            plain: bytes = self._decryptor.decrypt(frame)
            magic, n, sent = STAMP.unpack_from(plain, clear_bytes(self.video, plain))
        except Exception:
            return False
        if magic != MAGIC:
            return False
        return int(n), int(sent)

    def report(self) -> dict[str, Any]:
        if self._native is not None:
            packets, size, gaps, incomplete, late = self._native.take_counters(self._native_id)
            self.packets += packets
            self.bytes += size
            self.seq_gaps += gaps
            self.incomplete += incomplete
            self.late += late
        return {**super().report(), "late": self.late}


class LightSubscription:
    """One subscription's peer connection on the light path: RTP by SSRC to its
    :class:`LightTrack` (learned from the payload type), the rest to aiortc."""

    def __init__(self, kinds: dict[int, str], tracks: dict[str, LightTrack]) -> None:
        self._kinds = kinds
        self._tracks = tracks
        self._by_ssrc: dict[int, LightTrack] = {}
        self._other = 0
        self._rtcp = 0
        self._native: tuple[Any, int] | None = None  # (RtpReader, subscription number)

    @property
    def other_packets(self) -> int:
        """RTP packets of RTX or unknown payload types (counted, not used)."""
        if self._native is not None:
            return int(self._native[0].subscription_counters(self._native[1])[1])
        return self._other

    @property
    def rtcp_packets(self) -> int:
        """The router's RTCP packets (counted, dropped)."""
        if self._native is not None:
            return int(self._native[0].subscription_counters(self._native[1])[0])
        return self._rtcp

    def attach(self, reader: NativeReader, protocols: list[Any]) -> None:
        """The native path: ``protocols``' sockets read by ``reader``, which follows each
        track's packets to frames itself (the Python path: :meth:`wrap`)."""
        sub = reader.subscription()
        for kind, track in self._tracks.items():
            types = sorted(pt for pt, k in self._kinds.items() if k == kind)
            track.attach(reader.rtp, reader.track(sub, types, track.video, track))
        for protocol in protocols:
            reader.take(protocol, sub)
        self._native = (reader.rtp, sub)

    def _learn(self, ssrc: int, payload_type: int) -> LightTrack | None:
        track = self._tracks.get(self._kinds.get(payload_type, ""))
        if track is None:
            self._other += 1
            return None
        self._by_ssrc[ssrc] = track
        return track

    def wrap(self, original: Callable[[bytes, Any], None]) -> Callable[[bytes, Any, int], None]:
        """The ICE socket's datagram handler: RTP here; the router's RTCP (sender
        reports, which a subscriber that never plays out has no use for) counted and
        dropped, sparing aiortc's SRTCP and RTCP path; STUN and DTLS to ``original``
        (the aioice protocol's ``datagram_received``)."""
        by_ssrc = self._by_ssrc
        unpack = _RTP.unpack_from
        learn = self._learn

        def received(data: bytes, addr: Any, arrival: int) -> None:
            # RFC 7983 §7: 128..191 is RTP or RTCP; RFC 5761 §4: RTCP types 192..223.
            if len(data) > 12 and 127 < data[0] < 192:
                if 191 < data[1] < 224:
                    self._rtcp += 1
                    return
                _first, b1, seq, ts, ssrc = unpack(data)
                track = by_ssrc.get(ssrc) or learn(ssrc, b1 & 0x7F)
                if track is not None:
                    track.packet(data, b1, seq, ts, arrival)
            else:
                original(data, addr)

        return received
