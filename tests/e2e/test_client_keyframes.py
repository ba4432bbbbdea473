"""A subscriber joining makes the router ask the publisher for a key frame (PLI); through
the Python client that request must reach a track that answers it itself (pre-encoded
media, e.g. the bench's packet loops), not only aiortc's encoder.  Before the client
passed it on, such a subscriber waited for the source's next natural key frame (2 s in
``e2ee bench cluster``)."""

from __future__ import annotations

import asyncio

import pytest

from e2ee.tools.synthetic import FrameCollector, SyntheticVideoTrack
from support.server import Api, ServerProcess

from .test_e2e import client, new_session


class AnswersKeyFrames(SyntheticVideoTrack):
    """Encoded by aiortc as usual, but it also has a ``request_keyframe`` to count."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def request_keyframe(self) -> None:
        self.asked += 1


@pytest.mark.asyncio
async def test_a_new_subscriber_reaches_the_publishers_own_key_frame_handler(
    server: ServerProcess, api: Api
) -> None:
    sid = await new_session(api)
    alice, bob = client(server, sid), client(server, sid)
    video = AnswersKeyFrames()
    try:
        await alice.connect()
        await bob.connect()
        pub = await alice.publish(video=video)
        sub = await bob.subscribe(pub.stream_id)
        for _ in range(400):
            if sub.video is not None:
                break
            await asyncio.sleep(0.025)
        assert sub.video is not None
        frames = FrameCollector(sub.video).start()
        try:
            assert await frames.wait_for(1, timeout=20)
        finally:
            await frames.stop()
        for _ in range(200):
            if video.asked:
                break
            await asyncio.sleep(0.05)
        assert video.asked >= 1, "the router's PLI never reached the publisher's track"
    finally:
        await bob.disconnect()
        await alice.disconnect()
