"""The client's check of a server hello (e2ee.client.policy.check_hello): pure, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from e2ee.client.errors import E2eeRequired, SessionError
from e2ee.client.policy import E2eeParams, check_hello
from e2ee.errors import EncryptionSecretMissing, WeakSessionParameters
from e2ee.wire.params import SessionPolicy

GOOD: dict[str, Any] = {"e2ee": True, "media_mode": "routed", "suite": 6, "kdf_iterations": 600_000}


def hello(**changes: Any) -> dict[str, Any]:
    out = {**GOOD, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def test_a_good_e2ee_hello_gives_its_parameters() -> None:
    assert check_hello(GOOD, secret_given=True, policy=SessionPolicy()) == E2eeParams(6, 600_000)
    assert check_hello(hello(suite=5), secret_given=True, policy=SessionPolicy()) == E2eeParams(
        5, 600_000
    )


@pytest.mark.parametrize(
    "session",
    [
        hello(e2ee=False, suite=None, kdf_iterations=None),
        hello(e2ee=False),
        hello(e2ee=...),
        hello(e2ee="true"),
        hello(e2ee=1),
        hello(media_mode="relayed"),
        hello(media_mode=...),
        hello(suite=...),
        hello(kdf_iterations=...),
        hello(suite="6"),
        hello(suite=None),
        hello(kdf_iterations=600_000.0),
        hello(kdf_iterations=True),
        hello(suite=True),
    ],
)
def test_a_secret_makes_e2ee_required(session: dict[str, Any]) -> None:
    with pytest.raises(E2eeRequired) as info:
        check_hello(session, secret_given=True, policy=SessionPolicy())
    assert info.value.code == "e2ee_required"
    assert isinstance(info.value, SessionError)
    assert "refuses" in str(info.value)


def test_the_e2ee_required_message_says_what_the_server_offered() -> None:
    with pytest.raises(E2eeRequired, match=r"unencrypted session \(e2ee=False\)"):
        check_hello(hello(e2ee=False), secret_given=True, policy=SessionPolicy())


@pytest.mark.parametrize(
    ("suite", "iterations"),
    [(6, 1), (6, 99_999), (3, 600_000), (8, 600_000), (7, 600_000), (1, 600_000),
     (6, 10_000_001), (99, 600_000)],
)  # fmt: skip
def test_weak_parameters_fail_the_default_policy(suite: int, iterations: int) -> None:
    with pytest.raises(WeakSessionParameters) as info:
        check_hello(
            hello(suite=suite, kdf_iterations=iterations),
            secret_given=True,
            policy=SessionPolicy(),
        )
    assert (info.value.suite, info.value.kdf_iterations) == (suite, iterations)


def test_an_explicitly_lowered_floor_admits_a_test_session() -> None:
    policy = SessionPolicy(min_iterations=1000)
    assert check_hello(hello(kdf_iterations=1000), secret_given=True, policy=policy) == E2eeParams(
        6, 1000
    )
    with pytest.raises(WeakSessionParameters):
        check_hello(hello(kdf_iterations=999), secret_given=True, policy=policy)


def test_pins_demand_the_exact_values() -> None:
    policy = SessionPolicy(pin_suite=5, pin_iterations=600_000)
    assert check_hello(hello(suite=5), secret_given=True, policy=policy) == E2eeParams(5, 600_000)
    with pytest.raises(WeakSessionParameters, match="requires 5"):
        check_hello(GOOD, secret_given=True, policy=policy)
    with pytest.raises(WeakSessionParameters, match="requires 600000"):
        check_hello(hello(suite=5, kdf_iterations=700_000), secret_given=True, policy=policy)


def test_without_a_secret() -> None:
    # A session without E2EE: only a client given no secret joins it.
    assert check_hello(hello(e2ee=False), secret_given=False, policy=SessionPolicy()) is None
    with pytest.raises(EncryptionSecretMissing):
        check_hello(GOOD, secret_given=False, policy=SessionPolicy())
    with pytest.raises(SessionError) as info:
        check_hello(hello(e2ee="no"), secret_given=False, policy=SessionPolicy())
    assert info.value.code == "protocol_error"
