"""KeyRing: secret validation, key derivation, versions, grace period, listeners."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import unicodedata

import pytest

import e2ee
from e2ee import KeyRing
from e2ee.errors import EncryptionInternalError, InvalidEncryptionSecret

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
def test_non_str_secrets_are_an_invalid_secret(secret: object) -> None:
    # InvalidEncryptionSecret is a ValueError: the one error a caller handles for any bad
    # secret (see test_hardening.py for every entry point).
    with pytest.raises(InvalidEncryptionSecret, match="must be a str"):
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


@pytest.mark.asyncio
async def test_set_secret_async_derives_off_the_loop() -> None:
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


# -- the last call wins ---------------------------------------------------------------


def _key(secret: str) -> bytes:
    return e2ee.derive_secret_key(secret, "session-1", iterations=ITERATIONS)


class SlowDerive:
    """Stands in for a ring's derive step: each derivation starts, then waits until the
    test releases it, so the test decides the order in which derivations finish."""

    def __init__(self, r: KeyRing) -> None:
        self._real = r._derive
        self._lock = threading.Lock()
        self._started: dict[str, threading.Event] = {}
        self._released: dict[str, threading.Event] = {}

    def _events(self, secret: str) -> tuple[threading.Event, threading.Event]:
        with self._lock:
            return (
                self._started.setdefault(secret, threading.Event()),
                self._released.setdefault(secret, threading.Event()),
            )

    def __call__(self, secret: str) -> bytes:
        started, released = self._events(secret)
        started.set()
        assert released.wait(timeout=60), f"{secret!r} was never released"
        return self._real(secret)

    def release(self, secret: str) -> None:
        self._events(secret)[1].set()

    async def started(self, secret: str) -> None:
        assert await asyncio.to_thread(self._events(secret)[0].wait, 60)


def _slow_ring(monkeypatch: pytest.MonkeyPatch) -> tuple[KeyRing, SlowDerive]:
    r = ring()
    slow = SlowDerive(r)
    monkeypatch.setattr(r, "_derive", slow)
    return r, slow


@pytest.mark.parametrize("older_finishes_first", [True, False])
@pytest.mark.asyncio
async def test_the_last_set_secret_async_call_wins(
    monkeypatch: pytest.MonkeyPatch, older_finishes_first: bool
) -> None:
    r, slow = _slow_ring(monkeypatch)
    older = asyncio.ensure_future(r.set_secret_async("the older secret"))
    newer = asyncio.ensure_future(r.set_secret_async("the newer secret"))
    await slow.started("the older secret")
    await slow.started("the newer secret")
    order = [("the older secret", older), ("the newer secret", newer)]
    if not older_finishes_first:
        order.reverse()
    for secret, task in order:
        slow.release(secret)
        await task
    assert r.snapshot.current is not None
    assert r.snapshot.current.key == _key("the newer secret")


@pytest.mark.asyncio
async def test_a_set_secret_call_after_an_async_one_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    r, slow = _slow_ring(monkeypatch)
    older = asyncio.ensure_future(r.set_secret_async("the older secret"))
    await slow.started("the older secret")
    slow.release("the newer secret")
    r.set_secret("the newer secret")  # sync, called later, finishes first
    slow.release("the older secret")
    await older
    assert r.snapshot.current is not None
    assert r.snapshot.current.key == _key("the newer secret")
    assert r.version == 1  # the older call changed nothing when it finished


@pytest.mark.asyncio
async def test_an_async_call_after_a_blocked_sync_one_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    r, slow = _slow_ring(monkeypatch)
    worker = asyncio.ensure_future(asyncio.to_thread(r.set_secret, "the older secret"))
    await slow.started("the older secret")
    newer = asyncio.ensure_future(r.set_secret_async("the newer secret"))
    await slow.started("the newer secret")
    slow.release("the newer secret")
    await newer
    slow.release("the older secret")
    await worker
    assert r.snapshot.current is not None
    assert r.snapshot.current.key == _key("the newer secret")


@pytest.mark.asyncio
async def test_the_call_order_is_taken_when_called_not_when_awaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, slow = _slow_ring(monkeypatch)
    first = r.set_secret_async("the older secret")
    second = r.set_secret_async("the newer secret")
    for secret in ("the older secret", "the newer secret"):
        slow.release(secret)
    await second  # awaited first, but called last
    await first
    assert r.snapshot.current is not None
    assert r.snapshot.current.key == _key("the newer secret")
    with pytest.raises(InvalidEncryptionSecret):
        r.set_secret_async("short")  # refused at the call


@pytest.mark.asyncio
async def test_an_accept_called_before_an_installed_set_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, slow = _slow_ring(monkeypatch)
    accept = asyncio.ensure_future(r.accept_secret_async("a planned secret"))
    await slow.started("a planned secret")
    slow.release("an unplanned secret")
    r.set_secret("an unplanned secret")
    slow.release("a planned secret")
    await accept
    assert r.accepted_ids == ()
    assert len(r.held_secrets()) == 1


@pytest.mark.asyncio
async def test_an_accept_called_after_a_set_in_flight_survives_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, slow = _slow_ring(monkeypatch)
    setting = asyncio.ensure_future(r.set_secret_async("the new current"))
    await slow.started("the new current")
    slow.release("a later plan")
    await r.accept_secret_async("a later plan")  # called after, finished first
    slow.release("the new current")
    await setting
    assert r.secret_id == e2ee.secret_id(_key("the new current"))
    assert r.accepted_ids == (e2ee.secret_id(_key("a later plan")),)


# -- accepted (receive-only) secrets ---------------------------------------------------


def _held_keys(r: KeyRing) -> list[bytes]:
    return [key for key, _ in r.held_secrets()]


def test_accept_secret_is_receive_only_until_set_secret_promotes_it() -> None:
    r = ring()
    r.set_secret("the old secret")
    seen: list[int] = []
    r.add_listener(lambda ring: seen.append(ring.version))
    r.accept_secret("the new secret")
    assert r.secret_id == e2ee.secret_id(_key("the old secret"))  # still sends under old
    assert r.accepted_ids == (e2ee.secret_id(_key("the new secret")),)
    assert r.held_secrets() == [(_key("the old secret"), None), (_key("the new secret"), None)]
    assert seen == [2]
    r.accept_secret("the new secret")  # again: nothing changes
    r.accept_secret("the old secret")  # the current one: nothing changes
    assert seen == [2]
    r.set_secret("the new secret")
    assert r.secret_id == e2ee.secret_id(_key("the new secret"))
    assert r.accepted_ids == ()
    held = r.held_secrets()
    assert [k for k, _ in held] == [_key("the new secret"), _key("the old secret")]
    left = held[1][1]  # the old one, in its grace period
    assert left is not None
    assert 0 < left <= 10.0


def test_at_most_two_accepted_secrets_the_oldest_is_retired() -> None:
    for grace in (10.0, 0.0):
        r = ring(grace)
        r.set_secret("the current secret")
        for s in ("planned one", "planned two", "planned three"):
            r.accept_secret(s)
        assert r.accepted_ids == tuple(
            e2ee.secret_id(_key(s)) for s in ("planned three", "planned two")
        )
        keys = _held_keys(r)
        assert (_key("planned one") in keys) == (grace > 0)  # retired as a replaced one
        assert len(keys) == 3 + (grace > 0)


def test_an_unplanned_set_secret_retires_the_accepted_ones() -> None:
    for grace in (10.0, 0.0):
        r = ring(grace)
        r.set_secret("the current secret")
        r.accept_secret("a planned secret")
        r.set_secret("an unplanned secret")  # e.g. after removing a participant
        assert r.accepted_ids == ()
        keys = _held_keys(r)
        assert keys[0] == _key("an unplanned secret")
        assert (_key("a planned secret") in keys) == (grace > 0)
        if grace > 0:
            assert all(left is not None for _, left in r.held_secrets()[1:])


def test_a_promotion_keeps_the_other_accepted_secrets() -> None:
    r = ring()
    r.set_secret("the current secret")
    r.accept_secret("planned one")
    r.accept_secret("planned two")
    r.set_secret("planned one")
    assert r.accepted_ids == (e2ee.secret_id(_key("planned two")),)


def test_accepting_a_previous_secret_holds_it_without_expiry() -> None:
    r = ring()
    r.set_secret("secret one!")
    r.set_secret("secret two!")
    r.accept_secret("secret one!")
    assert r.held_secrets() == [(_key("secret two!"), None), (_key("secret one!"), None)]


def test_accept_secret_validates_like_set_secret() -> None:
    r = ring()
    r.set_secret("the current secret")
    with pytest.raises(InvalidEncryptionSecret):
        r.accept_secret("short")
    with pytest.raises(InvalidEncryptionSecret):
        r.accept_secret_async("short")
    assert r.accepted_ids == ()


@pytest.mark.asyncio
async def test_accept_secret_async_derives_off_the_loop() -> None:
    r = ring()
    await r.accept_secret_async("a planned secret")
    assert not r.has_secret  # receive-only: still nothing to send under
    assert _held_keys(r) == [_key("a planned secret")]


# -- KIDs of the ring's own tracks ------------------------------------------------------


def test_kid_source_is_injectable_and_never_repeats_a_kid_in_use() -> None:
    draws: list[int] = []

    def source(sid: int) -> int:
        kid = sid << 48 | [7, 7, 7, 8][min(len(draws), 3)]
        draws.append(kid)
        return kid

    r = KeyRing("session-1", kdf_iterations=ITERATIONS, kid_source=source)
    r.set_secret("the current secret")
    assert r.snapshot.current is not None
    first = r.claim_kid(r.snapshot.current).kid
    second = r.claim_kid(r.snapshot.current).kid
    assert first & 0xFFFF_FFFF_FFFF == 7
    assert second & 0xFFFF_FFFF_FFFF == 8  # 7 was in use, drawn again until free
    assert r.sending_kids == {first, second}
    r.release_kid(first)
    assert r.sending_kids == {second}


def test_a_kid_source_that_never_gives_a_free_kid_fails_closed() -> None:
    r = KeyRing("s", kdf_iterations=ITERATIONS, kid_source=lambda sid: sid << 48 | 1)
    r.set_secret("the current secret")
    assert r.snapshot.current is not None
    r.claim_kid(r.snapshot.current)
    with pytest.raises(EncryptionInternalError, match="KIDs in use"):
        r.claim_kid(r.snapshot.current)
    bad = KeyRing("s", kdf_iterations=ITERATIONS, kid_source=lambda sid: 5)
    bad.set_secret("the current secret")
    assert bad.snapshot.current is not None
    with pytest.raises(EncryptionInternalError, match="not a KID"):
        bad.claim_kid(bad.snapshot.current)
