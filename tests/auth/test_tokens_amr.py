"""Access tokens say how and when the user signed in: `amr` (RFC 8176: "pwd", "otp") and
`auth_time`, in TokenCodec and as register, login, verifySecondFactor and refresh hand them out.

The API's tokens are decoded with PyJWT and the test signing key, not with usergraph's codec.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import update

from tests.client import GraphQL
from tests.environment import TEST_SIGNING_KEY
from tests.helpers import refresh
from tests.totp import STEP, Clock, Enrolled, challenge, code, enroll, verify
from usergraph.auth.tokens import InvalidAccessToken, SigningKey, TokenCodec
from usergraph.db.engine import Database
from usergraph.db.models import UserSession

KEY = SigningKey.from_secret("amr-signing-key-" + "0123456789abcdef" * 4)
SESSION_ID = uuid.UUID("0b8f6a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b")


def make_codec() -> TokenCodec:
    return TokenCodec(
        current_key=KEY,
        issuer="usergraph",
        audience="usergraph",
        access_ttl=timedelta(minutes=15),
    )


def raw_claims(token: str, key: bytes = KEY.secret) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["HS256"], audience="usergraph", issuer="usergraph"
    )
    return claims


def api_claims(token: str) -> dict[str, Any]:
    """The claims of an access token the API handed out, checked with the test signing key."""
    return raw_claims(token, TEST_SIGNING_KEY.encode())


def signed(claims: dict[str, Any]) -> str:
    """A token signed like the codec's, with these claims."""
    return jwt.encode(claims, KEY.secret, algorithm="HS256", headers={"kid": KEY.kid})


def base_claims(now: datetime) -> dict[str, Any]:
    return {
        "iss": "usergraph",
        "aud": "usergraph",
        "sub": "7",
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": uuid.uuid4().hex,
        "sid": str(SESSION_ID),
        "roles": ["user"],
        "typ": "access",
    }


# --- TokenCodec ---------------------------------------------------------------------------


def test_by_default_a_token_says_password_now() -> None:
    codec = make_codec()
    now = datetime.now(UTC)
    issued = codec.issue_access_token(user_id=7, session_id=SESSION_ID, roles=["user"], now=now)
    claims = raw_claims(issued.token)
    assert claims["amr"] == ["pwd"]
    assert claims["auth_time"] == int(now.timestamp()) == claims["iat"]
    decoded = codec.decode_access_token(issued.token)
    assert decoded.auth_methods == ("pwd",)
    assert decoded.auth_time == datetime.fromtimestamp(int(now.timestamp()), UTC)


def test_the_methods_and_time_given_are_carried() -> None:
    codec = make_codec()
    now = datetime.now(UTC)
    signed_in_at = now - timedelta(hours=3, microseconds=250_000)
    issued = codec.issue_access_token(
        user_id=7,
        session_id=SESSION_ID,
        roles=["user"],
        now=now,
        auth_methods=("pwd", "otp"),
        auth_time=signed_in_at,
    )
    claims = raw_claims(issued.token)
    assert claims["amr"] == ["pwd", "otp"]  # in the order given
    assert isinstance(claims["auth_time"], int)
    assert claims["auth_time"] == int(signed_in_at.timestamp())
    assert claims["iat"] == int(now.timestamp()) > claims["auth_time"]
    decoded = codec.decode_access_token(issued.token)
    assert decoded.auth_methods == ("pwd", "otp")
    assert decoded.auth_time == datetime.fromtimestamp(int(signed_in_at.timestamp()), UTC)
    assert decoded.auth_time is not None and decoded.auth_time.tzinfo is not None
    assert (decoded.user_id, decoded.session_id, decoded.roles) == (7, SESSION_ID, ("user",))


def test_a_token_without_the_claims_decodes_with_none() -> None:
    # Tokens issued before the claims existed stay valid until they expire.
    decoded = make_codec().decode_access_token(signed(base_claims(datetime.now(UTC))))
    assert decoded.auth_methods == ()
    assert decoded.auth_time is None


@pytest.mark.parametrize(
    ("amr", "auth_time", "methods", "when"),
    [
        pytest.param("pwd otp", 1_700_000_000, (), datetime.fromtimestamp(1_700_000_000, UTC)),
        pytest.param({"pwd": 1}, "1700000000", (), None),
        pytest.param(["pwd", "otp"], None, ("pwd", "otp"), None),
        pytest.param(None, None, (), None),
    ],
)
def test_claims_of_the_wrong_shape_are_ignored(
    amr: Any, auth_time: Any, methods: tuple[str, ...], when: datetime | None
) -> None:
    claims = {**base_claims(datetime.now(UTC)), "amr": amr, "auth_time": auth_time}
    decoded = make_codec().decode_access_token(signed(claims))
    assert decoded.auth_methods == methods
    assert decoded.auth_time == when


def test_the_claims_are_signed() -> None:
    codec = make_codec()
    issued = codec.issue_access_token(
        user_id=7, session_id=SESSION_ID, roles=["user"], now=datetime.now(UTC)
    )
    header, _, signature = issued.token.split(".")
    claims = {**raw_claims(issued.token), "amr": ["pwd", "otp"]}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidAccessToken):
        codec.decode_access_token(f"{header}.{payload}.{signature}")


# --- the API's tokens -------------------------------------------------------------------


def db_of(gql: GraphQL) -> Database:
    db: Database = gql.app.state.runtime.db
    return db


async def totp_account(gql: GraphQL, clock: Clock, username: str) -> Enrolled:
    enrolled = await enroll(gql, await gql.register(username), unix_time=clock)
    clock.advance(STEP)  # the enrollment's code is used up
    return enrolled


async def sign_in_with_totp(gql: GraphQL, clock: Clock, enrolled: Enrolled) -> dict[str, Any]:
    login = await challenge(gql, enrolled.account.username, enrolled.account.password)
    payload = await verify(
        gql, login["secondFactorChallenge"]["token"], code(enrolled.secret, clock())
    )
    assert payload["userErrors"] == [], payload
    return payload


async def stored_session(db: Database, access_token: str) -> UserSession:
    sid = uuid.UUID(api_claims(access_token)["sid"])
    async with db.read_sessionmaker() as s:
        user_session = await s.get(UserSession, sid)
    assert user_session is not None
    return user_session


async def backdate(db: Database, access_token: str, when: datetime) -> None:
    """Move the sign-in time of the token's session back to when."""
    sid = uuid.UUID(api_claims(access_token)["sid"])
    async with db.sessionmaker() as s, s.begin():
        await s.execute(
            update(UserSession).where(UserSession.id == sid).values(authenticated_at=when)
        )


async def test_register_and_password_login_say_pwd(gql: GraphQL) -> None:
    before = int(time.time())
    ann = await gql.register("ann")
    login = await gql.login("ann")
    after = int(time.time())
    for token in (ann.access_token, login["accessToken"]):
        claims = api_claims(token)
        assert claims["amr"] == ["pwd"]
        assert claims["auth_time"] == claims["iat"]
        assert before <= claims["auth_time"] <= after
        user_session = await stored_session(db_of(gql), token)
        assert user_session.auth_methods == "pwd"
        assert int(user_session.authenticated_at.timestamp()) == claims["auth_time"]


async def test_a_second_factor_sign_in_says_pwd_and_otp(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    login = await challenge(gql, "ann", ann.account.password)
    # The second step comes in a later second than the first: auth_time is the second's.
    await asyncio.sleep(1.05 - time.time() % 1)
    before = int(time.time())
    payload = await verify(gql, login["secondFactorChallenge"]["token"], code(ann.secret, clock()))
    after = int(time.time())
    assert payload["userErrors"] == [], payload

    claims = api_claims(payload["accessToken"])
    assert claims["amr"] == ["pwd", "otp"]
    assert before <= claims["auth_time"] <= after
    assert claims["auth_time"] == claims["iat"]
    user_session = await stored_session(db_of(gql), payload["accessToken"])
    assert user_session.auth_methods == "pwd otp"
    assert int(user_session.authenticated_at.timestamp()) == claims["auth_time"]
    # The app's own codec reads the same.
    decoded = gql.app.state.runtime.policy.tokens.decode_access_token(payload["accessToken"])
    assert decoded.auth_methods == ("pwd", "otp")


async def test_a_recovery_code_sign_in_says_pwd_and_otp(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    login = await challenge(gql, "ann", ann.account.password)
    payload = await verify(gql, login["secondFactorChallenge"]["token"], ann.recovery_codes[0])
    assert payload["userErrors"] == [], payload
    assert api_claims(payload["accessToken"])["amr"] == ["pwd", "otp"]


async def test_a_refresh_keeps_the_sessions_methods_and_time(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    db = db_of(gql)
    signed_in = await sign_in_with_totp(gql, clock, ann)
    long_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    earlier = long_ago - timedelta(hours=1)
    await backdate(db, signed_in["accessToken"], long_ago)
    await backdate(db, ann.account.access_token, earlier)

    for access, refresh_token, amr, when in (
        (signed_in["accessToken"], signed_in["refreshToken"], ["pwd", "otp"], long_ago),
        (ann.account.access_token, ann.account.refresh_token, ["pwd"], earlier),
    ):
        before = int(time.time())
        refreshed = await refresh(gql, refresh_token)
        assert refreshed["userErrors"] == [], refreshed
        claims = api_claims(refreshed["accessToken"])
        assert claims["sid"] == api_claims(access)["sid"]
        assert claims["amr"] == amr
        assert claims["auth_time"] == int(when.timestamp())
        assert claims["iat"] >= before > claims["auth_time"]
        # And again: the rotated refresh token keeps them too.
        again = await refresh(gql, refreshed["refreshToken"])
        assert api_claims(again["accessToken"])["amr"] == amr
        assert api_claims(again["accessToken"])["auth_time"] == int(when.timestamp())
