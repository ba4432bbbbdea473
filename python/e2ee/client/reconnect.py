"""When and how soon the client reconnects after its WebSocket dropped.  Pure: no I/O.

:class:`ReconnectPolicy` is the backoff: exponential with jitter, capped, and bounded by
a number of attempts and a total time.  :func:`is_terminal` and :func:`is_terminal_error`
say which ends the client must respect: the server said goodbye on purpose (a moderator
removed the participant, the token is not or no longer valid, the session is gone), so
trying again would only be refused, or would override a moderator.

The close codes are the signaling protocol's (docs/protocol.md, and the server's
``e2ee.server.errors``, which the client never imports).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = [
    "RETRY_REASONS",
    "TERMINAL_CLOSE_CODES",
    "TERMINAL_ERRORS",
    "ReconnectPolicy",
    "is_terminal",
    "is_terminal_error",
]

#: Close codes after which the client does not reconnect: 1000 (a normal close, the
#: reply to ``disconnect``), 4001 (a moderator removed the participant), 4029 (the client
#: kept sending over its rate limits: it would again), 4400, 4401, 4403, 4404 (a refused
#: token or an unknown session: the same token is refused again).
TERMINAL_CLOSE_CODES = frozenset({1000, 4001, 4029, 4400, 4401, 4403, 4404})

#: ``disconnected`` reasons after which the client does reconnect: the server is going
#: away (``server_shutdown``, close 1001) or the client read too slowly once
#: (``too_slow``, 4008).  Any other reason the server gives on purpose is final.
RETRY_REASONS = frozenset({"server_shutdown", "too_slow"})

#: Error codes of a refused (re)connection that end the retries: the token or the
#: session will not come back by waiting.  ``participant_limit`` and
#: ``token_connection_limit`` are retried (the previous connection may still count).
TERMINAL_ERRORS = frozenset(
    {
        "token_missing",
        "token_malformed",
        "token_bad_signature",
        "token_expired",
        "token_unknown_role",
        "token_wrong_session",
        "token_revoked",
        "session_not_found",
        "forbidden",
    }
)


def is_terminal(reason: str | None, close_code: int | None) -> bool:
    """Whether a WebSocket that ended with ``close_code``, after the server's
    ``disconnected`` message with ``reason`` (``None`` if none came), must stay closed."""
    if reason is not None:
        return reason not in RETRY_REASONS
    return close_code in TERMINAL_CLOSE_CODES


def is_terminal_error(code: str) -> bool:
    """Whether a reconnection refused with error ``code`` must not be tried again (any
    ``token_*`` refusal but the per-token connection limit is)."""
    if code in ("participant_limit", "token_connection_limit"):
        return False
    return code in TERMINAL_ERRORS or code.startswith("token_")


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Exponential backoff with jitter for reconnecting.

    Attempt ``n`` (from 1) waits ``min(max_delay, initial_delay * multiplier**(n-1))``,
    less a random part of up to ``jitter`` of it (so clients dropped together do not come
    back together).  The client gives up after ``max_attempts`` attempts or once
    ``max_elapsed`` seconds passed since the drop, whichever comes first (``None``: no
    bound of that kind).  ``connect_timeout`` bounds one attempt (the WebSocket upgrade
    and the server's hello).
    """

    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = 12
    max_elapsed: float | None = 300.0
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not (0 <= self.initial_delay <= self.max_delay):
            raise ValueError("need 0 <= initial_delay <= max_delay")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None)")
        if self.max_elapsed is not None and self.max_elapsed <= 0:
            raise ValueError("max_elapsed must be positive (or None)")
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before attempt ``attempt`` (1 for the first)."""
        if attempt < 1:
            raise ValueError("attempts count from 1")
        # min() before the power would overflow for large attempts; cap the exponent.
        base = min(self.max_delay, self.initial_delay * self.multiplier ** min(attempt - 1, 64))
        return base * (1 - self.jitter * rand())

    def schedule(
        self, elapsed: Callable[[], float], rand: Callable[[], float] = random.random
    ) -> Iterator[tuple[int, float]]:
        """``(attempt, delay)`` pairs until the attempts or the time run out.
        ``elapsed()`` is the time since the drop; a delay that would end past
        ``max_elapsed`` is shortened to end at it, and nothing follows."""
        attempt = 1
        while self.max_attempts is None or attempt <= self.max_attempts:
            wait = self.delay(attempt, rand)
            if self.max_elapsed is not None:
                left = self.max_elapsed - elapsed()
                if left <= 0:
                    return
                wait = min(wait, left)
            yield attempt, wait
            attempt += 1
