"""Budgets of the session server: the tunable ones (:class:`ServerLimits`), the
per-participant rate limits of the signaling WebSocket (:class:`RateLimiter`: token
buckets by message type, signal deliveries and connections, shared by every connection
of one session token, so reconnecting refills nothing) and the per-address limits of
new WebSocket connections (:class:`AddressLimiter`).

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a message
takes one token, and a message that finds its bucket empty is refused (``rate_limited``)
without being handled.  Refusals take from a ``strikes`` bucket of their own: a client that
keeps sending over its limits empties that too and is disconnected
(:data:`e2ee.server.errors.CLOSE_RATE_LIMITED`).  Each check is a few float operations.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "LIMITS",
    "STRIKES",
    "AddressLimiter",
    "Bucket",
    "Limit",
    "RateLimiter",
    "ServerLimits",
    "address_key",
]


@dataclass(frozen=True)
class ServerLimits:
    """The budgets an operator (or a test) may change: ``create_app(limits=...)``,
    ``serve``/``run(limits=...)``.

    ``pending_subscription_seconds``: an unanswered subscription ends after this long
    (``subscription_expired``).  ``max_pending_subscriptions_per_token``: unanswered
    subscriptions of all the connections of one token together (each holds a router peer
    connection and a UDP socket).  ``max_connections_per_address``: WebSocket connections
    open at once from one client address (an IPv6 address counts by its /64), 0 for no
    limit; ``connect_rate``/``connect_burst``: the token bucket of new WebSocket
    connections per address.  Both are refused with HTTP 429 before the upgrade.  Behind
    a reverse proxy every client has the proxy's address: raise them (or 0) there.
    ``token_connect_rate``/``token_connect_burst``: connections one session token may
    open (each is announced to everyone: ``connection_created``/``_destroyed``);
    ``signal_delivery_rate``/``signal_delivery_burst``: ``signal`` messages one token's
    connections may have delivered, a broadcast counting once per recipient (a
    broadcast in a 60-participant session costs 59).  Both refused with
    ``rate_limited``.
    """

    pending_subscription_seconds: float = 15.0
    max_pending_subscriptions_per_token: int = 8
    max_connections_per_address: int = 64
    connect_rate: float = 20.0
    connect_burst: float = 120.0
    token_connect_rate: float = 1.0
    token_connect_burst: float = 10.0
    signal_delivery_rate: float = 200.0
    signal_delivery_burst: float = 400.0

    def __post_init__(self) -> None:
        if not self.pending_subscription_seconds > 0:
            raise ValueError("pending_subscription_seconds must be positive")
        if self.max_pending_subscriptions_per_token < 1:
            raise ValueError("max_pending_subscriptions_per_token must be at least 1")
        if self.max_connections_per_address < 0:
            raise ValueError("max_connections_per_address must be 0 (no limit) or more")
        for name in ("connect", "token_connect", "signal_delivery"):
            rate, burst = getattr(self, f"{name}_rate"), getattr(self, f"{name}_burst")
            if not (rate > 0 and burst >= 1):
                raise ValueError(f"{name}_rate must be positive and {name}_burst at least 1")


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens a second
    burst: float  # bucket size


#: Message type -> limit; types not listed (including unparsable messages) share ``*``.
LIMITS: dict[str, Limit] = {
    "signal": Limit(20.0, 40.0),
    "publish": Limit(2.0, 10.0),
    "unpublish": Limit(2.0, 10.0),
    "subscribe": Limit(5.0, 20.0),
    "answer": Limit(5.0, 20.0),
    "unsubscribe": Limit(5.0, 20.0),
    "ping": Limit(10.0, 50.0),
    "*": Limit(10.0, 30.0),
}
#: Refused messages a connection may send before it is disconnected for flooding.
STRIKES = Limit(5.0, 50.0)


class Bucket:
    __slots__ = ("_at", "_tokens", "limit")

    def __init__(self, limit: Limit, now: float) -> None:
        self.limit = limit
        self._tokens = limit.burst
        self._at = now

    def take(self, now: float, n: float = 1.0) -> bool:
        """Takes ``n`` tokens; ``False`` (and takes nothing) if the bucket has fewer (a
        cost above ``burst`` is refused always)."""
        self._tokens = min(self.limit.burst, self._tokens + (now - self._at) * self.limit.rate)
        self._at = now
        if self._tokens < n:
            return False
        self._tokens -= n
        return True

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled (forgetting it would change nothing)."""
        return self._tokens + (now - self._at) * self.limit.rate >= self.limit.burst

    def until_full(self, now: float) -> float:
        """Seconds until the bucket has refilled (0: it has)."""
        tokens = self._tokens + (now - self._at) * self.limit.rate
        return max(0.0, (self.limit.burst - tokens) / self.limit.rate)


class RateLimiter:
    """The buckets of one participant (session token): shared by its connections, and
    kept while it reconnects (:meth:`rest_time` says when forgetting it changes nothing)."""

    def __init__(self, limits: ServerLimits | None = None) -> None:
        limits = limits or ServerLimits()
        now = time.monotonic()
        self._buckets: dict[str, Bucket] = {}
        self._strikes = Bucket(STRIKES, now)
        self._connects = Bucket(Limit(limits.token_connect_rate, limits.token_connect_burst), now)
        self._deliveries = Bucket(
            Limit(limits.signal_delivery_rate, limits.signal_delivery_burst), now
        )

    def connect(self) -> bool:
        """Whether the token may open one more connection now."""
        return self._connects.take(time.monotonic())

    def deliver(self, recipients: int) -> bool:
        """Whether a ``signal`` to ``recipients`` connections may go out now (one to
        more connections than the burst costs the whole bucket)."""
        bucket = self._deliveries
        return bucket.take(time.monotonic(), float(min(max(1, recipients), bucket.limit.burst)))

    def rest_time(self) -> float:
        """Seconds until every bucket has refilled and a new limiter would be the same
        (0: forgetting this one changes nothing)."""
        now = time.monotonic()
        buckets = [self._strikes, self._connects, self._deliveries, *self._buckets.values()]
        return max(b.until_full(now) for b in buckets)

    def allow(self, kind: str) -> bool:
        """Whether a message of type ``kind`` may be handled now."""
        key = kind if kind in LIMITS else "*"
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(LIMITS[key], now)
        return bucket.take(now)

    def strike(self) -> bool:
        """Records a refused message; ``False`` once the client should be disconnected."""
        return self._strikes.take(time.monotonic())


# -- per client address ------------------------------------------------------------------


def address_key(remote: str | None) -> str:
    """What the per-address limits count by: the IPv4 address, an IPv6 address's /64
    (one host usually has a whole /64), the text as is if it is no IP address."""
    if not remote:
        return "?"
    try:
        ip = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Address:
    __slots__ = ("attempts", "open")

    def __init__(self, limit: Limit, now: float) -> None:
        self.open = 0
        self.attempts = Bucket(limit, now)


class AddressLimiter:
    """The WebSocket connections of each client address: at most ``max_open`` at once
    (0: no limit), new ones at ``rate``/s with bursts of ``burst``.  Addresses with no
    open connection and a full bucket are forgotten once more than :attr:`MAX_TRACKED`
    are known, so the table stays small."""

    MAX_TRACKED = 4096

    def __init__(
        self,
        max_open: int,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_open = max_open
        self.limit = Limit(rate, burst)
        self._clock = clock
        self._table: dict[str, _Address] = {}

    @classmethod
    def from_limits(cls, limits: ServerLimits) -> AddressLimiter:
        return cls(limits.max_connections_per_address, limits.connect_rate, limits.connect_burst)

    def admit(self, key: str) -> str | None:
        """Counts a new connection from ``key`` (:func:`address_key`) and returns
        ``None``, or refuses it: the error code, ``rate_limited`` (too many new
        connections) or ``address_connection_limit`` (too many open).  An admitted
        connection must be released (:meth:`release`) when it ends."""
        now = self._clock()
        entry = self._table.get(key)
        if entry is None:
            if len(self._table) >= self.MAX_TRACKED:
                self._prune(now)
            entry = self._table[key] = _Address(self.limit, now)
        if not entry.attempts.take(now):
            return "rate_limited"
        if self.max_open and entry.open >= self.max_open:
            return "address_connection_limit"
        entry.open += 1
        return None

    def release(self, key: str) -> None:
        entry = self._table.get(key)
        if entry is not None and entry.open > 0:
            entry.open -= 1

    def open_connections(self, key: str) -> int:
        entry = self._table.get(key)
        return 0 if entry is None else entry.open

    def _prune(self, now: float) -> None:
        idle = [k for k, e in self._table.items() if e.open == 0 and e.attempts.full(now)]
        if len(idle) < len(self._table) // 4:
            # Mostly addresses that just connected and left: forget their rate state too
            # rather than grow without bound (the open counts are kept: they are exact).
            idle = [k for k, e in self._table.items() if e.open == 0]
        for key in idle:
            del self._table[key]
