"""End-to-end encryption for aiortc peer connections: :func:`protect` makes a connection
send and receive only E2EE VP8 and Opus (see :mod:`e2ee.transform.protect`; the send and
receive sides are :mod:`e2ee.transform.sender` and :mod:`e2ee.transform.receiver`, the
events :mod:`e2ee.transform.events`, the fail-closed send-path check
:mod:`e2ee.transform.guard`).  :func:`strip_media_derived_extensions` is for clients to apply
to every description of a protected connection (see :mod:`e2ee.wire.extmap`)."""

from __future__ import annotations

from e2ee.transform.events import E2eeEvent
from e2ee.transform.guard import GuardedTrack, OutboundGuard
from e2ee.transform.protect import E2eeTransform, protect, strip_media_derived_extensions
from e2ee.transform.receiver import ProtectedReceiver
from e2ee.transform.sender import ProtectedSender

__all__ = [
    "E2eeEvent",
    "E2eeTransform",
    "GuardedTrack",
    "OutboundGuard",
    "ProtectedReceiver",
    "ProtectedSender",
    "protect",
    "strip_media_derived_extensions",
]
