"""PLI scheduling (:class:`e2ee.sfu.keyframes.PliScheduler`): coalescing at
``pli_interval``, the shorter wait after an upstream loss, repeats while a subscriber
waits.  Intervals are long (seconds) and the checks count PLIs, never time them."""

from __future__ import annotations

import asyncio

import pytest

from e2ee.sfu.keyframes import PliScheduler


class Publisher:
    def __init__(self) -> None:
        self.plis = 0
        self.sent = asyncio.Event()
        self.waiting = False

    async def send(self) -> None:
        self.plis += 1
        self.sent.set()


async def _next_pli(pub: Publisher, timeout: float) -> bool:
    pub.sent.clear()
    try:
        await asyncio.wait_for(pub.sent.wait(), timeout)
    except TimeoutError:
        return False
    return True


@pytest.mark.asyncio
async def test_requests_coalesce_within_the_interval() -> None:
    pub = Publisher()
    pli = PliScheduler(30.0, pub.send, lambda: pub.waiting)
    try:
        pli.request()
        await asyncio.sleep(0.05)
        assert pub.plis == 1
        for _ in range(100):  # a join storm
            pli.request()
        assert not await _next_pli(pub, 0.5)
        assert pub.plis == 1  # the rest waits for the next allowed one, 30 s on
    finally:
        pli.close()


@pytest.mark.asyncio
async def test_an_upstream_loss_waits_only_the_urgent_interval() -> None:
    pub = Publisher()
    pli = PliScheduler(30.0, pub.send, lambda: pub.waiting, urgent_interval=0.2)
    try:
        pli.request()
        await asyncio.sleep(0.05)
        assert pub.plis == 1
        pli.request()  # coalesced, the task sleeps out 30 s ...
        await asyncio.sleep(0.05)
        pli.request(urgent=True)  # ... until a loss wakes it: 0.2 s after the last PLI
        assert await _next_pli(pub, 10.0)
        assert pub.plis == 2
        pli.request(urgent=True)  # at most one per urgent_interval, never a burst
        pli.request(urgent=True)
        assert await _next_pli(pub, 10.0)
        assert not await _next_pli(pub, 0.5)
        assert pub.plis == 3
    finally:
        pli.close()


@pytest.mark.asyncio
async def test_repeats_while_a_subscriber_waits_then_stops() -> None:
    pub = Publisher()
    pub.waiting = True
    pli = PliScheduler(0.1, pub.send, lambda: pub.waiting)
    try:
        pli.request()
        for _ in range(3):
            assert await _next_pli(pub, 10.0)
        pub.waiting = False  # the key frame came
        await asyncio.sleep(0.3)
        count = pub.plis
        assert not await _next_pli(pub, 0.5)
        assert pub.plis == count
    finally:
        pli.close()


def test_urgent_interval_is_checked() -> None:
    async def send() -> None:
        return None

    with pytest.raises(ValueError, match="urgent_interval"):
        PliScheduler(0.3, send, lambda: False, urgent_interval=0.5)
    with pytest.raises(ValueError, match="urgent_interval"):
        PliScheduler(0.3, send, lambda: False, urgent_interval=0)
