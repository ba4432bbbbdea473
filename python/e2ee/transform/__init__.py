"""End-to-end encryption for aiortc peer connections: :func:`protect` makes a connection
send and receive only E2EE VP8 and Opus (see :mod:`e2ee.transform.protect`; the send and
receive sides are :mod:`e2ee.transform.sender` and :mod:`e2ee.transform.receiver`, the
events :mod:`e2ee.transform.events`)."""

from __future__ import annotations

from e2ee.transform.events import E2eeEvent
from e2ee.transform.protect import E2eeTransform, protect
from e2ee.transform.receiver import ProtectedReceiver
from e2ee.transform.sender import ProtectedSender

__all__ = ["E2eeEvent", "E2eeTransform", "ProtectedReceiver", "ProtectedSender", "protect"]
