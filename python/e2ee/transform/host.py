"""What the sender and receiver hooks need from the :class:`~e2ee.transform.E2eeTransform`
that owns them, as a protocol: they never import the transform (no import cycle)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiortc import RTCPeerConnection

from e2ee.crypto.keyring import KeyRing
from e2ee.transform.events import E2eeEvent

__all__ = ["TransformHost"]


class TransformHost(Protocol):
    """The owning transform: its ring, its connection, and its event plumbing."""

    ring: KeyRing
    pc: RTCPeerConnection

    def _emit(self, event: E2eeEvent) -> None:
        """Log ``event`` and hand it to the listeners on the event loop."""

    def _call_on_loop(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` on the event loop thread (at once if already on it)."""
