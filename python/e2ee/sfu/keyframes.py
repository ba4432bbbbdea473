"""Key frame requests (PLI) to a publisher's video track, rate-limited and repeated.

A subscriber's PLI/FIR reaches the router's sender for that subscriber, whose key frame
hook (:func:`e2ee.rtc.compat.hook_send_keyframe`) the router points at
:meth:`e2ee.sfu.egress.RelayTrack.on_subscriber_pli`; a subscriber joining, a queue
overflow and an upstream loss also ask for a key frame.  Every request goes to the
track's :class:`e2ee.sfu.ingress.Forwarder`, whose :class:`PliScheduler` decides when a
PLI actually leaves; the forwarder sends it to the publisher with
:func:`e2ee.rtc.compat.send_pli`, naming the publisher's media SSRC from the offer
(:func:`e2ee.sfu.sdp.media_ssrc`; the receiver's own RTCP SSRC is set when aiortc
creates the transceiver, rtcpeerconnection.py:1210).

At most one PLI per ``pli_interval`` per track; requests in between are coalesced into
the next allowed one.  An upstream loss (:meth:`PliScheduler.request` with
``urgent=True``) waits only ``urgent_interval`` (default a third of ``pli_interval``):
subscribers are frozen until the key frame comes, and if the key frame asked for was
itself lost on a lossy uplink, waiting out the whole ``pli_interval`` again is what made
the freezes of ``e2ee bench router --scenario loss`` three times longer than one PLI
round trip plus one key frame.  Joins and subscribers' own PLIs (a join storm: hundreds
at once) stay coalesced at ``pli_interval``.  While any subscriber waits for a key
frame the request is repeated every ``pli_interval``, backing off to :data:`PLI_MAX_INTERVAL` after
:data:`PLI_FAST_RETRIES` unanswered tries (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

__all__ = ["PLI_FAST_RETRIES", "PLI_MAX_INTERVAL", "PliScheduler"]

#: Unanswered PLIs sent every ``pli_interval`` before backing off.
PLI_FAST_RETRIES = 10
#: Longest interval between repeated PLIs while a subscriber waits for a key frame.
PLI_MAX_INTERVAL = 2.0


class PliScheduler:
    """When to send the PLIs of one track.

    ``send()`` sends one PLI; ``waiting()`` tells whether a subscriber still waits for a
    key frame.  :meth:`request` runs on the event loop; the sending task lives until no
    request is pending and nobody waits, or :meth:`close`.
    """

    def __init__(
        self,
        interval: float,
        send: Callable[[], Awaitable[None]],
        waiting: Callable[[], bool],
        urgent_interval: float | None = None,
    ) -> None:
        self.interval = interval
        self.urgent_interval = interval / 3 if urgent_interval is None else urgent_interval
        if not 0 < self.urgent_interval <= interval:
            raise ValueError("urgent_interval must be positive and at most interval")
        self._send = send
        self._waiting = waiting
        self._last = -float("inf")
        self._pending = False
        self._urgent = False
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def request(self, *, urgent: bool = False) -> None:
        """Ask for a key frame: a PLI now, or coalesced into the next allowed one
        (``urgent``: allowed ``urgent_interval`` after the last, not ``interval``)."""
        self._pending = True
        if urgent and not self._urgent:
            self._urgent = True
            self._wake.set()  # the task may be sleeping out the long interval
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        tries = 0
        interval = self.interval
        try:
            while not self._closed and (self._pending or self._waiting()):
                gap = self.urgent_interval if self._pending and self._urgent else interval
                wait = self._last + gap - time.monotonic()
                if wait > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    continue
                if not self._pending:
                    # A subscriber still waits for the key frame asked for earlier.
                    tries += 1
                    if tries >= PLI_FAST_RETRIES:
                        interval = min(interval * 2, max(PLI_MAX_INTERVAL, interval))
                else:
                    tries = 0
                    interval = self.interval
                self._pending = self._urgent = False
                self._last = time.monotonic()
                await self._send()
        except asyncio.CancelledError:
            pass
