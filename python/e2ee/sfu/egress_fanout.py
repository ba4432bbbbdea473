"""Egress, per frame: one published frame to all of a track's subscribers.

:class:`FanoutGroup` (one per :class:`e2ee.sfu.ingress.Forwarder`, its ``fan_out``) runs
the policy of each :class:`e2ee.sfu.egress.RelayTrack` in Python (``FrameGate``, key
frame waits, send backlog), then hands the whole frame to the Rust
:class:`e2ee._srtp.Fanout` in ONE call for every relay that has a leg there (a Rust
SRTP sender and a selector datagram transport): headers, SRTP and one ``sendmmsg(2)``
per subscriber (UDP GSO for runs of equal-size packets), no Python per packet.  A leg
whose asyncio transport still buffers datagrams is only built, and its packets join
that buffer, in order, as do the packets a full kernel buffer did not take: nothing
overtakes what asyncio holds.

Relays without a leg take :func:`send_one`: the frame built and protected in one call
to the Rust sender then ``sendto`` per packet (an event loop whose transports are not
selector ones), or packet by packet with aiortc's own libsrtp session (no
``e2ee._srtp``, a profile it lacks).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable
from typing import Any, Protocol

from e2ee.rtc import compat, srtp, udp
from e2ee.sfu.frames import RelayFrame, Totals
from e2ee.sfu.policy import FrameGate

__all__ = ["SR_NOTE_INTERVAL", "FanoutGroup", "RelayTrack", "send_one"]

log = logging.getLogger(__name__)

#: Seconds between two updates of the sender's RTCP SR counters by one relay (aiortc
#: sends an SR every 0.5 to 1.5 s, rtcrtpsender.py ``_run_rtcp``); also how often the
#: group checks that its steady relays still are.
SR_NOTE_INTERVAL = 0.25
_SR_NOTE_NTP = int(SR_NOTE_INTERVAL * (1 << 32))  # in 64-bit NTP format (RFC 3550 §4)

_HEADER = struct.Struct("!BBHII")  # V=2 P X CC | M PT | sequence | timestamp | SSRC


class RelayTrack(Protocol):
    """What this module uses of an :class:`e2ee.sfu.egress.RelayTrack` (which imports
    this module, so it is named here by its shape)."""

    b0: int
    payload_type: int
    media_ssrc: int
    next_seq: int
    ts_offset: int
    history: list[tuple[int, bytes] | None]
    path: compat.RtpPath | None
    rust: Any
    leg: int | None
    totals: Totals
    packets_libsrtp: int
    packets_not_direct: int
    gate: FrameGate

    @property
    def ended(self) -> bool: ...
    def admit(self, frame: RelayFrame) -> compat.RtpPath | None: ...
    def account(self, frame: RelayFrame, n: int) -> None: ...
    def relayed(
        self, frames: int, packets: int, size: int, keyframes: int, last: RelayFrame
    ) -> None: ...
    def note_sr(self, ntp: int) -> None: ...
    def backlog(self) -> int: ...
    def stopped(self, exc: Exception) -> None: ...
    def extension(self, abs_send_time: int) -> bytes: ...
    def extension_template(self) -> tuple[bytes, int | None]: ...


class FanoutGroup:
    """The relays of one forwarder, and the Rust fan-out of those that can use it
    (``fanout`` is ``None`` without ``e2ee._srtp``).

    Steady relays cost no Python per frame: a relay whose last frame went straight to
    its socket, that waits for no key frame and whose asyncio transport holds nothing,
    has nothing for its policy to decide (:meth:`RelayTrack.admit` would accept, with an
    empty backlog), so its leg is sent every frame without asking it, and what it relayed
    is counted once for all of them (:attr:`steady_sent`, folded into each relay's own counts
    when it is read, at each SR note, and when it leaves).  A relay leaves the steady set
    when its socket does not take a frame whole, when upstream loss makes it wait for a
    key frame (:meth:`gap`), when its leg goes, or when the check every
    :data:`SR_NOTE_INTERVAL` finds its transport closing or holding datagrams (written by
    aiortc or aioice: RTCP and STUN may be overtaken by media for that long, media by
    nothing).  It comes back after a frame its policy sent straight to the socket.
    """

    __slots__ = (
        "_check_due",
        "_last",
        "_steady_legs",
        "fanout",
        "legs",
        "steady",
        "steady_sent",
        "totals",
    )

    def __init__(self, history: int, totals: Totals) -> None:
        self.fanout = srtp.new_fanout(history)
        self.legs: dict[int, RelayTrack] = {}
        self.totals = totals
        # Frames, packets, bytes, key frames sent to the steady legs since the group began;
        # each steady relay keeps where these stood when it last folded them in.
        self.steady_sent = [0, 0, 0, 0]
        self._last: RelayFrame | None = None  # the last frame sent to steady legs
        self.steady: dict[RelayTrack, list[int]] = {}
        self._steady_legs: list[int] | None = []  # of self.steady, None when to rebuild
        self._check_due = 0  # NTP time (64-bit format) of the next check of the steady

    def send(self, frame: RelayFrame, relays: Iterable[Any]) -> None:
        """Relay ``frame`` to each of ``relays`` that its policy admits."""
        steady = self.steady
        if steady:
            if not isinstance(relays, (set, frozenset)):
                relays = set(relays)
            if not steady.keys() <= relays:  # a frame for some relays only (a test, one relay)
                for relay in [r for r in steady if r not in relays]:
                    self._leave(relay)
            slow: Iterable[Any] = relays.difference(steady)
        else:
            slow = relays
        direct: list[int] = []
        buffered: list[int] = []
        batch: list[RelayTrack] = []
        for relay in slow:
            admit = getattr(relay, "admit", None)
            if admit is None:
                # Not a RelayTrack: an archive recorder (e2ee.archive) or an embedder's
                # own subscriber, which takes whole frames through its send().
                relay.send(frame)
                continue
            path = admit(frame)
            if path is None:
                continue
            leg = relay.leg
            if leg is None:
                send_one(relay, frame, path)
                continue
            if udp.direct_send_ok(path[1]):
                direct.append(leg)
            else:
                buffered.append(leg)
            batch.append(relay)
        fanout = self.fanout
        steady_legs = self._legs_of_steady()
        if fanout is None or not (batch or steady_legs):
            return
        try:
            # The cached list of steady legs as it is, unless slow relays go direct too.
            problems = fanout.send(
                steady_legs + direct if steady_legs and direct else steady_legs or direct,
                buffered,
                frame.payloads,
                frame.timestamp,
                frame.abs_send_time,
            )
        except ValueError as exc:  # a frame of no or too many packets: never sent
            for relay in [*batch, *steady]:
                relay.stopped(exc)
            return
        n = len(frame.payloads)
        for relay in batch:
            relay.account(frame, n)
        count = len(batch) + len(steady_legs)
        if steady_legs:
            sent = self.steady_sent
            sent[0] += 1
            sent[1] += n
            sent[2] += frame.size
            sent[3] += 1 if frame.keyframe else 0
            self._last = frame
        totals = self.totals
        totals.frames_forwarded += count
        totals.bytes_forwarded += frame.size * count
        totals.packets_forwarded += n * count
        # Relays with a problem this frame (before _problem may drop their legs).
        troubled = [self.legs[leg] for leg, _ in problems] if problems and direct else ()
        for leg, outcome in problems:
            relay = self.legs[leg]
            if relay in steady:
                self._leave(relay)
            self._problem(relay, outcome, n)
        if direct:
            for relay in batch:
                if relay not in troubled:
                    self._enter(relay)
        ntp = frame.ntp_timestamp
        if steady and not 0 < self._check_due - ntp <= _SR_NOTE_NTP:
            self._check_due = ntp + _SR_NOTE_NTP
            self._check(frame)

    # -- the steady set ----------------------------------------------------------------

    def _legs_of_steady(self) -> list[int]:
        legs = self._steady_legs
        if legs is None:
            legs = [leg for relay in self.steady if (leg := relay.leg) is not None]
            self._steady_legs = legs
        return legs

    def _enter(self, relay: RelayTrack) -> None:
        """``relay``'s frame went straight to its socket: steady, if nothing else is
        pending for it."""
        if self._may_be_steady(relay):
            self.steady[relay] = self.steady_sent.copy()
            self._steady_legs = None

    @staticmethod
    def _may_be_steady(relay: RelayTrack) -> bool:
        """Whether ``relay``'s policy has nothing to decide: it has a leg and a path, waits
        for no key frame, and its transport is open and holds nothing."""
        path = relay.path
        return not (
            relay.leg is None
            or path is None
            or relay.gate.need_keyframe
            or relay.ended
            or relay.backlog()
            or not udp.direct_send_ok(path[1])
        )

    def _leave(self, relay: RelayTrack) -> None:
        """``relay`` goes back to its policy every frame, with its counts folded in."""
        self.catch_up(relay)
        del self.steady[relay]
        self._steady_legs = None

    def catch_up(self, relay: RelayTrack) -> None:
        """Folds what ``relay`` was sent as a steady relay into its own counts."""
        base = self.steady.get(relay)
        last = self._last
        if base is None or last is None:
            return
        now = self.steady_sent
        frames = now[0] - base[0]
        if frames:
            relay.relayed(frames, now[1] - base[1], now[2] - base[2], now[3] - base[3], last)
            self.steady[relay] = now.copy()

    def gap(self) -> None:
        """Upstream lost frames (every relay's gate now waits for a key frame): no relay
        stays steady."""
        for relay in list(self.steady):
            self._leave(relay)

    def _check(self, frame: RelayFrame) -> None:
        """Every :data:`SR_NOTE_INTERVAL`: each steady relay's SR note, and whether it still
        is steady (its transport may be closing or hold datagrams of aiortc's)."""
        for relay in list(self.steady):
            self.catch_up(relay)
            relay.note_sr(frame.ntp_timestamp)
            if not self._may_be_steady(relay):
                self._leave(relay)

    def _problem(self, relay: RelayTrack, outcome: list[bytes] | int | str, n: int) -> None:
        path = relay.path
        if isinstance(outcome, str):  # cannot happen for a well-formed frame
            relay.stopped(ValueError(outcome))
            return
        relay.packets_not_direct += n if isinstance(outcome, int) else len(outcome)
        if path is None:  # pragma: no cover - stopped within this frame
            return
        transport: Any = path[1]
        if isinstance(outcome, int):
            # The kernel refused the first datagram for another reason than a full
            # buffer.  As asyncio's sendto does with such an error, the protocol hears of
            # it and the datagrams are lost (their NACKs find them in the history).
            transport.get_protocol().error_received(OSError(outcome, os.strerror(outcome)))
            return
        sendto = transport.sendto
        address = path[2]
        try:
            for data in outcome:
                sendto(data, address)
        except Exception as exc:  # the transport went away under us
            relay.stopped(exc)

    def add(self, relay: RelayTrack, rust: Any, fd: int, address: Any) -> int | None:
        """A leg for ``relay`` on the socket ``fd`` (see :class:`e2ee._srtp.Fanout`);
        ``None`` if there is no fan-out or it refused the leg (``relay`` then sends on
        its own)."""
        if self.fanout is None:
            return None
        extension, abs_send_time_at = relay.extension_template()
        try:
            leg = self.fanout.add(
                rust,
                fd,
                address,
                relay.b0,
                relay.payload_type,
                relay.media_ssrc,
                relay.next_seq,
                relay.ts_offset,
                extension,
                abs_send_time_at,
            )
        except ValueError as exc:  # an address or header it cannot take: send alone
            log.info("router: relay %s sends without the fan-out: %s", relay, exc)
            return None
        self.legs[leg] = relay
        return leg

    def remove(self, leg: int) -> tuple[int, list[tuple[int, bytes]]]:
        """Drops ``leg``: its next sequence number and NACK history."""
        relay = self.legs.pop(leg, None)
        if relay is not None and relay in self.steady:
            self._leave(relay)
        assert self.fanout is not None
        return self.fanout.remove(leg)

    def packet(self, leg: int, seq: int) -> bytes | None:
        assert self.fanout is not None
        return self.fanout.packet(leg, seq)

    def uses_gso(self, leg: int | None) -> bool:
        """Whether ``leg`` sends its runs as UDP GSO messages now."""
        return leg is not None and self.fanout is not None and self.fanout.uses_gso(leg)


def send_one(relay: RelayTrack, frame: RelayFrame, path: compat.RtpPath) -> None:
    """``frame`` to one relay without a fan-out leg: the Rust sender's packets through
    asyncio's ``sendto``, else aiortc's libsrtp packet by packet."""
    protect, transport, address = path
    timestamp = (frame.timestamp + relay.ts_offset) & 0xFFFFFFFF
    ext = relay.extension(frame.abs_send_time)
    payloads = frame.payloads
    n = len(payloads)
    seq = relay.next_seq
    history = relay.history
    rust = relay.rust
    sendto = transport.sendto
    if rust is not None:
        try:
            packets = rust.protect_frame(
                relay.b0, relay.payload_type, seq, timestamp, relay.media_ssrc, ext, payloads
            )
        except ValueError as exc:  # cannot happen for a well-formed frame: never send it
            relay.stopped(exc)
            return
        # Their SRTP indices are used now, whether or not each packet leaves.
        relay.next_seq = (seq + n) & 0xFFFF
        relay.packets_not_direct += n
    else:
        b0, pt, ssrc = relay.b0, relay.payload_type, relay.media_ssrc
        packets = []
        try:
            for i, payload in enumerate(payloads):
                marker = 0x80 if i == n - 1 else 0
                header = _HEADER.pack(b0, pt | marker, (seq + i) & 0xFFFF, timestamp, ssrc)
                packets.append(protect(header + ext + payload))
        except Exception as exc:  # the SRTP session went away under us
            relay.stopped(exc)
            return
        finally:
            relay.next_seq = (seq + len(packets)) & 0xFFFF
        relay.packets_libsrtp += n
    try:
        for data in packets:
            history[seq % len(history)] = (seq, data)
            sendto(data, address)
            seq = (seq + 1) & 0xFFFF
    except Exception as exc:  # the socket went away under us
        relay.stopped(exc)
        return
    relay.account(frame, n)
    totals = relay.totals
    totals.frames_forwarded += 1
    totals.bytes_forwarded += frame.size
    totals.packets_forwarded += n
