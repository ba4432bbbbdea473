"""KeyRing: secret validation, key derivation, versions, grace period, listeners."""

from __future__ import annotations

import asyncio
import hashlib
import unicodedata

import pytest

import e2ee
from e2ee import KeyRing
from e2ee.errors import InvalidEncryptionSecret

ITERATIONS = 1000


def ring(grace: float = 10.0) -> KeyRing:
    return KeyRing("session-1", kdf_iterations=ITERATIONS, grace_period=grace)


@pytest.mark.parametrize("secret", ["x" * 7, "x" * 257, "", "e\u0301" * 7])
def test_invalid_secrets_are_refused_and_the_old_one_stays(secret: str) -> None:
    r = ring()
    r.set_secret("the first secret")
    before = (r.version, r.secret_id)
    with pytest.raises(InvalidEncryptionSecret):
        r.set_secret(secret)
    assert (r.version, r.secret_id) == before


@pytest.mark.parametrize("secret", [b"bytes secret", 12345678, None, ["a" * 8]])
def test_non_str_secrets_are_a_type_error(secret: object) -> None:
    with pytest.raises(TypeError):
        ring().set_secret(secret)  # type: ignore[arg-type]


def test_boundary_lengths_are_accepted() -> None:
    for n in (8, 256):
        r = ring()
        r.set_secret("s" * n)
        assert r.has_secret


def test_the_key_is_pbkdf2_of_the_nfc_secret_salted_with_the_session() -> None:
    composed, decomposed = "caf\u00e9 au lait", "cafe\u0301 au lait"
    a, b = ring(), ring()
    a.set_secret(composed)
    b.set_secret(decomposed)
    assert a.snapshot.current == b.snapshot.current
    expected = hashlib.pbkdf2_hmac(
        "sha256",
        unicodedata.normalize("NFC", decomposed).encode(),
        b"e2ee v1 session session-1",
        ITERATIONS,
        32,
    )
    assert a.snapshot.current is not None
    assert a.snapshot.current.key == expected
    assert a.secret_id == e2ee.secret_id(expected)


def test_versions_and_listeners() -> None:
    r = ring()
    seen: list[int] = []
    r.add_listener(lambda ring: seen.append(ring.version))
    r.set_secret("first secret")
    r.set_secret("first secret")  # the same secret again changes nothing
    r.set_secret("second secret")
    assert seen == [1, 2]
    assert "secret" not in repr(r.snapshot.current).replace("HeldSecret", "")


def test_grace_period_keeps_two_previous_secrets() -> None:
    r = ring(grace=10.0)
    for s in ("secret one!", "secret two!", "secret three", "secret four"):
        r.set_secret(s)
    held = r.held_secrets()
    assert len(held) == 3  # current + 2 previous
    assert held[0][1] is None
    assert all(left is not None and 0 < left <= 10.0 for _, left in held[1:])


def test_zero_grace_is_strict() -> None:
    r = ring(grace=0.0)
    r.set_secret("secret one!")
    r.set_secret("secret two!")
    assert len(r.held_secrets()) == 1


def test_set_secret_async_derives_off_the_loop() -> None:
    async def main() -> None:
        r = KeyRing("s", kdf_iterations=200_000)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        await r.set_secret_async("a fine secret")
        t.cancel()
        assert r.has_secret
        assert ticks > 100  # the loop kept running during PBKDF2
        with pytest.raises(InvalidEncryptionSecret):
            await r.set_secret_async("short")

    asyncio.run(main())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kdf_iterations": 0}, "kdf_iterations"),
        ({"grace_period": -1.0}, "grace_period"),
        ({"grace_period": float("inf")}, "grace_period"),
        ({"grace_period": float("nan")}, "grace_period"),
        ({"grace_period": 1e20}, "grace_period"),
        ({"suite": 9}, "CipherSuite"),
        ({"session_id": "s" * 1025}, "session_id"),
        ({"session_id": ""}, "session_id"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    args = {"session_id": "s", **kwargs}
    with pytest.raises(ValueError, match=match):
        KeyRing(**args)  # type: ignore[arg-type]
