"""The media router (SFU): forwards encoded frames it cannot read, never decodes, never
holds a key.  Imports :mod:`e2ee.rtc` and :mod:`e2ee.wire`, never :mod:`e2ee.crypto`."""

from __future__ import annotations

from e2ee.sfu.egress import RelayTrack
from e2ee.sfu.errors import CodecNotAllowed, RouterError, UnknownStream, UnknownSubscription
from e2ee.sfu.frames import RelayFrame
from e2ee.sfu.ingress import Forwarder
from e2ee.sfu.policy import FrameGate, classify_vp8
from e2ee.sfu.router import Router

__all__ = [
    "CodecNotAllowed",
    "Forwarder",
    "FrameGate",
    "RelayFrame",
    "RelayTrack",
    "Router",
    "RouterError",
    "UnknownStream",
    "UnknownSubscription",
    "classify_vp8",
]
