"""Access tokens (JWT) and refresh tokens: the only jwt.encode and jwt.decode.

Access tokens are JWTs (HS256, ES256 or EdDSA; auth/keys.py) whose `kid` header names the key,
so keys can rotate: the current key signs, older ones still verify while they are in use. Each
key verifies only with its own algorithm. Refresh tokens are opaque random strings; only their
SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from usergraph.auth.keys import KeyRing, SigningKey, overlap

__all__ = ["AccessClaims", "InvalidAccessToken", "IssuedToken", "SigningKey", "TokenCodec"]

ACCESS_TOKEN_TYPE = "access"
REFRESH_TOKEN_PREFIX = "ugr_"  # lets secret scanners recognise a leaked token
MAX_REFRESH_TOKEN_LENGTH = 128
EMAIL_TOKEN_PREFIX = "uge_"  # one-time tokens sent by email
MAX_EMAIL_TOKEN_LENGTH = 128
CHALLENGE_TOKEN_PREFIX = "ugc_"  # second-factor challenges (login's first step)
MAX_CHALLENGE_TOKEN_LENGTH = 128
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "typ"]


class InvalidAccessToken(Exception):
    """The token is malformed, tampered with, expired, or not an access token."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    session_id: uuid.UUID
    roles: tuple[str, ...]
    expires_at: datetime
    # How the user signed in (RFC 8176 `amr` values: "pwd", "otp") and when.
    auth_methods: tuple[str, ...] = ()
    auth_time: datetime | None = None


HASURA_CLAIMS = "https://hasura.io/jwt/claims"


@dataclass(frozen=True, slots=True)
class ClaimMappings:
    """Optional claims for the services that read usergraph's tokens directly.

    hasura: Hasura's `https://hasura.io/jwt/claims` object (user id, default and allowed roles).
    role: a `role` claim (PostgREST, PostGraphile: `SET ROLE` to it), the user's strongest role
    with role_prefix in front, so it can name a database role such as `app_admin`.
    """

    hasura: bool = False
    role: bool = False
    role_prefix: str = ""
    # The roles in order of strength, strongest first; others come after, by name.
    ranking: tuple[str, ...] = ("admin", "user")

    def claims(self, user_id: int, roles: Sequence[str]) -> dict[str, object]:
        ranked = sorted(roles, key=self._rank)
        extra: dict[str, object] = {}
        if self.hasura and ranked:
            extra[HASURA_CLAIMS] = {
                "x-hasura-user-id": str(user_id),
                # The weakest role by default: a request asks for more with x-hasura-role.
                "x-hasura-default-role": ranked[-1],
                "x-hasura-allowed-roles": ranked,
            }
        if self.role and ranked:
            extra["role"] = self.role_prefix + ranked[0]
        return extra

    def _rank(self, role: str) -> tuple[int, str]:
        known = self.ranking.index(role) if role in self.ranking else len(self.ranking)
        return known, role


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at: datetime


class TokenCodec:
    def __init__(
        self,
        *,
        current_key: SigningKey | None = None,
        previous_keys: Sequence[SigningKey] = (),
        ring: KeyRing | None = None,
        issuer: str,
        audience: str,
        access_ttl: timedelta,
        leeway: timedelta = timedelta(seconds=10),
        mappings: ClaimMappings = ClaimMappings(),
    ) -> None:
        """Keys: a ring (asymmetric keys, rotating), or a current key and previous ones."""
        if ring is None:
            if current_key is None:
                raise ValueError("a TokenCodec needs a current key or a key ring")
            ring = KeyRing([*previous_keys, current_key], overlap=overlap(access_ttl, leeway))
        self.ring = ring
        self._mappings = mappings
        self._issuer = issuer
        self._audience = audience
        self.access_ttl = access_ttl
        self._leeway = leeway

    def issue_access_token(
        self,
        *,
        user_id: int,
        session_id: uuid.UUID,
        roles: Sequence[str],
        now: datetime,
        auth_methods: Sequence[str] = ("pwd",),
        auth_time: datetime | None = None,
    ) -> IssuedToken:
        """Return a signed access token for the session and when it expires; `amr` and
        `auth_time` say how and when the session's user signed in (default: by password, now)."""
        expires_at = now + self.access_ttl
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),  # PyJWT requires a string subject
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": uuid.uuid4().hex,
            "sid": str(session_id),
            "roles": sorted(roles),
            "amr": list(auth_methods),
            "auth_time": int((auth_time or now).timestamp()),
            "typ": ACCESS_TOKEN_TYPE,
            **self._mappings.claims(user_id, roles),
        }
        key = self.signing_key
        token = jwt.encode(claims, key.signer, algorithm=key.alg, headers={"kid": key.kid})
        return IssuedToken(token=token, expires_at=expires_at.replace(microsecond=0))

    @property
    def signing_key(self) -> SigningKey:
        key = self.ring.current.signing()
        if key is None:
            raise RuntimeError("no signing key: make one with `usergraph keys generate`")
        return key

    def decode_access_token(self, token: str) -> AccessClaims:
        """Verify token and return its claims, or raise InvalidAccessToken."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            if not isinstance(kid, str):
                raise InvalidAccessToken("unknown signing key")
            now = datetime.now(UTC)
            key = self.ring.current.verifier(kid, now)
            if key is None:
                self.ring.look_for_new_keys()
                key = self.ring.current.verifier(kid, now)
            if key is None:
                raise InvalidAccessToken("unknown signing key")
            claims = jwt.decode(
                token,
                key.verifier,
                algorithms=[key.alg],  # the key's own: no algorithm confusion
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
            if claims["typ"] != ACCESS_TOKEN_TYPE:
                raise InvalidAccessToken("not an access token")
            roles = claims.get("roles", [])
            methods = claims.get("amr", [])
            auth_time = claims.get("auth_time")
            return AccessClaims(
                user_id=int(claims["sub"]),
                session_id=uuid.UUID(claims["sid"]),
                roles=tuple(str(role) for role in roles) if isinstance(roles, list) else (),
                expires_at=datetime.fromtimestamp(claims["exp"], UTC),
                auth_methods=tuple(str(m) for m in methods) if isinstance(methods, list) else (),
                auth_time=(
                    datetime.fromtimestamp(auth_time, UTC) if isinstance(auth_time, int) else None
                ),
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidAccessToken(str(exc)) from exc


def new_refresh_token() -> str:
    """Return a fresh opaque refresh token (256 random bits)."""
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_email_token() -> str:
    """Return a fresh one-time token for an email link (256 random bits)."""
    return EMAIL_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_challenge_token() -> str:
    """Return a fresh second-factor challenge token (256 random bits)."""
    return CHALLENGE_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The SHA-256 under which an opaque token (refresh, email, challenge; recovery codes) is
    stored."""
    # A lookup by SHA-256 leaks nothing through timing: an attacker controls the token, not its
    # hash, so the database's index comparison does not reveal a stored value byte by byte.
    return hashlib.sha256(token.encode()).hexdigest()


def new_signing_secret() -> str:
    return secrets.token_urlsafe(48)


def read_or_create_key_file(path: Path, new_key: Callable[[], str] = new_signing_secret) -> str:
    """Return the development key kept in path (a signing key, a data key), creating it with
    new_key (mode 0600) if missing.

    Several workers may start at once: O_EXCL makes exactly one of them write the key and the
    others read it.
    """
    for _ in range(50):
        try:
            key = path.read_text().strip()
        except FileNotFoundError:
            key = ""
        if key:
            return key
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another worker is writing it; read again shortly.
            time.sleep(0.02)
            continue
        with os.fdopen(fd, "w") as file:
            key = new_key()
            file.write(key + "\n")
        return key
    raise RuntimeError(f"could not read the key file {path}")
