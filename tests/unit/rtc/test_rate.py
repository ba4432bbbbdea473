"""The flat-array bitrate counter against aiortc's own, and the receiver seam that
installs it (:func:`e2ee.rtc.compat.slim_receiver`)."""

from __future__ import annotations

import gc

import pytest
from aiortc import RTCPeerConnection
from aiortc.rate import RateCounter, RemoteBitrateEstimator
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ee.rtc import compat
from e2ee.rtc.rate import CompactRateCounter

# (gap in ms since the previous event, payload size, whether to read the rate after it)
_EVENTS = st.lists(
    st.tuples(st.integers(0, 1500), st.integers(0, 1400), st.booleans()), max_size=300
)


@settings(max_examples=200, deadline=None)
@given(window=st.integers(1, 1000), events=_EVENTS, start=st.integers(0, 2**40))
def test_same_rates_as_aiortc(window: int, events: list[tuple[int, int, bool]], start: int) -> None:
    ours, theirs = CompactRateCounter(window, 8000), RateCounter(window, 8000)
    now = start
    for gap, size, read in events:
        now += gap
        ours.add(size, now)
        theirs.add(size, now)
        if read:
            assert ours.rate(now) == theirs.rate(now)
        assert ours.rate(now + gap) == theirs.rate(now + gap)
        now += gap
    ours.reset()
    theirs.reset()
    assert ours.rate(now) == theirs.rate(now) is None


def test_no_objects_for_the_collector() -> None:
    gc.collect()
    before = len(gc.get_objects())
    counters = [CompactRateCounter(1000) for _ in range(20)]
    # A few objects each, whose buckets the collector never visits (ints in arrays).
    assert all(len(gc.get_referents(c._counts)) <= 1 for c in counters)
    assert len(gc.get_objects()) - before < 4 * len(counters) + 10  # counter + 2 arrays
    theirs = RateCounter(1000)
    assert sum(gc.is_tracked(b) for b in theirs._buckets) == 1000  # what it replaces


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_size"):
        CompactRateCounter(0)


def _feed(estimator: RemoteBitrateEstimator) -> list[object]:
    """90 packets at 30 fps (3 a frame) with abs-send-time: what the router gets."""
    out: list[object] = []
    for i in range(90):
        ms = 1000 + (i // 3) * 33 + i % 3
        abs_send = ((ms << 18) // 1000) & 0xFFFFFF
        out.append(estimator.add(ms + 5, abs_send, 1200, 1234))
    return out


@pytest.mark.asyncio
async def test_slim_receiver_keeps_remb_and_drops_what_never_receives() -> None:
    pc = RTCPeerConnection()
    try:
        receiving = pc.addTransceiver("video", direction="recvonly").receiver
        sending = pc.addTransceiver("video", direction="sendonly").receiver
        audio = pc.addTransceiver("audio", direction="recvonly").receiver
        compat.slim_receiver(receiving, receives=True)
        compat.slim_receiver(sending, receives=False)
        compat.slim_receiver(audio, receives=True)  # no estimator: nothing to do
        slim = compat.receiver_bitrate_estimator(receiving)
        assert slim is not None
        assert isinstance(slim.incoming_bitrate, CompactRateCounter)
        assert compat.receiver_bitrate_estimator(sending) is None
        assert compat.receiver_bitrate_estimator(audio) is None
        # The same REMB decisions as an untouched estimator, packet for packet.
        assert _feed(slim) == _feed(RemoteBitrateEstimator())
    finally:
        await pc.close()


@pytest.mark.asyncio
async def test_compact_estimators_builds_flat_counters_from_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiortc import rate as aiortc_rate
    from aiortc import rtcrtpreceiver

    pc = RTCPeerConnection()
    plain = RTCPeerConnection()
    try:
        compat.compact_estimators(pc)
        video = pc.addTransceiver("video", direction="recvonly").receiver
        estimator = compat.receiver_bitrate_estimator(video)
        assert estimator is not None
        assert isinstance(estimator.incoming_bitrate, CompactRateCounter)
        # The swap lasted only the call: aiortc's name is back, and other peer
        # connections still get aiortc's own counter.
        assert aiortc_rate.RateCounter is RateCounter
        other = compat.receiver_bitrate_estimator(
            plain.addTransceiver("video", direction="recvonly").receiver
        )
        assert other is not None
        assert type(other.incoming_bitrate) is RateCounter
        # slim_receiver keeps the flat counter it finds; same REMB decisions.
        compat.slim_receiver(video, receives=True)
        assert compat.receiver_bitrate_estimator(video) is estimator
        assert _feed(estimator) == _feed(RemoteBitrateEstimator())

        # A creation that raises restores the name too.
        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("receiver init failed")

        monkeypatch.setattr(rtcrtpreceiver.RTCRtpReceiver, "__init__", broken)
        with pytest.raises(RuntimeError, match="receiver init failed"):
            pc.addTransceiver("video", direction="recvonly")
        assert aiortc_rate.RateCounter is RateCounter
    finally:
        await pc.close()
        await plain.close()
