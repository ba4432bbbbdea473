"""The router's per-frame decisions: plain bytes and ints in, an action out.

:func:`classify_vp8` reads only the clear VP8 frame tag (key frame bit, start code,
dimensions on key frames; RFC 6386 §9.1).  :class:`FrameGate` decides, per subscriber and
track, whether a frame is queued, dropped, or restarts the queue: video starts, and
restarts after any loss, only on a key frame, and single delta frames are never dropped
mid-GOP; on overflow the queue is flushed and the track waits for the next key frame (a
key frame that overflows the queue replaces it).  Audio: every Opus frame is forwarded;
on overflow the oldest one is dropped.

No aiortc, no I/O: this is the part meant to move to Rust.
"""

from __future__ import annotations

from e2ee.wire.codecs import VP8_START_CODE

__all__ = [
    "ACCEPT",
    "DROP",
    "DROP_OLDEST",
    "FLUSH_ACCEPT",
    "FLUSH_DROP",
    "VP8_DELTA",
    "VP8_INVALID",
    "VP8_KEY",
    "FrameGate",
    "classify_vp8",
]

#: :func:`classify_vp8` results.
VP8_DELTA = 0
VP8_KEY = 1
VP8_INVALID = 2

#: :meth:`FrameGate.admit` actions.
ACCEPT = 0
"""Enqueue the frame."""
DROP = 1
"""Drop the frame (waiting for a key frame)."""
FLUSH_ACCEPT = 2
"""Flush the queue, then enqueue the frame (a key frame restarts the track)."""
FLUSH_DROP = 3
"""Flush the queue, drop the frame, wait for a key frame and request one."""
DROP_OLDEST = 4
"""Audio: drop the oldest queued frame, then enqueue this one."""


def classify_vp8(data: bytes) -> int:
    """Classify a VP8 frame (starting at its frame tag) from its clear bytes only.

    RFC 6386 §9.1: bit 0 of the frame tag is 0 on a key frame, whose tag is followed by
    the start code ``9d 01 2a`` and the dimensions (10 clear bytes).  A frame shorter than
    its clear header, or a "key frame" without the start code (e.g. a fragment that the
    jitter buffer started mid-frame after a loss), is :data:`VP8_INVALID`.
    """
    n = len(data)
    if n < 3:
        return VP8_INVALID
    if data[0] & 1:
        return VP8_DELTA
    if n >= 10 and data[3:6] == VP8_START_CODE:
        return VP8_KEY
    return VP8_INVALID


class FrameGate:
    """Per subscriber and track: when to forward, drop or flush.  Pure state machine.

    ``admit(key, queued)`` is called once per incoming frame with whether it is a VP8 key
    frame and how many frames the subscriber's queue holds; it returns an action
    (:data:`ACCEPT`, :data:`DROP`, :data:`FLUSH_ACCEPT`, :data:`FLUSH_DROP`,
    :data:`DROP_OLDEST`).  Video starts, and restarts after any loss, only on a key frame
    and never drops a single delta frame mid-GOP; audio never waits.
    """

    __slots__ = ("capacity", "dropped_overflow", "dropped_waiting", "need_keyframe", "video")

    def __init__(self, capacity: int, video: bool) -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be at least 1")
        self.capacity = capacity
        self.video = video
        self.need_keyframe = video
        self.dropped_waiting = 0
        self.dropped_overflow = 0

    def admit(self, key: bool, queued: int) -> int:
        if not self.video:
            if queued >= self.capacity:
                self.dropped_overflow += 1
                return DROP_OLDEST
            return ACCEPT
        if self.need_keyframe:
            if not key:
                self.dropped_waiting += 1
                return DROP
            self.need_keyframe = False
        if queued >= self.capacity:
            self.dropped_overflow += queued
            if key:
                return FLUSH_ACCEPT
            self.dropped_overflow += 1
            self.need_keyframe = True
            return FLUSH_DROP
        return ACCEPT

    def lost(self) -> None:
        """Upstream lost frames: wait for the next key frame (video)."""
        if self.video:
            self.need_keyframe = True
