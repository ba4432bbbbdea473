"""End-to-end encryption for aiortc peer connections: :func:`protect` makes a connection
send and receive only E2EE VP8 and Opus (see :mod:`e2ee.transform.protect`)."""

from __future__ import annotations

from e2ee.transform.protect import (
    E2eeEvent,
    E2eeTransform,
    ProtectedReceiver,
    ProtectedSender,
    protect,
)

__all__ = ["E2eeEvent", "E2eeTransform", "ProtectedReceiver", "ProtectedSender", "protect"]
