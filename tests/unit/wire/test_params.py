"""SessionPolicy: the floors a client holds a server's session parameters to."""

from __future__ import annotations

import pytest

from e2ee.errors import E2eeError, WeakSessionParameters
from e2ee.wire.params import (
    DEFAULT_ITERATIONS,
    DEFAULT_SUITE,
    E2EE_SUITES,
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    SessionPolicy,
)


def test_the_defaults_pass_the_default_policy() -> None:
    assert MIN_ITERATIONS == 100_000
    assert frozenset({5, 6}) == E2EE_SUITES
    assert DEFAULT_SUITE in E2EE_SUITES
    SessionPolicy().check(DEFAULT_SUITE, DEFAULT_ITERATIONS)
    SessionPolicy().check(5, MIN_ITERATIONS)
    SessionPolicy().check(6, MAX_ITERATIONS)


@pytest.mark.parametrize("suite", [1, 2, 3, 4, 7, 8, 0, 9, -1])
def test_short_tags_and_other_suites_are_refused(suite: int) -> None:
    with pytest.raises(WeakSessionParameters) as info:
        SessionPolicy().check(suite, DEFAULT_ITERATIONS)
    message = str(info.value)
    assert f"suite {suite}" in message
    assert "5 (AES_256_GCM_SHA512_128)" in message
    assert "6 (AES_256_CTR_HMAC_SHA512_80)" in message
    assert info.value.suite == suite
    assert isinstance(info.value, E2eeError)


@pytest.mark.parametrize("iterations", [1, 1000, MIN_ITERATIONS - 1, MAX_ITERATIONS + 1, 0])
def test_iteration_counts_out_of_bounds_are_refused(iterations: int) -> None:
    with pytest.raises(WeakSessionParameters) as info:
        SessionPolicy().check(DEFAULT_SUITE, iterations)
    assert f"{iterations} PBKDF2 iterations" in str(info.value)
    assert f"{MIN_ITERATIONS} to {MAX_ITERATIONS}" in str(info.value)
    assert info.value.kdf_iterations == iterations


def test_both_problems_are_named() -> None:
    with pytest.raises(WeakSessionParameters, match=r"suite 8 .*; 1000 PBKDF2"):
        SessionPolicy().check(8, 1000)


@pytest.mark.parametrize(("suite", "iterations"), [("6", 600_000), (6, "600000"), (True, 1)])
def test_values_that_are_not_integers_are_refused(suite: object, iterations: object) -> None:
    with pytest.raises(WeakSessionParameters, match="not an integer"):
        SessionPolicy().check(suite, iterations)  # type: ignore[arg-type]


def test_a_test_may_lower_the_floor_explicitly() -> None:
    policy = SessionPolicy(min_iterations=1000)
    policy.check(DEFAULT_SUITE, 1000)
    with pytest.raises(WeakSessionParameters):
        policy.check(DEFAULT_SUITE, 999)


def test_pins_demand_exact_values() -> None:
    policy = SessionPolicy(pin_suite=6, pin_iterations=600_000)
    policy.check(6, 600_000)
    with pytest.raises(WeakSessionParameters, match="requires 6"):
        policy.check(5, 600_000)
    with pytest.raises(WeakSessionParameters, match="requires 600000"):
        policy.check(6, 700_000)


def test_suites_may_be_narrowed_and_take_any_iterable() -> None:
    policy = SessionPolicy(suites=[5])  # type: ignore[arg-type]
    assert policy.suites == frozenset({5})
    policy.check(5, DEFAULT_ITERATIONS)
    with pytest.raises(WeakSessionParameters):
        policy.check(6, DEFAULT_ITERATIONS)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_iterations": 0}, "min_iterations"),
        ({"min_iterations": MAX_ITERATIONS + 1}, "min_iterations"),
        ({"max_iterations": MAX_ITERATIONS + 1}, "max_iterations"),
        ({"min_iterations": 2000, "max_iterations": 1000}, "exceed"),
        ({"suites": frozenset()}, "suites"),
        ({"suites": frozenset({9})}, "suites"),
        ({"pin_suite": 8}, "pin_suite"),
        ({"pin_iterations": 1000}, "pin_iterations"),
    ],
)
def test_a_nonsense_policy_is_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SessionPolicy(**kwargs)  # type: ignore[arg-type]


def test_the_policy_is_frozen() -> None:
    policy = SessionPolicy()
    with pytest.raises(AttributeError):
        policy.min_iterations = 1  # type: ignore[misc]
