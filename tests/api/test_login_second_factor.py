"""Mutation.login for an account with TOTP on, over HTTP: a right password answers a
secondFactorChallenge instead of tokens; nothing is signed in until verifySecondFactor."""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from tests.client import DEFAULT_PASSWORD, GraphQL, serving
from tests.helpers import assert_no_tokens, problems
from tests.totp import STEP, Clock, Enrolled, challenge, code, enroll, install_clock, verify
from usergraph.db.engine import Database
from usergraph.db.models import User

LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken refreshToken tokenType accessTokenExpiresAt refreshTokenExpiresAt
  user { id username }
  secondFactorChallenge { token expiresAt methods }
  userErrors { field message code retryAfter }
} }"""
ME = "{ me { id lastLoginAt } }"
# ugc_ and 43 characters of URL-safe base64: 256 random bits.
CHALLENGE_TOKEN = re.compile(r"ugc_[A-Za-z0-9_-]{43}")
WRONG_PASSWORD = "not the right password"


def db_of(gql: GraphQL) -> Database:
    db: Database = gql.app.state.runtime.db
    return db


async def scalar(db: Database, sql: str, **params: Any) -> Any:
    async with db.read_sessionmaker() as s:
        return (await s.execute(text(sql), params)).scalar()


async def execute(db: Database, sql: str, **params: Any) -> None:
    async with db.sessionmaker() as s, s.begin():
        await s.execute(text(sql), params)


async def session_rows(db: Database, username: str) -> int:
    """Every sessions row of the user, open or not."""
    count = await scalar(
        db,
        "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE u.username = :username",
        username=username,
    )
    return int(count)


async def challenge_rows(db: Database, username: str) -> int:
    count = await scalar(
        db,
        "SELECT count(*) FROM second_factor_challenges c JOIN users u ON u.id = c.user_id "
        "WHERE u.username = :username",
        username=username,
    )
    return int(count)


async def last_login_at(db: Database, username: str) -> datetime | None:
    async with db.read_sessionmaker() as s:
        return await s.scalar(select(User.last_login_at).where(User.username == username))


async def login(gql: GraphQL, login_as: str, password: str = DEFAULT_PASSWORD) -> dict[str, Any]:
    data = await gql.ok(LOGIN, {"input": {"login": login_as, "password": password}})
    payload: dict[str, Any] = data["login"]
    return payload


async def totp_account(gql: GraphQL, clock: Clock, username: str) -> Enrolled:
    """A new account with TOTP on; the clock is then moved a step on, so the current code is
    not the (used up) one that confirmed the enrollment."""
    enrolled = await enroll(gql, await gql.register(username), unix_time=clock)
    clock.advance(STEP)
    return enrolled


def assert_challenge_only(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload that is a challenge: no tokens, no user, no errors; its challenge."""
    assert payload["userErrors"] == [], payload
    assert_no_tokens(payload)
    challenge: dict[str, Any] = payload["secondFactorChallenge"]
    assert challenge is not None
    return challenge


def fresh_name() -> str:
    """Apps built with serving() share the test's database, unemptied: a new username."""
    return f"u{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("login_as", ["ann", "ANN", "ann@example.com", "Ann@Example.com"])
async def test_a_right_password_answers_a_challenge(
    gql: GraphQL, clock: Clock, login_as: str
) -> None:
    await totp_account(gql, clock, "ann")
    before = time.time()
    payload = await login(gql, login_as)
    after = time.time()

    challenge = assert_challenge_only(payload)
    assert CHALLENGE_TOKEN.fullmatch(challenge["token"]), challenge
    assert challenge["methods"] == ["TOTP", "RECOVERY_CODE"]
    expires_at = datetime.fromisoformat(challenge["expiresAt"])
    assert expires_at.tzinfo is not None
    # Five minutes from the login (whole seconds).
    assert before + 300 - 1 <= expires_at.timestamp() <= after + 300


async def test_each_login_answers_a_new_challenge(gql: GraphQL, clock: Clock) -> None:
    await totp_account(gql, clock, "ann")
    tokens = {assert_challenge_only(await login(gql, "ann"))["token"] for _ in range(3)}
    assert len(tokens) == 3


async def test_a_challenge_opens_no_session_and_leaves_last_login_at(
    gql: GraphQL, clock: Clock
) -> None:
    ann = await totp_account(gql, clock, "ann")
    db = db_of(gql)
    assert await session_rows(db, "ann") == 1  # registration's
    registered_at = await last_login_at(db, "ann")
    assert registered_at is not None

    challenge = assert_challenge_only(await login(gql, "ann"))
    assert await session_rows(db, "ann") == 1
    assert await last_login_at(db, "ann") == registered_at

    # The second step signs in: now a session is opened and lastLoginAt moves.
    signed_in = await verify(gql, challenge["token"], code(ann.secret, clock()))
    assert signed_in["userErrors"] == [], signed_in
    assert await session_rows(db, "ann") == 2
    signed_in_at = await last_login_at(db, "ann")
    assert signed_in_at is not None and signed_in_at > registered_at
    me = (await gql.ok(ME, token=signed_in["accessToken"]))["me"]
    assert me["id"] == ann.account.id
    assert datetime.fromisoformat(me["lastLoginAt"]) == signed_in_at


async def test_a_wrong_password_is_refused_as_before(gql: GraphQL, clock: Clock) -> None:
    await totp_account(gql, clock, "ann")
    unknown = await login(gql, "nobody", WRONG_PASSWORD)
    for login_as in ("ann", "ann@example.com"):
        payload = await login(gql, login_as, WRONG_PASSWORD)
        assert problems(payload) == [("INVALID_CREDENTIALS", [])]
        assert_no_tokens(payload)
        assert payload["secondFactorChallenge"] is None
        # The same answer as for an account without TOTP or none at all.
        assert payload["userErrors"] == unknown["userErrors"]
    assert await challenge_rows(db_of(gql), "ann") == 0


async def test_an_account_without_totp_still_signs_in_at_once(gql: GraphQL, clock: Clock) -> None:
    await totp_account(gql, clock, "ann")
    bob = await gql.register("bob")
    payload = await login(gql, "bob")
    assert payload["userErrors"] == []
    assert payload["secondFactorChallenge"] is None
    assert payload["accessToken"] and payload["refreshToken"]
    assert payload["user"] == {"id": bob.id, "username": "bob"}


async def test_a_pending_enrollment_is_not_a_second_factor(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    started = await gql.ok(
        """mutation($input: StartTotpEnrollmentInput!) { startTotpEnrollment(input: $input) {
             secret userErrors { code } } }""",
        {"input": {"password": DEFAULT_PASSWORD}},
        token=ann.access_token,
    )
    assert started["startTotpEnrollment"]["userErrors"] == []
    payload = await login(gql, "ann")
    assert payload["userErrors"] == []
    assert payload["secondFactorChallenge"] is None
    assert payload["accessToken"]


async def test_without_recovery_codes_left_the_only_method_is_totp(
    gql: GraphQL, clock: Clock
) -> None:
    await totp_account(gql, clock, "ann")
    await execute(
        db_of(gql),
        "UPDATE recovery_codes SET used_at = created_at "
        "WHERE user_id = (SELECT id FROM users WHERE username = 'ann')",
    )
    challenge = assert_challenge_only(await login(gql, "ann"))
    assert challenge["methods"] == ["TOTP"]


async def test_a_disabled_account_gets_no_challenge(gql: GraphQL, clock: Clock) -> None:
    await totp_account(gql, clock, "ann")
    await execute(db_of(gql), "UPDATE users SET is_active = false WHERE username = 'ann'")
    payload = await login(gql, "ann")
    assert problems(payload) == [("ACCOUNT_DISABLED", [])]
    assert_no_tokens(payload)
    assert payload["secondFactorChallenge"] is None
    assert await challenge_rows(db_of(gql), "ann") == 0


async def test_required_verification_refuses_an_unverified_account_before_the_challenge(
    gql: GraphQL, clock: Clock, database_url: str, tmp_path: Path
) -> None:
    # Enrolled where verification is optional; the address was never verified.
    await totp_account(gql, clock, "ann")
    verified = await totp_account(gql, clock, "bob")
    await execute(
        db_of(gql), "UPDATE users SET email_verified_at = created_at WHERE username = 'bob'"
    )
    async with serving(database_url, tmp_path, email_verification="required") as required:
        install_clock(required.app, clock)
        payload = await login(required, "ann")
        assert problems(payload) == [("EMAIL_NOT_VERIFIED", [])]
        assert_no_tokens(payload)
        assert payload["secondFactorChallenge"] is None
        assert await challenge_rows(db_of(gql), "ann") == 0

        # A verified account goes on to its second step, and signs in with it.
        challenge = assert_challenge_only(await login(required, "bob"))
        signed_in = await verify(required, challenge["token"], code(verified.secret, clock()))
        assert signed_in["userErrors"] == [], signed_in
        assert signed_in["user"]["username"] == "bob"


async def test_a_challenge_does_not_clear_the_failed_logins(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, login_account_limit="3/minute") as limited:
        clock = install_clock(limited.app)
        name = fresh_name()
        await totp_account(limited, clock, name)
        for _ in range(2):
            assert problems(await login(limited, name, WRONG_PASSWORD)) == [
                ("INVALID_CREDENTIALS", [])
            ]
        # The right password counts as the third attempt and clears nothing: the code is
        # still to come.
        assert_challenge_only(await login(limited, name))
        locked = await login(limited, name)
        assert problems(locked) == [("ACCOUNT_LOCKED", [])]
        assert locked["userErrors"][0]["retryAfter"] > 0
        assert locked["secondFactorChallenge"] is None
        assert_no_tokens(locked)


async def test_without_totp_a_right_password_clears_the_failed_logins(
    database_url: str, tmp_path: Path
) -> None:
    # The contrast to the test above: a password sign-in is complete, so it clears them.
    async with serving(database_url, tmp_path, login_account_limit="3/minute") as limited:
        name = fresh_name()
        await limited.register(name)
        for _ in range(2):
            await login(limited, name, WRONG_PASSWORD)
        assert (await login(limited, name))["userErrors"] == []
        for _ in range(2):
            await login(limited, name, WRONG_PASSWORD)
        assert (await login(limited, name))["userErrors"] == []


async def test_a_challenge_sets_no_refresh_cookie(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, refresh_cookie=True) as cookies:
        clock = install_clock(cookies.app)
        name = fresh_name()
        await totp_account(cookies, clock, name)
        cookies.client.cookies.clear()  # registration's cookie
        response = await cookies.post(
            LOGIN, {"input": {"login": name, "password": DEFAULT_PASSWORD}}
        )
        assert response.status_code == 200, response.text
        assert_challenge_only(response.json()["data"]["login"])
        assert response.headers.get_list("set-cookie") == []


async def test_a_password_change_ends_the_challenges_of_the_old_password(
    gql: GraphQL, clock: Clock
) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    token = (await challenge(gql, "ann", ann.password))["secondFactorChallenge"]["token"]
    changed = await gql.ok(
        """mutation($input: ChangePasswordInput!) { changePassword(input: $input) {
          userErrors { code } } }""",
        {"input": {"currentPassword": ann.password, "newPassword": "a brand new passphrase 42"}},
        token=ann.access_token,
    )
    assert changed["changePassword"]["userErrors"] == []
    clock.advance(30)
    late = await verify(gql, token, code(enrolled.secret, clock()))
    assert [e["code"] for e in late["userErrors"]] == ["INVALID_CHALLENGE"]
    assert late["accessToken"] is None
