"""What a protected track reports: :class:`E2eeEvent`, its types, and rate limiting.

``on_event`` callbacks (see :func:`e2ee.transform.protect`) always run on the event loop
thread that called :func:`~e2ee.transform.protect` (events from the encoder thread pool are
handed over with ``call_soon_threadsafe``).  They must not block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DECRYPTION_ERROR",
    "ENCRYPTION_ERROR",
    "ENCRYPTION_SECRET_MATCH",
    "ENCRYPTION_SECRET_MISMATCH",
    "ENCRYPTION_SECRET_MISSING",
    "EVENT_INTERVAL",
    "SUPPORTED_CODECS",
    "E2eeEvent",
    "EventCallback",
    "RateLimiter",
    "track_id",
]

#: Negotiated MIME types (lower case) allowed in an E2EE session, and the codec names the
#: media layer expects.  Any other negotiated codec sends nothing and decodes nothing.
SUPPORTED_CODECS = {"video/vp8": "vp8", "audio/opus": "opus"}

#: Event types.  The first three come from :class:`~e2ee.FrameDecryptor`; the others are
#: raised by the sender and receiver hooks.
ENCRYPTION_SECRET_MISMATCH = "encryption_secret_mismatch"
ENCRYPTION_SECRET_MATCH = "encryption_secret_match"
DECRYPTION_ERROR = "decryption_error"
ENCRYPTION_SECRET_MISSING = "encryption_secret_missing"
ENCRYPTION_ERROR = "encryption_error"

#: Minimum interval between two events of the same type for the same track, for the
#: events raised by the hooks (the decryptor rate-limits its own ``decryption_error``).
EVENT_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class E2eeEvent:
    """Something an application should know about one protected track.

    ``type`` is one of:

    * ``"encryption_secret_mismatch"`` (receive): frames arrive under a secret this client
      does not hold; sent on entering that state, not per frame;
    * ``"encryption_secret_match"`` (receive): the first good frame after a mismatch (a
      PLI is sent at the same time);
    * ``"decryption_error"`` (receive): frames under a held secret fail authentication or
      parsing, are replayed, or use a codec other than VP8/Opus;
    * ``"encryption_secret_missing"``: no secret is set, so frames are dropped (send) or
      cannot be decrypted (receive); sent on entering that state on the receive side, at
      most once a second on the send side;
    * ``"encryption_error"`` (send): a frame could not be encrypted (too short for its
      codec, or a codec other than VP8/Opus was negotiated) and was dropped, or the
      outbound guard (:mod:`e2ee.transform.guard`) blocked a packet of this sender that
      was not one of its E2EE frames (``error`` is an
      :class:`~e2ee.errors.EncryptionInternalError` whose message starts with
      ``"outgoing packet blocked"``).

    ``count`` is how many occurrences this event stands for (rate-limited events fold the
    ones in between).  ``error`` is the exception behind it, when there is one.
    """

    type: str
    direction: str
    """``"send"`` or ``"recv"``."""
    kind: str
    """``"audio"`` or ``"video"``."""
    mid: str | None
    track_id: str | None
    kid: int | None = None
    message: str = ""
    count: int = 1
    error: BaseException | None = None


EventCallback = Callable[[E2eeEvent], None]


class RateLimiter:
    """Counts occurrences per key and lets one through per ``interval``."""

    __slots__ = ("_interval", "_last", "_pending")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._pending: dict[str, int] = {}

    def hit(self, key: str) -> int:
        """Record one occurrence; return how many to report now (0: stay quiet)."""
        pending = self._pending.get(key, 0) + 1
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) >= self._interval:
            self._last[key] = now
            self._pending[key] = 0
            return pending
        self._pending[key] = pending
        return 0


def track_id(track: Any) -> str | None:
    """The id of a local or remote track, ``None`` without one."""
    return None if track is None else getattr(track, "id", None)
