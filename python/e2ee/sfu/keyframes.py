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
the next allowed one.  While any subscriber waits for a key frame the request is
repeated every ``pli_interval``, backing off to :data:`PLI_MAX_INTERVAL` after
:data:`PLI_FAST_RETRIES` unanswered tries (bounded).
"""

from __future__ import annotations

import asyncio
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
    ) -> None:
        self.interval = interval
        self._send = send
        self._waiting = waiting
        self._last = -float("inf")
        self._pending = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def request(self) -> None:
        """Ask for a key frame: a PLI now, or coalesced into the next allowed one."""
        self._pending = True
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
                wait = self._last + interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                if not self._pending:
                    # A subscriber still waits for the key frame asked for earlier.
                    tries += 1
                    if tries >= PLI_FAST_RETRIES:
                        interval = min(interval * 2, max(PLI_MAX_INTERVAL, interval))
                else:
                    tries = 0
                    interval = self.interval
                self._pending = False
                self._last = time.monotonic()
                await self._send()
        except asyncio.CancelledError:
            pass
