"""Log hygiene for the session server: untrusted text made safe for one log line, and a
rate limit on repeated warning/error lines.

:func:`clean` is applied to every piece of request data a log line carries (method,
path, peer address, parser messages): a client's ``%0A`` cannot forge a line, nor
``%1B``/``%00`` put escape or NUL bytes into the log.  Non-printable characters,
backslashes and double quotes become ``\\xNN`` (``\\uNNNN`` above U+00FF), and the text
is capped at ``limit`` characters.

:class:`RateLimitFilter` lets through at most ``per_second`` WARNING-or-worse records of
one kind (logger, level, message template) per second; the next one let through says how
many were dropped in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitFilter", "clean"]

#: The most characters of untrusted text one log field carries.
MAX_FIELD = 200


def _escape(ch: str) -> str:
    code = ord(ch)
    return (
        f"\\x{code:02x}"
        if code <= 0xFF
        else f"\\u{code:04x}"
        if code <= 0xFFFF
        else f"\\U{code:08x}"
    )


def clean(text: object, limit: int = MAX_FIELD) -> str:
    """``text`` as one printable log field: non-printables, ``\\`` and ``"`` escaped,
    at most ``limit`` characters of the original (then ``...``)."""
    raw = str(text)
    cut = len(raw) > limit
    out = "".join(ch if ch.isprintable() and ch not in '\\"' else _escape(ch) for ch in raw[:limit])
    return out + "..." if cut else out


class RateLimitFilter(logging.Filter):
    """At most ``per_second`` records per (logger, level, template) and second, for
    WARNING and worse; lower levels always pass."""

    def __init__(
        self,
        per_second: int = 10,
        *,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.per_second = per_second
        self.level = level
        self._clock = clock
        # key -> [window start, passed in window, suppressed since last passed]
        self._state: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        state = self._state.get(key)
        if state is None:
            if len(self._state) > 1000:  # keep the table small
                self._state.clear()
            state = self._state[key] = [now, 0, 0]
        if now - state[0] >= 1.0:
            state[0], state[1] = now, 0
        if state[1] >= self.per_second:
            state[2] += 1
            return False
        state[1] += 1
        suppressed = int(state[2])
        if suppressed and isinstance(record.args, tuple):
            state[2] = 0
            record.msg = f"{record.msg} (%d similar lines suppressed)"
            record.args = (*record.args, suppressed)
        return True
