"""Mutation.disableTotp over HTTP: the password and a current TOTP or recovery code turn TOTP
off; each attempt counts against the account's lockout until a right code clears it."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.client import DEFAULT_PASSWORD, Account, GraphQL
from tests.helpers import assert_only_error, problems
from tests.mail_rows import db_of, kinds, messages_to
from tests.totp import (
    DISABLE_TOTP,
    LOGIN,
    START_TOTP,
    STEP,
    Clock,
    challenge,
    code,
    enroll,
    factors_of,
    next_code,
    verify,
    wrong_code,
)
from tests.totp import (
    STRICT_LIMIT as LIMIT,
)
from usergraph.db.models import RecoveryCode, SecondFactorChallenge, TotpFactor

WRONG = "not the password at all"
OTHER_PASSWORD = "another long passphrase 99"
SECURITY = "usergraph.security"
CHANGE_PASSWORD = """mutation($input: ChangePasswordInput!) { changePassword(input: $input) {
  userErrors { code } } }"""
OFF = {"totpEnabled": False, "recoveryCodesRemaining": 0}


async def disable(
    gql: GraphQL, account: Account, code_value: str, password: str = DEFAULT_PASSWORD
) -> Any:
    data = await gql.ok(
        DISABLE_TOTP,
        {"input": {"password": password, "code": code_value}},
        token=account.access_token,
    )
    return data["disableTotp"]


async def login_codes(gql: GraphQL, login: str, password: str = DEFAULT_PASSWORD) -> list[str]:
    data = await gql.ok(LOGIN, {"input": {"login": login, "password": password}})
    return [error["code"] for error in data["login"]["userErrors"]]


async def row_counts(gql: GraphQL) -> tuple[int, int, int]:
    """How many TOTP factors, recovery codes and challenges the database holds."""
    async with db_of(gql).read_sessionmaker() as s:
        counts = [
            await s.scalar(select(func.count()).select_from(model))
            for model in (TotpFactor, RecoveryCode, SecondFactorChallenge)
        ]
    return counts[0] or 0, counts[1] or 0, counts[2] or 0


def security_events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [
        record.security_event  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == SECURITY and record.security_event["event"] == name  # type: ignore[attr-defined]
    ]


# --- turning TOTP off ---------------------------------------------------------------------


async def test_disable_with_a_totp_code(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    open_challenge = (await challenge(gql, "ann", DEFAULT_PASSWORD))["secondFactorChallenge"]

    payload = await disable(gql, ann, next_code(enrolled, clock))
    assert payload == {"user": {"id": ann.id, "secondFactors": OFF}, "userErrors": []}
    assert await factors_of(gql, ann) == {**OFF, "totpEnabledAt": None}
    assert await row_counts(gql) == (0, 0, 0)

    # The password alone signs in again, with tokens and no challenge.
    data = await gql.ok(LOGIN, {"input": {"login": "ann", "password": DEFAULT_PASSWORD}})
    assert data["login"]["userErrors"] == []
    assert data["login"]["accessToken"] and data["login"]["refreshToken"]
    assert data["login"]["secondFactorChallenge"] is None
    assert data["login"]["user"] == {"id": ann.id, "username": "ann"}
    # The challenge that was open dies with the factor.
    clock.advance(STEP)
    late = await verify(gql, open_challenge["token"], code(enrolled.secret, clock()))
    assert problems(late) == [("INVALID_CHALLENGE", ["input", "challengeToken"])]
    assert late["accessToken"] is None


@pytest.mark.parametrize("typed", ["as-shown", "upper-case-no-dashes"])
async def test_disable_with_a_recovery_code(gql: GraphQL, clock: Clock, typed: str) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    recovery = enrolled.recovery_codes[3]
    if typed != "as-shown":
        recovery = recovery.replace("-", "").upper()
    payload = await disable(gql, ann, recovery)
    assert payload == {"user": {"id": ann.id, "secondFactors": OFF}, "userErrors": []}
    assert await row_counts(gql) == (0, 0, 0)
    assert await login_codes(gql, "ann") == []

    [notice] = await messages_to(db_of(gql), "ann@example.com", "totp_disabled")
    assert "with a recovery code" in notice.text_body
    assert "with a recovery code" in notice.html_body


async def test_disable_sends_a_notice_to_the_account(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann", email="Ann.Smith@example.com")
    bob = await gql.register("bob")
    enrolled = await enroll(gql, ann, unix_time=clock)
    await enroll(gql, bob, unix_time=clock)
    assert (await disable(gql, ann, next_code(enrolled, clock)))["userErrors"] == []

    rows = await messages_to(db_of(gql), "Ann.Smith@example.com", "totp_disabled")
    assert kinds(rows) == [("totp_disabled", "Ann.Smith@example.com", "pending")]
    [notice] = rows
    assert notice.subject
    assert "Hello ann," in notice.text_body
    assert "ann" in notice.html_body
    assert "recovery code" not in notice.text_body  # it was turned off with a TOTP code
    assert enrolled.secret not in notice.text_body
    assert await messages_to(db_of(gql), "bob@example.com", "totp_disabled") == []


async def test_disable_touches_no_other_account(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    ann_enrolled = await enroll(gql, ann, unix_time=clock)
    bob_enrolled = await enroll(gql, bob, unix_time=clock)
    # bob's codes are not ann's.
    refused = await disable(gql, ann, bob_enrolled.recovery_codes[0])
    assert problems(refused) == [("INVALID_CODE", ["input", "code"])]
    assert (await disable(gql, ann, next_code(ann_enrolled, clock)))["userErrors"] == []
    factors = await factors_of(gql, bob)
    assert (factors["totpEnabled"], factors["recoveryCodesRemaining"]) == (True, 10)
    data = await gql.ok(LOGIN, {"input": {"login": "bob", "password": DEFAULT_PASSWORD}})
    assert data["login"]["secondFactorChallenge"] is not None


async def test_enrolling_again_after_disable_makes_new_factors(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    first = await enroll(gql, ann, unix_time=clock)
    assert (await disable(gql, ann, next_code(first, clock)))["userErrors"] == []
    clock.advance(STEP)
    second = await enroll(gql, ann, unix_time=clock)
    assert second.secret != first.secret
    assert not set(second.recovery_codes) & set(first.recovery_codes)
    # The first enrollment's recovery codes died with it.
    for old in first.recovery_codes[:3]:
        refused = await disable(gql, ann, old)
        assert problems(refused) == [("INVALID_CODE", ["input", "code"])]
    assert (await factors_of(gql, ann))["totpEnabled"] is True


# --- refusals -----------------------------------------------------------------------------


async def test_disable_needs_sign_in(gql: GraphQL) -> None:
    body = await gql(DISABLE_TOTP, {"input": {"password": DEFAULT_PASSWORD, "code": "123456"}})
    assert_only_error(body, "UNAUTHENTICATED", ["disableTotp"])


async def test_disable_when_totp_is_off(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    payload = await disable(gql, ann, "123456")
    assert payload["user"] is None
    assert problems(payload) == [("TOTP_NOT_ENABLED", [])]
    [error] = payload["userErrors"]
    assert error["message"] and error["retryAfter"] is None
    # A pending, unconfirmed secret is not on either, even with its own current code.
    data = await gql.ok(
        START_TOTP, {"input": {"password": DEFAULT_PASSWORD}}, token=ann.access_token
    )
    secret = data["startTotpEnrollment"]["secret"]
    payload = await disable(gql, ann, code(secret, clock()))
    assert problems(payload) == [("TOTP_NOT_ENABLED", [])]
    assert await row_counts(gql) == (1, 0, 0)


async def test_totp_off_is_answered_before_the_password_is_checked(
    strict: tuple[GraphQL, Clock],
) -> None:
    gql, _clock = strict
    ann = await gql.register("ann")
    for _ in range(LIMIT + 2):
        payload = await disable(gql, ann, "123456", WRONG)
        assert problems(payload) == [("TOTP_NOT_ENABLED", [])]
    assert await login_codes(gql, "ann") == []  # not locked: none of those counted


async def test_disable_with_a_wrong_password(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    right_code = next_code(enrolled, clock)
    for password in (WRONG, "", "x" * 5000):
        payload = await disable(gql, ann, right_code, password)
        assert problems(payload) == [("INVALID_CREDENTIALS", ["input", "password"])]
        assert payload["user"] is None
    assert (await factors_of(gql, ann))["totpEnabled"] is True
    assert await messages_to(db_of(gql), "ann@example.com", "totp_disabled") == []
    # The code was never checked, so it was not used up: with the right password it works.
    assert (await disable(gql, ann, right_code))["userErrors"] == []


async def test_disable_with_a_wrong_code(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    confirming = code(enrolled.secret, clock())  # the step enrollment used
    for value in (
        wrong_code(enrolled.secret, clock()),
        confirming,
        "k7qm-2xfa-a2b3-c4d5",  # shaped like a recovery code, not one of ann's
        enrolled.recovery_codes[0][:-1],
        "",
        "not a code",
    ):
        payload = await disable(gql, ann, value)
        assert problems(payload) == [("INVALID_CODE", ["input", "code"])], value
        assert payload["userErrors"][0]["message"]
        assert payload["user"] is None
    factors = await factors_of(gql, ann)
    assert (factors["totpEnabled"], factors["recoveryCodesRemaining"]) == (True, 10)
    assert await messages_to(db_of(gql), "ann@example.com", "totp_disabled") == []


async def test_a_recovery_code_used_to_sign_in_cannot_disable(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    used = enrolled.recovery_codes[0]
    token = (await challenge(gql, "ann", DEFAULT_PASSWORD))["secondFactorChallenge"]["token"]
    assert (await verify(gql, token, used))["userErrors"] == []
    payload = await disable(gql, ann, used)
    assert problems(payload) == [("INVALID_CODE", ["input", "code"])]
    # And a recovery code that disabled TOTP is used up with everything else.
    assert (await disable(gql, ann, enrolled.recovery_codes[1]))["userErrors"] == []
    assert await row_counts(gql) == (0, 0, 0)


async def test_a_totp_code_used_to_sign_in_cannot_disable(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    used = next_code(enrolled, clock)
    token = (await challenge(gql, "ann", DEFAULT_PASSWORD))["secondFactorChallenge"]["token"]
    assert (await verify(gql, token, used))["userErrors"] == []
    payload = await disable(gql, ann, used)
    assert problems(payload) == [("INVALID_CODE", ["input", "code"])]
    assert (await disable(gql, ann, next_code(enrolled, clock)))["userErrors"] == []


# --- the lockout --------------------------------------------------------------------------


async def test_wrong_passwords_lock_the_account(strict: tuple[GraphQL, Clock]) -> None:
    gql, clock = strict
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    answers = []
    for _ in range(LIMIT + 1):
        payload = await disable(gql, ann, wrong_code(enrolled.secret, clock()), WRONG)
        answers.append(payload["userErrors"][0])
    assert answers[0]["code"] == "INVALID_CREDENTIALS"
    locked = [answer for answer in answers if answer["code"] == "ACCOUNT_LOCKED"]
    assert locked, answers
    assert answers[-1]["code"] == "ACCOUNT_LOCKED"
    for answer in locked:
        assert answer["field"] in (["input", "password"], ["input", "code"])
        assert 0 < answer["retryAfter"] <= 60
    # Locked for the right password and a right code too, and at login.
    payload = await disable(gql, ann, next_code(enrolled, clock))
    assert problems(payload)[0][0] == "ACCOUNT_LOCKED"
    assert await login_codes(gql, "ann") == ["ACCOUNT_LOCKED"]
    assert (await factors_of(gql, ann))["totpEnabled"] is True


async def test_right_password_and_wrong_codes_lock_the_account(
    strict: tuple[GraphQL, Clock],
) -> None:
    gql, clock = strict
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    answers = []
    for _ in range(LIMIT + 1):
        payload = await disable(gql, ann, wrong_code(enrolled.secret, clock()))
        answers.append(payload["userErrors"][0])
    # Each attempt counts once: LIMIT wrong codes, then the lock.
    assert [answer["code"] for answer in answers] == ["INVALID_CODE"] * LIMIT + ["ACCOUNT_LOCKED"]
    assert answers[-1]["retryAfter"] > 0
    # A right code now does not get through, and the account stays locked at login.
    payload = await disable(gql, ann, next_code(enrolled, clock))
    assert problems(payload)[0][0] == "ACCOUNT_LOCKED"
    assert payload["userErrors"][0]["retryAfter"] > 0
    assert await login_codes(gql, "ann") == ["ACCOUNT_LOCKED"]
    assert (await factors_of(gql, ann))["totpEnabled"] is True


async def test_a_right_password_does_not_clear_failed_logins(
    strict: tuple[GraphQL, Clock],
) -> None:
    gql, clock = strict
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    assert await login_codes(gql, "ann", WRONG) == ["INVALID_CREDENTIALS"]
    payload = await disable(gql, ann, wrong_code(enrolled.secret, clock()))
    assert problems(payload) == [("INVALID_CODE", ["input", "code"])]
    # The failed login and this attempt still count: at most LIMIT - 2 failures are left
    # (had the right password cleared the count, LIMIT would be).
    left = 0
    while await login_codes(gql, "ann", WRONG) == ["INVALID_CREDENTIALS"]:
        left += 1
        assert left <= LIMIT
    assert left <= LIMIT - 2
    assert await login_codes(gql, "ann") == ["ACCOUNT_LOCKED"]


async def test_code_guesses_are_counted_apart_from_password_checks(
    strict: tuple[GraphQL, Clock],
) -> None:
    # changePassword with the right password clears the login count; it must not clear the
    # count of wrong codes, or a thief with the password could guess codes without end.
    gql, clock = strict
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    passwords = [DEFAULT_PASSWORD, OTHER_PASSWORD]
    answers = []
    for attempt in range(LIMIT + 1):
        current = passwords[attempt % 2]
        payload = await disable(gql, ann, wrong_code(enrolled.secret, clock()), current)
        answers.append(payload["userErrors"][0]["code"])
        changed = await gql.ok(
            CHANGE_PASSWORD,
            {"input": {"currentPassword": current, "newPassword": passwords[(attempt + 1) % 2]}},
            token=ann.access_token,
        )
        assert changed["changePassword"]["userErrors"] == [], attempt
    assert answers[:LIMIT] == ["INVALID_CODE"] * LIMIT
    assert answers[LIMIT] == "ACCOUNT_LOCKED"


async def test_a_right_code_clears_the_count(strict: tuple[GraphQL, Clock]) -> None:
    gql, clock = strict
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    assert await login_codes(gql, "ann", WRONG) == ["INVALID_CREDENTIALS"]
    assert (await disable(gql, ann, next_code(enrolled, clock)))["userErrors"] == []
    # The count starts again: LIMIT failures before a lockout.
    for _ in range(LIMIT):
        assert await login_codes(gql, "ann", WRONG) == ["INVALID_CREDENTIALS"]
    assert await login_codes(gql, "ann") == ["ACCOUNT_LOCKED"]


# --- the security log ---------------------------------------------------------------------


async def test_disable_is_logged_without_secrets(
    gql: GraphQL, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    ann_enrolled = await enroll(gql, ann, unix_time=clock)
    bob_enrolled = await enroll(gql, bob, unix_time=clock)
    caplog.clear()
    assert (await disable(gql, ann, ann_enrolled.recovery_codes[0], WRONG))["userErrors"]
    assert (await disable(gql, ann, wrong_code(ann_enrolled.secret, clock())))["userErrors"]
    ann_code = next_code(ann_enrolled, clock)
    assert (await disable(gql, ann, ann_code))["userErrors"] == []
    assert (await disable(gql, bob, bob_enrolled.recovery_codes[0]))["userErrors"] == []

    failed = security_events(caplog, "totp_disable_failed")
    assert [event["reason"] for event in failed] == ["credentials", "code"]
    disabled = security_events(caplog, "totp_disabled")
    assert [event["method"] for event in disabled] == ["TOTP", "RECOVERY_CODE"]
    ann_id, bob_id = disabled[0]["user_id"], disabled[1]["user_id"]
    assert isinstance(ann_id, int) and isinstance(bob_id, int) and ann_id != bob_id
    assert {event["user_id"] for event in failed} == {ann_id}

    text = "\n".join(record.getMessage() for record in caplog.records) + caplog.text
    leaks = [ann_enrolled.secret, bob_enrolled.secret, ann_code, WRONG]
    for value in ann_enrolled.recovery_codes + bob_enrolled.recovery_codes:
        leaks += [value, value.replace("-", "")]
    for leak in leaks:
        assert leak not in text, leak
