"""When and how soon the client reconnects (e2ee.client.reconnect): pure, no I/O."""

from __future__ import annotations

import pytest

from e2ee.client.reconnect import ReconnectPolicy, is_terminal, is_terminal_error


def test_delays_grow_exponentially_up_to_the_cap_without_jitter() -> None:
    policy = ReconnectPolicy(initial_delay=0.5, max_delay=4.0, multiplier=2.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.delay(10_000) == 4.0  # no overflow for a long outage


def test_jitter_takes_off_at_most_its_share() -> None:
    policy = ReconnectPolicy(initial_delay=1.0, max_delay=8.0, jitter=0.5)
    assert policy.delay(3, rand=lambda: 0.0) == 4.0
    assert policy.delay(3, rand=lambda: 1.0) == 2.0
    assert policy.delay(3, rand=lambda: 0.25) == 3.5
    # The real generator stays in the band.
    assert all(2.0 <= policy.delay(3) <= 4.0 for _ in range(200))


def test_the_schedule_stops_after_max_attempts() -> None:
    policy = ReconnectPolicy(initial_delay=0.1, max_delay=1.0, jitter=0.0, max_attempts=4)
    plan = list(policy.schedule(lambda: 0.0))
    assert plan == [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8)]


def test_the_schedule_stops_at_max_elapsed_and_shortens_the_last_wait() -> None:
    policy = ReconnectPolicy(
        initial_delay=1.0, max_delay=10.0, jitter=0.0, max_attempts=None, max_elapsed=5.0
    )
    clock = [0.0]
    plan = []
    for attempt, delay in policy.schedule(lambda: clock[0]):
        plan.append((attempt, delay))
        clock[0] += delay + 0.5  # the wait, then a failed attempt
    assert plan == [(1, 1.0), (2, 2.0), (3, 1.0)]  # 1.5 s + 2.5 s elapsed: 1 s left


def test_without_bounds_the_schedule_goes_on() -> None:
    policy = ReconnectPolicy(max_attempts=None, max_elapsed=None, jitter=0.0, max_delay=1.0)
    plan = policy.schedule(lambda: 1e9)
    assert [next(plan) for _ in range(100)][-1] == (100, 1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_delay": -1.0},
        {"initial_delay": 5.0, "max_delay": 1.0},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"max_attempts": 0},
        {"max_elapsed": 0.0},
        {"connect_timeout": 0.0},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - one message per field
        ReconnectPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reason", "code", "terminal"),
    [
        (None, 1006, False),  # dropped: no goodbye from the server
        (None, None, False),
        (None, 1001, False),
        (None, 4008, False),
        ("server_shutdown", 1001, False),
        ("too_slow", 4008, False),
        ("force_disconnected", 4001, True),
        ("rate_limited", 4029, True),
        ("session_deleted", 1000, True),  # any other deliberate goodbye is final
        ("token_revoked", 4401, True),
        (None, 4001, True),  # the close code alone, if the message was lost
        (None, 4401, True),
        (None, 4404, True),
        (None, 1000, True),
    ],
)
def test_which_ends_are_final(reason: str | None, code: int | None, terminal: bool) -> None:
    assert is_terminal(reason, code) is terminal


@pytest.mark.parametrize(
    ("code", "terminal"),
    [
        ("token_expired", True),
        ("token_bad_signature", True),
        ("token_revoked", True),
        ("token_anything_new", True),
        ("session_not_found", True),
        ("participant_limit", False),  # the old connection may still count
        ("token_connection_limit", False),
        ("internal_error", False),
    ],
)
def test_which_refusals_end_the_retries(code: str, terminal: bool) -> None:
    assert is_terminal_error(code) is terminal
