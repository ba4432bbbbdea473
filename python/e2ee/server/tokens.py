"""Tokens: who may join which session, and who may call the REST API.

Two kinds of JWT, both HS256 signed with the project's API secret, both with
``iss = api_key`` and a ``kid`` header naming the secret that signed them
(:func:`e2ee.server.store.key_id`).  Verification takes the secret named by ``kid`` from
the live ones (two during a rotation, ``e2ee credentials rotate``); a token without a
``kid``, or naming a retired or unknown secret, is refused (``token_unknown_key``).  A
``scope`` claim keeps the two kinds apart, so a client holding a session token can never
use it on the REST API, and a REST credential is not a session token:

* **Session tokens** (``scope = "session.connect"``), handed to clients, minted with
  :func:`mint_token` (or ``POST /v1/sessions/{id}/tokens``) and checked with
  :func:`verify_token` when a client connects.  Claims: ``session_id``, ``role``
  (``subscriber`` | ``publisher`` | ``moderator``), ``data`` (connection data, at most
  1000 characters, **visible to everyone in the session**: never put personal or secret
  information in it), ``iat``, ``exp`` (default 6 h, at most 24 h: a token whose
  ``exp - iat`` is longer is refused even if signed), ``jti`` (random, unique; the server
  keeps a deny-list of revoked ones, ``token_revoked``).
* **Project auth tokens** (``scope = "project"``), short-lived (default 5 minutes, at most
  1 hour), made with :func:`project_auth_token` by the application server and sent as
  ``Authorization: Bearer <jwt>``; the API secret itself never travels.

Every failure raises a subclass of :class:`TokenError` whose ``reason`` is a stable code.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import jwt

from e2ee.errors import E2eeError
from e2ee.server.store import key_id

__all__ = [
    "DEFAULT_TTL",
    "MAX_AUTH_TTL",
    "MAX_DATA_CHARS",
    "MAX_TTL",
    "ROLES",
    "Keyring",
    "ProjectClaims",
    "TokenBadSignature",
    "TokenClaims",
    "TokenError",
    "TokenExpired",
    "TokenMalformed",
    "TokenRevoked",
    "TokenUnknownKey",
    "TokenUnknownRole",
    "TokenWrongSession",
    "key_id",
    "mint_token",
    "project_auth_token",
    "unverified_kid",
    "verify_project_auth",
    "verify_token",
]

Role = Literal["subscriber", "publisher", "moderator"]
ROLES: Final = ("subscriber", "publisher", "moderator")
#: Default lifetime of a session token: 6 hours (a working day's call, reconnects included).
DEFAULT_TTL: Final = 6 * 3600
#: Longest lifetime of a session token: 24 hours (a leaked token dies the same day).
MAX_TTL: Final = 24 * 3600
#: Longest lifetime of a project auth token: 1 hour (default 5 minutes).
MAX_AUTH_TTL: Final = 3600
MAX_DATA_CHARS: Final = 1000
#: Clock skew tolerated between the minting and the verifying host, in seconds.
LEEWAY: Final = 10

SESSION_SCOPE: Final = "session.connect"
PROJECT_SCOPE: Final = "project"
_ALGORITHM: Final = "HS256"


# -- errors -----------------------------------------------------------------------------


class TokenError(E2eeError, ValueError):
    """A token was refused.  ``reason`` is a stable code (``"expired"``, ...)."""

    reason: str = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        """The error code the server sends: ``token_<reason>``."""
        return f"token_{self.reason}"


class TokenMalformed(TokenError):
    """Not a JWT, a required claim is missing or of the wrong type, or the wrong kind of
    token (a project auth token where a session token is expected, or the reverse)."""

    reason = "malformed"


class TokenBadSignature(TokenError):
    """The signature does not verify with the API secret the token names (tampered, or
    minted by another project), or the algorithm is not HS256."""

    reason = "bad_signature"


class TokenExpired(TokenError):
    """``exp`` has passed (or, for a project auth token, lies too far in the future)."""

    reason = "expired"


class TokenUnknownKey(TokenError):
    """The token names no ``kid``, or one that is not a live API secret of this project
    (retired after a rotation, or never ours)."""

    reason = "unknown_key"


class TokenRevoked(TokenError):
    """The token's ``jti`` is on the server's deny-list (its holder was
    force-disconnected, or the token was revoked through the REST API)."""

    reason = "revoked"


class TokenWrongSession(TokenError):
    """A valid token, but for another session."""

    reason = "wrong_session"


class TokenUnknownRole(TokenError):
    """The role is not one of subscriber, publisher, moderator."""

    reason = "unknown_role"


# -- claims -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """A verified session token."""

    session_id: str
    role: Role
    data: str
    issued_at: int
    expires_at: int
    jti: str


@dataclass(frozen=True, slots=True)
class ProjectClaims:
    """A verified project auth token."""

    api_key: str
    issued_at: int
    expires_at: int
    jti: str


# -- minting ----------------------------------------------------------------------------


def _check_secret(api_key: str, api_secret: str) -> None:
    if not isinstance(api_key, str) or not api_key:
        raise ValueError("api_key must be a non-empty str")
    if not isinstance(api_secret, str) or len(api_secret) < 32:
        raise ValueError("api_secret must be a str of at least 32 characters")


def _check_ttl(ttl: object, maximum: int) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TypeError("ttl must be an int (seconds)")
    if not 1 <= ttl <= maximum:
        raise ValueError(f"ttl must be from 1 to {maximum} seconds")
    return ttl


def mint_token(
    api_key: str,
    api_secret: str,
    session_id: str,
    *,
    role: Role = "publisher",
    ttl: int = DEFAULT_TTL,
    data: str = "",
    now: float | None = None,
) -> str:
    """A session token for ``session_id``.

    ``role``: ``"subscriber"`` (cannot publish), ``"publisher"`` or ``"moderator"`` (can
    also force-disconnect and force-unpublish).  ``ttl`` in seconds, 1 s to 24 h.
    ``data`` is the connection data, at most 1000 characters, shown to **everyone** in
    the session.  ``now`` (Unix time) is for tests.  Does not check that the session
    exists (the REST endpoint and the ``e2ee token`` command do).
    """
    _check_secret(api_key, api_secret)
    if not isinstance(session_id, str) or not session_id:
        raise ValueError("session_id must be a non-empty str")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    ttl = _check_ttl(ttl, MAX_TTL)
    if not isinstance(data, str):
        raise TypeError("data must be a str")
    if len(data) > MAX_DATA_CHARS:
        raise ValueError(f"data must be at most {MAX_DATA_CHARS} characters")
    iat = int(time.time() if now is None else now)
    claims = {
        "iss": api_key,
        "scope": SESSION_SCOPE,
        "session_id": session_id,
        "role": role,
        "data": data,
        "iat": iat,
        "exp": iat + ttl,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, api_secret, algorithm=_ALGORITHM, headers={"kid": key_id(api_secret)})


def project_auth_token(
    api_key: str, api_secret: str, ttl: int = 300, *, now: float | None = None
) -> str:
    """A short-lived JWT for the REST API: send it as ``Authorization: Bearer <jwt>``.
    ``ttl`` in seconds, 1 to 3600 (default 300)."""
    _check_secret(api_key, api_secret)
    ttl = _check_ttl(ttl, MAX_AUTH_TTL)
    iat = int(time.time() if now is None else now)
    claims = {
        "iss": api_key,
        "scope": PROJECT_SCOPE,
        "iat": iat,
        "exp": iat + ttl,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, api_secret, algorithm=_ALGORITHM, headers={"kid": key_id(api_secret)})


# -- verifying --------------------------------------------------------------------------


def _segment(token: str, index: int) -> dict[str, Any] | None:
    """The JSON object in segment ``index`` of a compact JWS, or ``None``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(parts[index] + "=" * (-len(parts[index]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return value if isinstance(value, dict) else None


#: The live API secrets by key id (``kid`` -> secret).  Where a function takes
#: ``api_secret: str | Keyring``, a plain secret stands for the keyring of that one secret.
Keyring = Mapping[str, str]


def unverified_kid(token: object) -> str | None:
    """The ``kid`` named in a token's header, unverified (to pick the key), or ``None``."""
    if not isinstance(token, str) or len(token) > 8192:
        return None
    header = _segment(token, 0)
    kid = header.get("kid") if header is not None else None
    return kid if isinstance(kid, str) else None


def _secret_for(header: dict[str, Any], api_secret: str | Keyring) -> str:
    keys = {key_id(api_secret): api_secret} if isinstance(api_secret, str) else api_secret
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenUnknownKey("the token names no signing key ('kid' header)")
    secret = keys.get(kid)
    if secret is None:
        raise TokenUnknownKey("the token's signing key is unknown or retired: get a new token")
    return secret


def _decode(
    api_key: str, api_secret: str | Keyring, token: object, now: float | None
) -> dict[str, Any]:
    if not isinstance(token, str) or not token or len(token) > 8192:
        raise TokenMalformed("the token is missing or not a JWT")
    header = _segment(token, 0)
    if header is None or _segment(token, 1) is None:
        raise TokenMalformed("the token is not a JWT")
    if header.get("alg") != _ALGORITHM:
        raise TokenBadSignature(f"the token must be signed with {_ALGORITHM}")
    secret = _secret_for(header, api_secret)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            options={
                "require": ["iss", "iat", "exp", "jti", "scope"],
                "verify_exp": False,  # checked below, with `now`
                "verify_iat": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenBadSignature("the token's signature is not valid for this project") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenMalformed(f"the token lacks the {exc.claim!r} claim") from None
    except jwt.DecodeError:
        # Header and payload were readable (checked above): the signature is not.
        raise TokenBadSignature("the token's signature is not valid for this project") from None
    except jwt.InvalidTokenError:
        raise TokenMalformed("the token is not a valid JWT") from None
    for name in ("iat", "exp"):
        if isinstance(claims[name], bool) or not isinstance(claims[name], int):
            raise TokenMalformed(f"the token's {name!r} claim is not an integer")
    if not isinstance(claims["jti"], str) or not isinstance(claims["scope"], str):
        raise TokenMalformed("the token's 'jti' or 'scope' claim is not a string")
    if claims["iss"] != api_key:
        # Signed with our secret but naming another key: not one of ours.
        raise TokenBadSignature("the token was not issued for this project's API key")
    t = time.time() if now is None else now
    if claims["exp"] <= t - LEEWAY:
        raise TokenExpired("the token has expired")
    if claims["iat"] > t + LEEWAY:
        raise TokenMalformed("the token was issued in the future")
    return claims


def verify_token(
    api_key: str,
    api_secret: str | Keyring,
    token: str,
    *,
    session_id: str | None = None,
    now: float | None = None,
) -> TokenClaims:
    """Checks a session token and returns its claims.

    ``api_secret``: the live secrets by key id, or one secret.  With ``session_id``, the
    token must be for that session (else :class:`TokenWrongSession`).  Raises a
    :class:`TokenError` subclass: :class:`TokenMalformed`, :class:`TokenUnknownKey`,
    :class:`TokenBadSignature`, :class:`TokenExpired` (also for a lifetime ``exp - iat``
    over :data:`MAX_TTL`), :class:`TokenWrongSession` or :class:`TokenUnknownRole`.  The
    deny-list (:class:`TokenRevoked`) is the server's to check.
    """
    claims = _decode(api_key, api_secret, token, now)
    if claims["scope"] != SESSION_SCOPE:
        raise TokenMalformed("this is not a session token")
    if claims["exp"] - claims["iat"] > MAX_TTL:
        # Signed by us or not, no token of ours lives longer (the year-9999 token).
        raise TokenExpired(f"session tokens must expire within {MAX_TTL} s of 'iat'")
    sid = claims.get("session_id")
    data = claims.get("data", "")
    if not isinstance(sid, str) or not sid:
        raise TokenMalformed("the token lacks a 'session_id' claim")
    if not isinstance(data, str) or len(data) > MAX_DATA_CHARS:
        raise TokenMalformed(f"the token's 'data' is not a str of at most {MAX_DATA_CHARS}")
    if session_id is not None and not secrets.compare_digest(sid.encode(), session_id.encode()):
        raise TokenWrongSession("the token is for another session")
    role = claims.get("role")
    if role not in ROLES:
        raise TokenUnknownRole(f"unknown role {str(role)[:32]!r}")
    return TokenClaims(
        session_id=sid,
        role=role,
        data=data,
        issued_at=claims["iat"],
        expires_at=claims["exp"],
        jti=claims["jti"],
    )


def verify_project_auth(
    api_key: str, api_secret: str | Keyring, token: str, *, now: float | None = None
) -> ProjectClaims:
    """Checks a project auth token (the REST API's ``Authorization: Bearer``).  A token
    whose ``exp`` lies more than :data:`MAX_AUTH_TTL` ahead is refused as
    :class:`TokenExpired`: REST credentials must be short-lived."""
    claims = _decode(api_key, api_secret, token, now)
    if claims["scope"] != PROJECT_SCOPE:
        raise TokenMalformed("this is not a project auth token (session tokens are for clients)")
    t = time.time() if now is None else now
    if claims["exp"] > t + MAX_AUTH_TTL + LEEWAY:
        raise TokenExpired(f"project auth tokens must expire within {MAX_AUTH_TTL} s")
    return ProjectClaims(
        api_key=claims["iss"],
        issued_at=claims["iat"],
        expires_at=claims["exp"],
        jti=claims["jti"],
    )
