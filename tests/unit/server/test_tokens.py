"""Unit tests of e2ee.server.tokens: session tokens and project auth tokens (JWT, HS256)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from e2ee.errors import E2eeError
from e2ee.server.tokens import (
    DEFAULT_TTL,
    MAX_AUTH_TTL,
    MAX_TTL,
    TokenBadSignature,
    TokenError,
    TokenExpired,
    TokenMalformed,
    TokenUnknownKey,
    TokenUnknownRole,
    TokenWrongSession,
    key_id,
    mint_token,
    project_auth_token,
    verify_project_auth,
    verify_token,
)

KEY = "key_test"
SECRET = "s" * 43
SID = "session-1"


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _forge(claims: dict[str, object], secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=alg, headers={"kid": key_id(secret)})


def test_round_trip_and_claims() -> None:
    before = int(time.time())
    token = mint_token(KEY, SECRET, SID, role="moderator", data="name=Ann")
    claims = verify_token(KEY, SECRET, token, session_id=SID)
    assert (claims.session_id, claims.role, claims.data) == (SID, "moderator", "name=Ann")
    assert claims.expires_at - claims.issued_at == DEFAULT_TTL == 6 * 3600
    assert claims.issued_at >= before
    raw = _claims(token)
    assert raw["iss"] == KEY
    assert raw["scope"] == "session.connect"
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert SECRET not in token
    # Without session_id any session is accepted.
    assert verify_token(KEY, SECRET, token).session_id == SID


def test_defaults_and_jti_unique() -> None:
    tokens = [mint_token(KEY, SECRET, SID) for _ in range(50)]
    assert len({_claims(t)["jti"] for t in tokens}) == 50
    claims = verify_token(KEY, SECRET, tokens[0])
    assert (claims.role, claims.data) == ("publisher", "")


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"role": "admin"}, ValueError),
        ({"ttl": 0}, ValueError),
        ({"ttl": MAX_TTL + 1}, ValueError),
        ({"ttl": 1.5}, TypeError),
        ({"ttl": True}, TypeError),
        ({"data": "x" * 1001}, ValueError),
        ({"data": 5}, TypeError),
    ],
)
def test_mint_refuses_bad_arguments(kwargs: dict[str, object], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        mint_token(KEY, SECRET, SID, **kwargs)  # type: ignore[arg-type]


def test_mint_limits_are_inclusive() -> None:
    token = mint_token(KEY, SECRET, SID, ttl=MAX_TTL, data="x" * 1000)
    claims = verify_token(KEY, SECRET, token)
    assert claims.expires_at - claims.issued_at == MAX_TTL
    with pytest.raises(ValueError, match="api_secret"):
        mint_token(KEY, "short", SID)
    with pytest.raises(ValueError, match="session_id"):
        mint_token(KEY, SECRET, "")


def test_errors_have_reasons() -> None:
    assert issubclass(TokenError, E2eeError)
    for cls, reason in [
        (TokenBadSignature, "bad_signature"),
        (TokenWrongSession, "wrong_session"),
        (TokenExpired, "expired"),
        (TokenMalformed, "malformed"),
        (TokenUnknownRole, "unknown_role"),
    ]:
        assert issubclass(cls, TokenError)
        err = cls("m")
        assert (err.reason, err.code) == (reason, f"token_{reason}")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_bad_signature() -> None:
    token = mint_token(KEY, SECRET, SID)
    with pytest.raises(TokenUnknownKey):  # another secret: its kid is not ours
        verify_token(KEY, "t" * 43, token)
    head, payload, sig = token.split(".")
    claims = _claims(token)
    claims["role"] = "moderator"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenBadSignature):
        verify_token(KEY, SECRET, f"{head}.{forged}.{sig}")
    with pytest.raises(TokenBadSignature):
        verify_token(KEY, SECRET, f"{head}.{payload}.{sig[::-1]}")
    # Another algorithm, even with the right secret, and "none".
    with pytest.raises(TokenBadSignature):
        verify_token(KEY, SECRET, _forge(_claims(token), alg="HS512"))
    unsigned = jwt.encode(_claims(token), None, algorithm="none")
    with pytest.raises(TokenBadSignature):
        verify_token(KEY, SECRET, unsigned)
    # Right secret, other API key in iss.
    with pytest.raises(TokenBadSignature):
        verify_token("key_other", SECRET, token)


def test_wrong_session_expired_unknown_role() -> None:
    token = mint_token(KEY, SECRET, SID)
    with pytest.raises(TokenWrongSession):
        verify_token(KEY, SECRET, token, session_id="session-2")
    old = mint_token(KEY, SECRET, SID, ttl=60, now=time.time() - 3600)
    with pytest.raises(TokenExpired):
        verify_token(KEY, SECRET, old)
    # Valid at the time given.
    assert verify_token(KEY, SECRET, old, now=time.time() - 3590).session_id == SID
    claims = _claims(token)
    claims["role"] = "root"
    with pytest.raises(TokenUnknownRole):
        verify_token(KEY, SECRET, _forge(claims))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.pop("exp"),
        lambda c: c.pop("jti"),
        lambda c: c.pop("session_id"),
        lambda c: c.pop("scope"),
        lambda c: c.update(exp="tomorrow"),
        lambda c: c.update(session_id=5),
        lambda c: c.update(data=["x"]),
        lambda c: c.update(iat=int(time.time()) + 3600),
        lambda c: c.update(scope="project"),
    ],
)
def test_malformed_claims(mutate: object) -> None:
    claims = _claims(mint_token(KEY, SECRET, SID))
    mutate(claims)  # type: ignore[operator]
    with pytest.raises(TokenMalformed):
        verify_token(KEY, SECRET, _forge(claims))


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 9000, None, 5])
def test_not_a_token(token: object) -> None:
    with pytest.raises(TokenMalformed):
        verify_token(KEY, SECRET, token)  # type: ignore[arg-type]


def test_project_auth_tokens() -> None:
    token = project_auth_token(KEY, SECRET)
    claims = verify_project_auth(KEY, SECRET, token)
    assert claims.api_key == KEY
    assert claims.expires_at - claims.issued_at == 300
    # Kinds do not mix: a client's session token is no REST credential, and back.
    with pytest.raises(TokenMalformed):
        verify_project_auth(KEY, SECRET, mint_token(KEY, SECRET, SID, role="moderator"))
    with pytest.raises(TokenMalformed):
        verify_token(KEY, SECRET, token)
    with pytest.raises(TokenUnknownKey):
        verify_project_auth(KEY, "u" * 43, token)
    with pytest.raises(TokenExpired):
        verify_project_auth(KEY, SECRET, project_auth_token(KEY, SECRET, 60, now=time.time() - 600))
    with pytest.raises(ValueError, match="ttl"):
        project_auth_token(KEY, SECRET, MAX_AUTH_TTL + 1)
    # Long-lived ones made by hand are refused too.
    now = int(time.time())
    long_lived = _forge(
        {"iss": KEY, "scope": "project", "iat": now, "exp": now + 86400, "jti": "j"}
    )
    with pytest.raises(TokenExpired):
        verify_project_auth(KEY, SECRET, long_lived)
