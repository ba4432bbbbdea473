"""The media router (SFU): forwards encoded frames it cannot read, never decodes, never
holds a key.  Imports :mod:`e2ee.rtc` and :mod:`e2ee.wire`, never :mod:`e2ee.crypto`."""

from __future__ import annotations

from e2ee.sfu.router import (
    CodecNotAllowed,
    EncodedFrame,
    Forwarder,
    FrameGate,
    RelayTrack,
    Router,
    RouterError,
    UnknownStream,
    UnknownSubscription,
    classify_vp8,
)

__all__ = [
    "CodecNotAllowed",
    "EncodedFrame",
    "Forwarder",
    "FrameGate",
    "RelayTrack",
    "Router",
    "RouterError",
    "UnknownStream",
    "UnknownSubscription",
    "classify_vp8",
]
