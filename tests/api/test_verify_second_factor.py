"""Mutation.verifySecondFactor over HTTP: login's second step trades the challenge and a TOTP
or recovery code for a session.

TOTP codes are computed by tests/totp.py (RFC 6238 from hmac) on the secret the API returned,
for the time of the server's TOTP clock (the `clock` fixture, or install_clock for an app built
with serving()).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import select, text, update

from tests.client import DEFAULT_PASSWORD, GraphQL, serving
from tests.environment import TEST_SIGNING_KEY
from tests.helpers import assert_no_tokens, error_codes, me, problems, refresh, session_count
from tests.mail_rows import kinds, messages_to
from tests.totp import (
    RESET_FACTORS,
    STEP,
    VERIFY,
    Clock,
    Enrolled,
    challenge,
    code,
    enroll,
    install_clock,
    verify,
    wrong_code,
)
from usergraph.db.engine import Database
from usergraph.db.models import SecondFactorChallenge, utcnow

CODE_FIELD = ["input", "code"]
CHALLENGE_FIELD = ["input", "challengeToken"]
INVALID_CODE = [("INVALID_CODE", CODE_FIELD)]
INVALID_CHALLENGE = [("INVALID_CHALLENGE", CHALLENGE_FIELD)]


# --- helpers -----------------------------------------------------------------------------


def db_of(gql: GraphQL) -> Database:
    db: Database = gql.app.state.runtime.db
    return db


def fresh_name() -> str:
    """Apps built with serving() share the test's database, unemptied: a new username."""
    return f"u{uuid.uuid4().hex[:12]}"


async def totp_account(gql: GraphQL, clock: Clock, username: str | None = None) -> Enrolled:
    """A new account with TOTP on; the clock is then moved a step on, so the current code is
    not the (used up) one that confirmed the enrollment."""
    enrolled = await enroll(gql, await gql.register(username), unix_time=clock)
    clock.advance(STEP)
    return enrolled


def step_of(unix_time: float) -> int:
    return int(unix_time // STEP)


def code_of_step(secret: str, step: int) -> str:
    return code(secret, step * STEP)


async def challenge_token(gql: GraphQL, login: str, password: str = DEFAULT_PASSWORD) -> str:
    payload = await challenge(gql, login, password)
    assert payload["userErrors"] == [], payload
    assert payload["accessToken"] is None and payload["user"] is None
    token: str = payload["secondFactorChallenge"]["token"]
    return token


def signed_in_ok(payload: dict[str, Any]) -> None:
    assert payload["userErrors"] == [], payload
    assert payload["accessToken"] and payload["refreshToken"], payload
    assert payload["secondFactorChallenge"] is None


def refused(payload: dict[str, Any], expected: list[tuple[str, list[str]]]) -> None:
    assert problems(payload) == expected, payload
    assert_no_tokens(payload)


def claims_of(access_token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        access_token,
        TEST_SIGNING_KEY,
        algorithms=["HS256"],
        audience="usergraph",
        issuer="usergraph",
    )
    return claims


async def execute(db: Database, sql: str, **params: Any) -> None:
    async with db.sessionmaker() as s, s.begin():
        await s.execute(text(sql), params)


async def challenges_of(db: Database, username: str) -> list[SecondFactorChallenge]:
    async with db.read_sessionmaker() as s:
        user_id = (
            await s.execute(text("SELECT id FROM users WHERE username = :u"), {"u": username})
        ).scalar_one()
        rows = await s.scalars(
            select(SecondFactorChallenge)
            .where(SecondFactorChallenge.user_id == user_id)
            .order_by(SecondFactorChallenge.id)
        )
        return list(rows.all())


async def use_up_recovery_codes(db: Database, username: str, *, keep: list[str]) -> None:
    """Mark every recovery code of the user used except those kept (by their hash)."""
    kept = [hashlib.sha256(c.replace("-", "").encode()).hexdigest() for c in keep]
    async with db.sessionmaker() as s, s.begin():
        user_id = (
            await s.execute(text("SELECT id FROM users WHERE username = :u"), {"u": username})
        ).scalar_one()
        rows = (
            await s.execute(
                text("SELECT id, code_hash FROM recovery_codes WHERE user_id = :id"),
                {"id": user_id},
            )
        ).all()
        assert {row.code_hash for row in rows} >= set(kept)
        for row in rows:
            if row.code_hash not in kept:
                await s.execute(
                    text("UPDATE recovery_codes SET used_at = created_at WHERE id = :id"),
                    {"id": row.id},
                )


# --- signing in ---------------------------------------------------------------------------


async def test_a_right_code_signs_in(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    token = await challenge_token(gql, "ann")

    payload = await verify(gql, token, code(ann.secret, clock()))

    signed_in_ok(payload)
    assert payload["tokenType"] == "Bearer"
    assert payload["accessTokenExpiresAt"] and payload["refreshTokenExpiresAt"]
    # The payload's user is the viewer: its second factors are shown.
    assert payload["user"] == {
        "id": ann.account.id,
        "username": "ann",
        "secondFactors": {"totpEnabled": True, "recoveryCodesRemaining": 10},
    }
    assert await me(gql, payload["accessToken"]) == {"id": ann.account.id, "username": "ann"}
    # A new session beside registration's; its refresh token works.
    assert await session_count(gql, payload["accessToken"]) == 2
    refreshed = await refresh(gql, payload["refreshToken"])
    assert refreshed["userErrors"] == []
    assert refreshed["user"] == {"id": ann.account.id, "username": "ann"}
    assert claims_of(payload["accessToken"])["amr"] == ["pwd", "otp"]


@pytest.mark.parametrize(
    "typed", [lambda c: f"{c[:3]} {c[3:]}", lambda c: f"{c[:3]}-{c[3:]}", lambda c: f" {c} "]
)
async def test_a_code_may_hold_spaces_and_dashes(gql: GraphQL, clock: Clock, typed: Any) -> None:
    ann = await totp_account(gql, clock, "ann")
    token = await challenge_token(gql, "ann")
    signed_in_ok(await verify(gql, token, typed(code(ann.secret, clock()))))


async def test_a_challenge_works_once(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    token = await challenge_token(gql, "ann")
    signed_in_ok(await verify(gql, token, code(ann.secret, clock())))

    clock.advance(STEP)  # a code that has not been used
    refused(await verify(gql, token, code(ann.secret, clock())), INVALID_CHALLENGE)
    refused(await verify(gql, token, ann.recovery_codes[0]), INVALID_CHALLENGE)
    # That code was not spent by the refused tries: a new challenge takes it.
    signed_in_ok(await verify(gql, await challenge_token(gql, "ann"), code(ann.secret, clock())))


async def test_a_challenge_is_bound_to_its_user(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    bob = await totp_account(gql, clock, "bob")
    clock.advance(STEP)  # ann's enrollment step is behind too
    anns = await challenge_token(gql, "ann")

    refused(await verify(gql, anns, code(bob.secret, clock())), INVALID_CODE)
    refused(await verify(gql, anns, bob.recovery_codes[0]), INVALID_CODE)

    # Nothing of bob's was used up, and ann's challenge is still hers.
    bobs = await challenge_token(gql, "bob")
    signed_in_bob = await verify(gql, bobs, code(bob.secret, clock()))
    signed_in_ok(signed_in_bob)
    assert signed_in_bob["user"]["username"] == "bob"
    assert signed_in_bob["user"]["secondFactors"]["recoveryCodesRemaining"] == 10
    signed_in_ann = await verify(gql, anns, code(ann.secret, clock()))
    signed_in_ok(signed_in_ann)
    assert signed_in_ann["user"]["id"] == ann.account.id


async def test_five_wrong_codes_spend_the_challenge(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    token = await challenge_token(gql, "ann")
    wrong = wrong_code(ann.secret, clock())
    for _ in range(5):
        payload = await verify(gql, token, wrong)
        refused(payload, INVALID_CODE)
        assert wrong not in payload["userErrors"][0]["message"]

    refused(await verify(gql, token, code(ann.secret, clock())), INVALID_CHALLENGE)
    [row] = await challenges_of(db_of(gql), "ann")
    assert row.attempts == 5 and row.used_at is None

    # The right code was not used up by the dead challenge: a new one takes it.
    signed_in_ok(await verify(gql, await challenge_token(gql, "ann"), code(ann.secret, clock())))


async def test_four_wrong_codes_then_the_right_one(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    token = await challenge_token(gql, "ann")
    for _ in range(4):
        refused(await verify(gql, token, wrong_code(ann.secret, clock())), INVALID_CODE)
    payload = await verify(gql, token, code(ann.secret, clock()))
    signed_in_ok(payload)
    assert payload["user"]["id"] == ann.account.id


async def test_wrong_recovery_codes_count_on_the_challenge_too(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    token = await challenge_token(gql, "ann")
    for guess in ("aaaa-bbbb-cccc-dddd", "not a code", "", "1234567", "x" * 200):
        refused(await verify(gql, token, guess), INVALID_CODE)
    refused(await verify(gql, token, ann.recovery_codes[0]), INVALID_CHALLENGE)


async def test_concurrent_wrong_codes_cannot_pass_the_limit(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    token = await challenge_token(gql, "ann")
    wrong = wrong_code(ann.secret, clock())

    payloads = await asyncio.gather(*(verify(gql, token, wrong) for _ in range(8)))

    answers = [problems(payload) for payload in payloads]
    assert all(answer in (INVALID_CODE, INVALID_CHALLENGE) for answer in answers), answers
    counted = answers.count(INVALID_CODE)
    assert counted <= 5, answers
    assert answers.count(INVALID_CHALLENGE) == 8 - counted
    [row] = await challenges_of(db_of(gql), "ann")
    assert row.attempts <= 5
    assert row.attempts == counted
    for payload in payloads:
        assert_no_tokens(payload)


async def test_an_expired_challenge(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    token = await challenge_token(gql, "ann")
    async with db_of(gql).sessionmaker() as s, s.begin():
        await s.execute(
            update(SecondFactorChallenge).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    refused(await verify(gql, token, code(ann.secret, clock())), INVALID_CHALLENGE)
    refused(await verify(gql, token, ann.recovery_codes[0]), INVALID_CHALLENGE)
    # Neither code was used up.
    payload = await verify(gql, await challenge_token(gql, "ann"), code(ann.secret, clock()))
    signed_in_ok(payload)
    assert payload["user"]["secondFactors"]["recoveryCodesRemaining"] == 10


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("ugc_" + "A" * 43, id="unknown"),
        pytest.param("", id="empty"),
        pytest.param("ugc_" + "A" * 500, id="overlong"),
        pytest.param("not a token at all", id="garbage"),
    ],
)
async def test_a_token_that_is_no_challenge(gql: GraphQL, clock: Clock, token: str) -> None:
    ann = await totp_account(gql, clock, "ann")
    await challenge_token(gql, "ann")  # a live challenge exists; it is not this one
    payload = await verify(gql, token, code(ann.secret, clock()))
    refused(payload, INVALID_CHALLENGE)
    assert payload["userErrors"][0]["message"]


async def test_other_tokens_are_no_challenge(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    real = await challenge_token(gql, "ann")
    for token in (
        ann.account.refresh_token,
        ann.account.access_token,
        real[:-1] + ("A" if real[-1] != "A" else "B"),
        real.upper() if real.upper() != real else real.lower(),
    ):
        refused(await verify(gql, token, code(ann.secret, clock())), INVALID_CHALLENGE)
    signed_in_ok(await verify(gql, real, code(ann.secret, clock())))


async def test_a_disabled_account_cannot_finish(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    token = await challenge_token(gql, "ann")
    await execute(db_of(gql), "UPDATE users SET is_active = false WHERE username = 'ann'")
    payload = await verify(gql, token, code(ann.secret, clock()))
    refused(payload, [("ACCOUNT_DISABLED", [])])
    await execute(db_of(gql), "UPDATE users SET is_active = true WHERE username = 'ann'")
    # No session was opened (registration's is the only one).
    assert await session_count(gql, ann.account.access_token) == 1


async def test_totp_turned_off_meanwhile_ends_the_challenge(gql: GraphQL, clock: Clock) -> None:
    admin = await gql.admin()
    ann = await totp_account(gql, clock, "ann")
    token = await challenge_token(gql, "ann")
    reset = await gql.ok(
        RESET_FACTORS, {"input": {"userId": ann.account.id}}, token=admin.access_token
    )
    assert reset["resetSecondFactors"]["userErrors"] == []
    refused(await verify(gql, token, code(ann.secret, clock())), INVALID_CHALLENGE)


async def test_an_address_unverified_meanwhile_under_required_verification(
    gql: GraphQL, clock: Clock, database_url: str, tmp_path: Path
) -> None:
    ann = await totp_account(gql, clock, "ann")
    await execute(db_of(gql), "UPDATE users SET email_verified_at = created_at")
    async with serving(database_url, tmp_path, email_verification="required") as required:
        install_clock(required.app, clock)
        token = await challenge_token(required, "ann")
        await execute(db_of(gql), "UPDATE users SET email_verified_at = NULL")
        refused(await verify(required, token, code(ann.secret, clock())), INVALID_CHALLENGE)


# --- time steps: drift and replay ------------------------------------------------------------


@pytest.mark.parametrize("offset", [-2, -1, 0, 1, 2])
@pytest.mark.parametrize("second", [0, 29], ids=["first-second", "last-second"])
async def test_drift_at_the_edges_of_a_step(
    gql: GraphQL, clock: Clock, second: int, offset: int
) -> None:
    ann = await enroll(gql, await gql.register("ann"), unix_time=clock)
    # Well after the enrollment's step, at the first or last second of step `now`.
    now = step_of(clock()) + 10
    clock.now = now * STEP + second
    token = await challenge_token(gql, "ann")

    payload = await verify(gql, token, code_of_step(ann.secret, now + offset))

    if abs(offset) <= 1:
        signed_in_ok(payload)
    else:
        refused(payload, INVALID_CODE)


async def test_a_code_works_once_even_on_a_new_challenge(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    used = code(ann.secret, clock())
    signed_in_ok(await verify(gql, await challenge_token(gql, "ann"), used))
    refused(await verify(gql, await challenge_token(gql, "ann"), used), INVALID_CODE)
    # The next step's code is fresh.
    clock.advance(STEP)
    signed_in_ok(await verify(gql, await challenge_token(gql, "ann"), code(ann.secret, clock())))


async def test_the_enrollment_code_cannot_sign_in(gql: GraphQL, clock: Clock) -> None:
    ann = await enroll(gql, await gql.register("ann"), unix_time=clock)
    token = await challenge_token(gql, "ann")
    refused(await verify(gql, token, code(ann.secret, clock())), INVALID_CODE)
    clock.advance(STEP)
    signed_in_ok(await verify(gql, token, code(ann.secret, clock())))


async def test_an_older_step_is_refused_after_a_newer_one(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    now = step_of(clock())
    # The next step's code (drift forward) is used first ...
    signed_in_ok(
        await verify(gql, await challenge_token(gql, "ann"), code_of_step(ann.secret, now + 1))
    )
    # ... then this step's and the previous one's, still within the window, are refused.
    token = await challenge_token(gql, "ann")
    refused(await verify(gql, token, code_of_step(ann.secret, now)), INVALID_CODE)
    refused(await verify(gql, token, code_of_step(ann.secret, now - 1)), INVALID_CODE)
    refused(await verify(gql, token, code_of_step(ann.secret, now + 1)), INVALID_CODE)
    # A newer step than the one used works.
    clock.advance(STEP)
    signed_in_ok(await verify(gql, token, code_of_step(ann.secret, now + 2)))


async def test_replay_across_accounts_is_per_user(gql: GraphQL, clock: Clock) -> None:
    # A step used by one user is still free for another.
    ann = await totp_account(gql, clock, "ann")
    bob = await totp_account(gql, clock, "bob")
    clock.advance(STEP)
    signed_in_ok(await verify(gql, await challenge_token(gql, "ann"), code(ann.secret, clock())))
    signed_in_ok(await verify(gql, await challenge_token(gql, "bob"), code(bob.secret, clock())))


# --- recovery codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param(lambda c: c, id="as-given"),
        pytest.param(lambda c: c.upper(), id="upper-case"),
        pytest.param(lambda c: c.replace("-", ""), id="no-dashes"),
        pytest.param(lambda c: c.upper().replace("-", ""), id="upper-no-dashes"),
        pytest.param(lambda c: c.replace("-", " "), id="spaces"),
    ],
)
async def test_a_recovery_code_signs_in_once(gql: GraphQL, clock: Clock, typed: Any) -> None:
    ann = await totp_account(gql, clock, "ann")
    recovery = ann.recovery_codes[3]
    payload = await verify(gql, await challenge_token(gql, "ann"), typed(recovery))
    signed_in_ok(payload)
    assert payload["user"]["secondFactors"] == {"totpEnabled": True, "recoveryCodesRemaining": 9}
    assert claims_of(payload["accessToken"])["amr"] == ["pwd", "otp"]

    # Used up, in any of its forms.
    token = await challenge_token(gql, "ann")
    refused(await verify(gql, token, recovery), INVALID_CODE)
    refused(await verify(gql, token, recovery.upper().replace("-", "")), INVALID_CODE)
    # Another one still works.
    signed_in_ok(await verify(gql, token, ann.recovery_codes[4]))


async def test_the_last_recovery_codes(gql: GraphQL, clock: Clock) -> None:
    ann = await totp_account(gql, clock, "ann")
    db = db_of(gql)
    last_two = ann.recovery_codes[-2:]
    await use_up_recovery_codes(db, "ann", keep=last_two)
    first = await challenge(gql, "ann", DEFAULT_PASSWORD)
    assert first["secondFactorChallenge"]["methods"] == ["TOTP", "RECOVERY_CODE"]

    signed_in_ok(await verify(gql, first["secondFactorChallenge"]["token"], last_two[0]))
    signed_in_ok(await verify(gql, await challenge_token(gql, "ann"), last_two[1]))

    none_left = await challenge(gql, "ann", DEFAULT_PASSWORD)
    assert none_left["secondFactorChallenge"]["methods"] == ["TOTP"]
    notices = await messages_to(db, "ann@example.com", "recovery_code_used")
    assert len(notices) == 2
    assert "1 code is left" in notices[0].text_body
    assert "0 codes are left" in notices[1].text_body
    # TOTP still signs in.
    payload = await verify(
        gql, none_left["secondFactorChallenge"]["token"], code(ann.secret, clock())
    )
    signed_in_ok(payload)
    assert payload["user"]["secondFactors"]["recoveryCodesRemaining"] == 0


async def test_a_recovery_code_sign_in_sends_a_notice_and_logs_it(
    gql: GraphQL, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ann = await totp_account(gql, clock, "ann")
    db = db_of(gql)
    # A TOTP sign-in sends nothing.
    signed_in_ok(await verify(gql, await challenge_token(gql, "ann"), code(ann.secret, clock())))
    assert await messages_to(db, "ann@example.com", "recovery_code_used") == []

    caplog.set_level(logging.INFO, logger="usergraph.security")
    signed_in_ok(await verify(gql, await challenge_token(gql, "ann"), ann.recovery_codes[0]))

    [notice] = await messages_to(db, "ann@example.com", "recovery_code_used")
    assert kinds([notice]) == [("recovery_code_used", "ann@example.com", "pending")]
    assert "Hello ann," in notice.text_body
    assert "9 codes are left" in notice.text_body
    assert "9 codes are left" in notice.html_body
    for recovery in ann.recovery_codes:
        assert recovery not in notice.text_body and recovery not in notice.html_body
    events = [r for r in caplog.records if r.name == "usergraph.security"]
    used = [r for r in events if r.getMessage().startswith("event=recovery_code_used ")]
    assert len(used) == 1, [r.getMessage() for r in events]
    assert used[0].levelno == logging.WARNING
    assert "codes_left=9" in used[0].getMessage()
    assert any(
        r.getMessage().startswith("event=login_succeeded ")
        and "method=RECOVERY_CODE" in r.getMessage()
        for r in events
    )


# --- lockout and limits -----------------------------------------------------------------------


async def test_wrong_codes_lock_the_account(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, login_account_limit="4/minute") as limited:
        clock = install_clock(limited.app)
        name = fresh_name()
        email = f"{name}@example.com"
        ann = await totp_account(limited, clock, name)
        wrong = wrong_code(ann.secret, clock())

        # Every try counts against the account, whichever name signed in: the login that
        # earns a challenge too (a right password with a code still to come clears nothing).
        first = await challenge_token(limited, email)  # 1
        for _ in range(2):  # 2, 3
            refused(await verify(limited, first, wrong), INVALID_CODE)
        second = await challenge_token(limited, name)  # 4: by the username, the same account
        # The account is locked now, even for the right code ...
        locked = await verify(limited, second, code(ann.secret, clock()))
        refused(locked, [("ACCOUNT_LOCKED", CODE_FIELD)])
        assert locked["userErrors"][0]["retryAfter"] > 0
        # ... and a recovery code.
        locked = await verify(limited, second, ann.recovery_codes[0])
        refused(locked, [("ACCOUNT_LOCKED", CODE_FIELD)])
        # And the password login is locked as well, by either name.
        for login in (name, email):
            by_name = await challenge(limited, login, DEFAULT_PASSWORD)
            assert problems(by_name) == [("ACCOUNT_LOCKED", [])]
            assert by_name["secondFactorChallenge"] is None


async def test_a_right_code_clears_the_code_guesses(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, login_account_limit="4/minute") as limited:
        clock = install_clock(limited.app)
        name = fresh_name()
        ann = await totp_account(limited, clock, name)
        for _ in range(3):  # a login, 2 wrong and 1 right, three times: 12 tries, never locked
            token = await challenge_token(limited, f"{name}@example.com")
            for _ in range(2):
                refused(await verify(limited, token, wrong_code(ann.secret, clock())), INVALID_CODE)
            signed_in_ok(await verify(limited, token, code(ann.secret, clock())))
            clock.advance(STEP)


async def test_wrong_codes_count_against_the_ip(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, login_ip_limit="3/minute") as limited:
        clock = install_clock(limited.app)
        name = fresh_name()
        ann = await totp_account(limited, clock, name)
        token = await challenge_token(limited, name)
        for _ in range(3):
            refused(await verify(limited, token, wrong_code(ann.secret, clock())), INVALID_CODE)
        body = await limited(
            VERIFY, {"input": {"challengeToken": token, "code": code(ann.secret, clock())}}
        )
        assert error_codes(body) == ["RATE_LIMITED"], body
        # Logins from that address are refused too.
        body = await limited(
            "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
            {"input": {"login": name, "password": DEFAULT_PASSWORD}},
        )
        assert error_codes(body) == ["RATE_LIMITED"], body


async def test_unknown_challenges_count_against_the_ip(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, login_ip_limit="3/minute") as limited:
        clock = install_clock(limited.app)
        name = fresh_name()
        ann = await totp_account(limited, clock, name)
        token = await challenge_token(limited, name)
        for _ in range(3):
            refused(await verify(limited, "ugc_" + "A" * 43, "123456"), INVALID_CHALLENGE)
        body = await limited(
            VERIFY, {"input": {"challengeToken": token, "code": code(ann.secret, clock())}}
        )
        assert error_codes(body) == ["RATE_LIMITED"], body


async def test_right_codes_do_not_count_against_the_ip(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, login_ip_limit="2/minute") as limited:
        clock = install_clock(limited.app)
        name = fresh_name()
        ann = await totp_account(limited, clock, name)
        for _ in range(4):
            signed_in_ok(
                await verify(
                    limited, await challenge_token(limited, name), code(ann.secret, clock())
                )
            )
            clock.advance(STEP)


# --- cookie mode and logs ---------------------------------------------------------------------


async def test_cookie_mode_sets_the_refresh_cookie_on_verify(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, refresh_cookie=True) as cookies:
        clock = install_clock(cookies.app)
        settings = cookies.app.state.runtime.settings
        name = fresh_name()
        ann = await totp_account(cookies, clock, name)
        jar = cookies.client.cookies
        jar.clear()

        login = await cookies.post(
            """mutation($input: LoginInput!) { login(input: $input) {
                 secondFactorChallenge { token } userErrors { code } } }""",
            {"input": {"login": name, "password": DEFAULT_PASSWORD}},
        )
        assert login.headers.get_list("set-cookie") == []
        token = login.json()["data"]["login"]["secondFactorChallenge"]["token"]

        wrong = await cookies.post(
            VERIFY, {"input": {"challengeToken": token, "code": wrong_code(ann.secret, clock())}}
        )
        assert problems(wrong.json()["data"]["verifySecondFactor"]) == INVALID_CODE
        assert wrong.headers.get_list("set-cookie") == []

        right = await cookies.post(
            VERIFY, {"input": {"challengeToken": token, "code": code(ann.secret, clock())}}
        )
        payload = right.json()["data"]["verifySecondFactor"]
        signed_in_ok(payload)
        [header] = right.headers.get_list("set-cookie")
        assert header.startswith(f"{settings.refresh_cookie_name}={payload['refreshToken']};")
        assert "httponly" in header.lower()
        assert jar.get(settings.refresh_cookie_name) == payload["refreshToken"]

        # The cookie alone refreshes the session.
        refreshed = await cookies.ok(
            "mutation { refresh(input: {}) { user { username } userErrors { code } } }"
        )
        assert refreshed["refresh"] == {"user": {"username": name}, "userErrors": []}


async def test_no_code_or_challenge_token_in_the_log(
    gql: GraphQL, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ann = await totp_account(gql, clock, "ann")
    token = await challenge_token(gql, "ann")
    wrong = wrong_code(ann.secret, clock())
    right = code(ann.secret, clock())
    refused(await verify(gql, token, wrong), INVALID_CODE)
    signed_in_ok(await verify(gql, token, right))
    second = await challenge_token(gql, "ann")
    recovery = ann.recovery_codes[0]
    signed_in_ok(await verify(gql, second, recovery.upper()))
    refused(await verify(gql, await challenge_token(gql, "ann"), recovery), INVALID_CODE)

    lines = [record.getMessage() for record in caplog.records]
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud, "a used recovery code logs a warning"
    for line in loud:
        for secret_text in (wrong, right):
            assert secret_text not in line, line
    for line in lines:
        for secret_text in (
            token,
            second,
            ann.secret,
            recovery,
            recovery.upper(),
            recovery.replace("-", ""),
            *ann.recovery_codes,
        ):
            assert secret_text not in line, line
    assert not re.search(r"ugc_[A-Za-z0-9_-]{20,}", "\n".join(lines))
