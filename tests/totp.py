"""TOTP as the tests compute it: RFC 6238 (over RFC 4226's HOTP) from hmac directly, never
through usergraph's code or pyotp; and the GraphQL steps of enrolling and signing in with it.

tests/auth/test_totp.py checks `hotp` and `totp` against the RFCs' own test vectors first.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette

from tests.client import Account, GraphQL

STEP = 30
# Failures a minute before an account locks, in the `strict` fixture's app (tests/conftest.py).
STRICT_LIMIT = 3

START_TOTP = """mutation($input: StartTotpEnrollmentInput!) { startTotpEnrollment(input: $input) {
  secret otpauthUri qrCodeSvg userErrors { field message code retryAfter }
} }"""
CONFIRM_TOTP = """mutation($input: ConfirmTotpEnrollmentInput!) {
  confirmTotpEnrollment(input: $input) {
    recoveryCodes
    user { id secondFactors { totpEnabled totpEnabledAt recoveryCodesRemaining } }
    userErrors { field message code }
} }"""
DISABLE_TOTP = """mutation($input: DisableTotpInput!) { disableTotp(input: $input) {
  user { id secondFactors { totpEnabled recoveryCodesRemaining } }
  userErrors { field message code retryAfter }
} }"""
REGENERATE_CODES = """mutation($input: RegenerateRecoveryCodesInput!) {
  regenerateRecoveryCodes(input: $input) { recoveryCodes userErrors { field message code } }
}"""
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken refreshToken user { id username }
  secondFactorChallenge { token expiresAt methods }
  userErrors { field message code retryAfter }
} }"""
VERIFY = """mutation($input: VerifySecondFactorInput!) { verifySecondFactor(input: $input) {
  accessToken refreshToken tokenType accessTokenExpiresAt refreshTokenExpiresAt
  user { id username secondFactors { totpEnabled recoveryCodesRemaining } }
  secondFactorChallenge { token }
  userErrors { field message code retryAfter }
} }"""
RESET_FACTORS = """mutation($input: ResetSecondFactorsInput!) { resetSecondFactors(input: $input) {
  user { id secondFactors { totpEnabled recoveryCodesRemaining } }
  userErrors { field message code }
} }"""
SECOND_FACTORS = "{ me { secondFactors { totpEnabled totpEnabledAt recoveryCodesRemaining } } }"


def hotp(key: bytes, counter: int, *, digits: int = 6, digest: Any = hashlib.sha1) -> str:
    """RFC 4226, section 5.3: HMAC of the 8-byte counter, dynamic truncation, modulo 10^digits."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    binary = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def totp_at(key: bytes, unix_time: float, *, digits: int = 6, digest: Any = hashlib.sha1) -> str:
    """RFC 6238, section 4: HOTP with T = floor(time / 30)."""
    return hotp(key, int(unix_time // STEP), digits=digits, digest=digest)


def secret_key(secret: str) -> bytes:
    """The key bytes of a base32 secret as authenticator apps read it (padding optional)."""
    return base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))


def code(secret: str, unix_time: float | None = None) -> str:
    """The code an authenticator app shows for secret at unix_time (now by default)."""
    return totp_at(secret_key(secret), time.time() if unix_time is None else unix_time)


@dataclass
class Clock:
    """A controllable clock for the server's TOTP steps (the `clock` fixture installs one).

    It starts in the middle of a step, so a test that does not move it never meets an edge."""

    now: float = field(default_factory=lambda: (time.time() // STEP) * STEP + STEP / 2)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Enrolled:
    account: Account
    secret: str
    recovery_codes: list[str]
    code_time: Callable[[], float]


async def enroll(
    gql: GraphQL, account: Account, *, unix_time: Callable[[], float] = time.time
) -> Enrolled:
    """Turn TOTP on for account; the code is computed for unix_time() (the server's clock)."""
    started = await gql.ok(
        START_TOTP, {"input": {"password": account.password}}, token=account.access_token
    )
    payload = started["startTotpEnrollment"]
    assert payload["userErrors"] == [], payload
    secret = payload["secret"]
    confirmed = await gql.ok(
        CONFIRM_TOTP,
        {"input": {"code": code(secret, unix_time())}},
        token=account.access_token,
    )
    result = confirmed["confirmTotpEnrollment"]
    assert result["userErrors"] == [], result
    return Enrolled(account, secret, result["recoveryCodes"], unix_time)


async def challenge(gql: GraphQL, login: str, password: str) -> dict[str, Any]:
    """login's payload for an account with TOTP on: its secondFactorChallenge, no tokens."""
    data = await gql.ok(LOGIN, {"input": {"login": login, "password": password}})
    payload: dict[str, Any] = data["login"]
    return payload


async def verify(gql: GraphQL, token: str, code_value: str) -> dict[str, Any]:
    data = await gql.ok(VERIFY, {"input": {"challengeToken": token, "code": code_value}})
    payload: dict[str, Any] = data["verifySecondFactor"]
    return payload


def install_clock(app: Starlette, clock: Clock | None = None) -> Clock:
    """Make clock (a new one by default) the TOTP clock of app, as the `clock` fixture does."""
    clock = clock or Clock()
    runtime = app.state.runtime
    factors = dataclasses.replace(runtime.factors, clock=clock)
    app.state.runtime = dataclasses.replace(runtime, factors=factors)
    return clock


def wrong_code(secret: str, unix_time: float) -> str:
    """Six digits that are the code of no step near unix_time (so no drift accepts them)."""
    near = {code(secret, unix_time + offset * STEP) for offset in range(-3, 4)}
    return next(f"{n:06d}" for n in range(10) if f"{n:06d}" not in near)


def next_code(enrolled: Enrolled, clock: Clock) -> str:
    """A fresh TOTP code: the next step's (enrollment used the current one)."""
    clock.advance(STEP)
    return code(enrolled.secret, clock())


async def factors_of(gql: GraphQL, account: Account) -> Any:
    """The account's User.secondFactors, as it sees them."""
    return (await gql.ok(SECOND_FACTORS, token=account.access_token))["me"]["secondFactors"]
