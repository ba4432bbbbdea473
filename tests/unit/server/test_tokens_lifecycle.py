"""Unit tests of the token lifecycle in e2ee.server.tokens: the ``kid`` header naming the
API secret, two live secrets during a rotation, and the maximum lifetime."""

from __future__ import annotations

import time

import jwt
import pytest

from e2ee.server.store import key_id, new_api_secret
from e2ee.server.tokens import (
    DEFAULT_TTL,
    MAX_TTL,
    TokenBadSignature,
    TokenExpired,
    TokenRevoked,
    TokenUnknownKey,
    mint_token,
    project_auth_token,
    unverified_kid,
    verify_project_auth,
    verify_token,
)

KEY = "key_test"
OLD, NEW = new_api_secret(), new_api_secret()
SID = "session-1"


def _session_claims(iat: int, exp: int) -> dict[str, object]:
    return {
        "iss": KEY,
        "scope": "session.connect",
        "session_id": SID,
        "role": "publisher",
        "data": "",
        "iat": iat,
        "exp": exp,
        "jti": "j",
    }


def test_kid_names_the_signing_secret() -> None:
    assert key_id(OLD) != key_id(NEW)
    assert key_id(OLD) == key_id(OLD)
    assert OLD not in key_id(OLD)
    for token in (mint_token(KEY, OLD, SID), project_auth_token(KEY, OLD)):
        assert jwt.get_unverified_header(token)["kid"] == key_id(OLD) == unverified_kid(token)
    assert unverified_kid("not a token") is None
    assert unverified_kid(5) is None


def test_two_live_secrets_during_a_rotation() -> None:
    old_token, new_token = mint_token(KEY, OLD, SID), mint_token(KEY, NEW, SID)
    both = {key_id(NEW): NEW, key_id(OLD): OLD}
    assert verify_token(KEY, both, old_token).session_id == SID
    assert verify_token(KEY, both, new_token).session_id == SID
    assert verify_project_auth(KEY, both, project_auth_token(KEY, OLD)).api_key == KEY
    # Once the old secret is retired, its tokens name an unknown key.
    retired = {key_id(NEW): NEW}
    assert verify_token(KEY, retired, new_token).session_id == SID
    with pytest.raises(TokenUnknownKey) as err:
        verify_token(KEY, retired, old_token)
    assert err.value.code == "token_unknown_key"
    with pytest.raises(TokenUnknownKey):
        verify_project_auth(KEY, retired, project_auth_token(KEY, OLD))


def test_kid_missing_or_lying() -> None:
    claims = _session_claims(int(time.time()), int(time.time()) + 60)
    with pytest.raises(TokenUnknownKey, match="names no signing key"):
        verify_token(KEY, OLD, jwt.encode(claims, OLD, "HS256"))
    with pytest.raises(TokenUnknownKey):
        verify_token(KEY, OLD, jwt.encode(claims, OLD, "HS256", headers={"kid": ""}))
    # Naming our key but signed with another secret: a bad signature, not a key lookup.
    lying = jwt.encode(claims, NEW, "HS256", headers={"kid": key_id(OLD)})
    with pytest.raises(TokenBadSignature):
        verify_token(KEY, OLD, lying)


def test_lifetime_bounded_even_if_signed() -> None:
    assert (DEFAULT_TTL, MAX_TTL) == (6 * 3600, 24 * 3600)
    now = int(time.time())
    kid = {"kid": key_id(OLD)}
    for exp in (253402300799, now + MAX_TTL + 1):  # year 9999; one second too long
        token = jwt.encode(_session_claims(now, exp), OLD, "HS256", headers=kid)
        with pytest.raises(TokenExpired, match="within"):
            verify_token(KEY, OLD, token)
    at_limit = jwt.encode(_session_claims(now, now + MAX_TTL), OLD, "HS256", headers=kid)
    assert verify_token(KEY, OLD, at_limit).expires_at == now + MAX_TTL
    with pytest.raises(ValueError, match="ttl"):
        mint_token(KEY, OLD, SID, ttl=MAX_TTL + 1)


def test_revoked_reason() -> None:
    assert TokenRevoked("m").code == "token_revoked"
    assert TokenUnknownKey("m").code == "token_unknown_key"
