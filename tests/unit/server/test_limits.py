"""The per-address limits of new WebSocket connections and the tunable server budgets
(:mod:`e2ee.server.limits`), with an injected clock."""

from __future__ import annotations

import pytest

from e2ee.server.limits import AddressLimiter, Bucket, Limit, RateLimiter, ServerLimits, address_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_address_keys() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"  # IPv4-mapped: the IPv4 address
    # One IPv6 host usually has a whole /64: its addresses count together.
    assert address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key(None) == "?"
    assert address_key("unix-socket") == "unix-socket"


def test_open_connections_are_bounded_and_released() -> None:
    limiter = AddressLimiter(2, rate=100.0, burst=100.0, clock=Clock())
    assert limiter.admit("a") is None
    assert limiter.admit("a") is None
    assert limiter.admit("a") == "address_connection_limit"
    assert limiter.admit("b") is None  # another address has its own budget
    assert limiter.open_connections("a") == 2
    limiter.release("a")
    assert limiter.admit("a") is None
    for _ in range(5):
        limiter.release("b")  # more releases than admissions never go below 0
    assert limiter.open_connections("b") == 0
    assert limiter.admit("b") is None


def test_no_limit_on_open_connections_with_zero() -> None:
    limiter = AddressLimiter(0, rate=100.0, burst=1000.0, clock=Clock())
    assert all(limiter.admit("a") is None for _ in range(500))


def test_new_connections_are_rate_limited_and_refill() -> None:
    clock = Clock()
    limiter = AddressLimiter(0, rate=2.0, burst=3.0, clock=clock)
    assert [limiter.admit("a") for _ in range(4)] == [None, None, None, "rate_limited"]
    clock.now += 0.5  # one attempt refilled
    assert limiter.admit("a") is None
    assert limiter.admit("a") == "rate_limited"
    assert limiter.admit("b") is None


def test_the_table_stays_small_and_keeps_open_counts() -> None:
    clock = Clock()
    limiter = AddressLimiter(1, rate=1.0, burst=5.0, clock=clock)
    limiter.MAX_TRACKED = 10
    assert limiter.admit("held") is None  # open: never forgotten
    for i in range(100):
        assert limiter.admit(f"passing-{i}") is None
        limiter.release(f"passing-{i}")
    assert len(limiter._table) <= 10
    assert limiter.admit("held") == "address_connection_limit"


def test_server_limits_are_checked() -> None:
    assert ServerLimits().pending_subscription_seconds == 15.0
    assert ServerLimits().max_pending_subscriptions_per_token == 8
    for bad in (
        {"pending_subscription_seconds": 0},
        {"pending_subscription_seconds": float("nan")},
        {"max_pending_subscriptions_per_token": 0},
        {"max_connections_per_address": -1},
        {"connect_rate": 0},
        {"connect_burst": 0.5},
        {"token_connect_rate": -1},
        {"signal_delivery_burst": 0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServerLimits(**bad)  # type: ignore[arg-type]


def test_a_bucket_takes_a_cost_of_several_tokens_or_none() -> None:
    bucket = Bucket(Limit(10.0, 20.0), 0.0)
    assert bucket.take(0.0, 15.0)
    assert not bucket.take(0.0, 6.0)  # 5 left: nothing taken
    assert bucket.take(0.0, 5.0)
    assert bucket.take(1.0, 10.0)  # refilled 10 in 1 s
    assert not bucket.take(1.0, 21.0)  # over the burst: never


def test_a_participants_deliveries_cost_one_per_recipient() -> None:
    limiter = RateLimiter(ServerLimits(signal_delivery_rate=1e-9, signal_delivery_burst=100.0))
    assert limiter.deliver(59)  # one broadcast in a session of 60
    assert not limiter.deliver(59)  # 41 left
    assert limiter.deliver(1)  # a signal to one connection still fits
    assert limiter.deliver(0)  # a broadcast to nobody costs one
    assert limiter.rest_time() > 0


def test_a_broadcast_to_more_than_the_burst_takes_the_whole_bucket() -> None:
    limiter = RateLimiter(ServerLimits(signal_delivery_rate=1e-9, signal_delivery_burst=100.0))
    assert limiter.deliver(500)
    assert not limiter.deliver(1)


def test_a_participants_connections_are_rate_limited() -> None:
    limiter = RateLimiter(ServerLimits(token_connect_rate=1e-9, token_connect_burst=3.0))
    assert [limiter.connect() for _ in range(4)] == [True, True, True, False]
    assert RateLimiter().rest_time() == 0
