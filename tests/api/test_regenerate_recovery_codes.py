"""Mutation.regenerateRecoveryCodes over HTTP: the password and a current TOTP or recovery code
replace the recovery codes; the old ones stop working, the new ones work once each."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from tests.client import DEFAULT_PASSWORD, Account, GraphQL
from tests.helpers import assert_no_tokens, assert_only_error, problems
from tests.mail_rows import db_of, kinds, messages_to
from tests.totp import (
    LOGIN,
    SECOND_FACTORS,
    START_TOTP,
    Clock,
    challenge,
    code,
    enroll,
    next_code,
    verify,
    wrong_code,
)
from tests.totp import (
    STRICT_LIMIT as LIMIT,
)

REGENERATE = """mutation($input: RegenerateRecoveryCodesInput!) {
  regenerateRecoveryCodes(input: $input) {
    recoveryCodes userErrors { field message code retryAfter }
} }"""
RECOVERY_CODE = re.compile(r"[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}")
WRONG = "not the password at all"
OTHER_PASSWORD = "another long passphrase 99"
SECURITY = "usergraph.security"
CHANGE_PASSWORD = """mutation($input: ChangePasswordInput!) { changePassword(input: $input) {
  userErrors { code } } }"""


async def regenerate(
    gql: GraphQL, account: Account, code_value: str, password: str = DEFAULT_PASSWORD
) -> Any:
    data = await gql.ok(
        REGENERATE,
        {"input": {"password": password, "code": code_value}},
        token=account.access_token,
    )
    return data["regenerateRecoveryCodes"]


async def remaining(gql: GraphQL, account: Account) -> int:
    data = await gql.ok(SECOND_FACTORS, token=account.access_token)
    count: int = data["me"]["secondFactors"]["recoveryCodesRemaining"]
    return count


async def login_codes(gql: GraphQL, login: str, password: str = DEFAULT_PASSWORD) -> list[str]:
    data = await gql.ok(LOGIN, {"input": {"login": login, "password": password}})
    return [error["code"] for error in data["login"]["userErrors"]]


async def sign_in_with(gql: GraphQL, username: str, code_value: str) -> dict[str, Any]:
    """Login with the password, then verifySecondFactor with code_value."""
    login = await challenge(gql, username, DEFAULT_PASSWORD)
    assert login["userErrors"] == [], login
    return await verify(gql, login["secondFactorChallenge"]["token"], code_value)


def assert_fresh_codes(codes: list[str], *old: list[str]) -> None:
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert all(RECOVERY_CODE.fullmatch(value) for value in codes), codes
    for earlier in old:
        assert not set(codes) & set(earlier)


# --- new codes ----------------------------------------------------------------------------


async def test_regenerate_with_a_totp_code(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    # One old code used: 9 left.
    assert (await sign_in_with(gql, "ann", enrolled.recovery_codes[0]))["userErrors"] == []
    assert await remaining(gql, ann) == 9

    payload = await regenerate(gql, ann, next_code(enrolled, clock))
    assert payload["userErrors"] == []
    new = payload["recoveryCodes"]
    assert_fresh_codes(new, enrolled.recovery_codes)
    assert await remaining(gql, ann) == 10

    # Every old code fails now (a challenge dies after 5 wrong codes: take new ones).
    for start in range(1, 10, 5):
        token = (await challenge(gql, "ann", DEFAULT_PASSWORD))["secondFactorChallenge"]["token"]
        for old in enrolled.recovery_codes[start : start + 5]:
            refused = await verify(gql, token, old)
            assert problems(refused) == [("INVALID_CODE", ["input", "code"])], old
            assert_no_tokens(refused)
    # A new code works once.
    signed_in = await sign_in_with(gql, "ann", new[0])
    assert signed_in["userErrors"] == []
    assert signed_in["accessToken"] and signed_in["user"]["username"] == "ann"
    assert signed_in["user"]["secondFactors"] == {"totpEnabled": True, "recoveryCodesRemaining": 9}
    again = await sign_in_with(gql, "ann", new[0])
    assert problems(again) == [("INVALID_CODE", ["input", "code"])]
    # TOTP itself is untouched.
    assert (await sign_in_with(gql, "ann", next_code(enrolled, clock)))["userErrors"] == []


async def test_each_new_code_works_once(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    new = (await regenerate(gql, ann, next_code(enrolled, clock)))["recoveryCodes"]
    for number, value in enumerate(new[:3], start=1):
        typed = value.upper() if number % 2 else value.replace("-", "")
        assert (await sign_in_with(gql, "ann", typed))["userErrors"] == []
        assert await remaining(gql, ann) == 10 - number
        assert problems(await sign_in_with(gql, "ann", value)) == [
            ("INVALID_CODE", ["input", "code"])
        ]


async def test_regenerate_with_a_recovery_code(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    payload = await regenerate(gql, ann, enrolled.recovery_codes[2].upper())
    assert payload["userErrors"] == []
    assert_fresh_codes(payload["recoveryCodes"], enrolled.recovery_codes)
    assert await remaining(gql, ann) == 10
    # The code it was made with is gone with the others.
    refused = await sign_in_with(gql, "ann", enrolled.recovery_codes[2])
    assert problems(refused) == [("INVALID_CODE", ["input", "code"])]

    [notice] = await messages_to(db_of(gql), "ann@example.com", "recovery_codes_regenerated")
    assert "with a recovery code" in notice.text_body
    assert "with a recovery code" in notice.html_body


async def test_regenerating_twice_leaves_only_the_newest(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    second = (await regenerate(gql, ann, next_code(enrolled, clock)))["recoveryCodes"]
    third = (await regenerate(gql, ann, second[0]))["recoveryCodes"]
    assert_fresh_codes(third, enrolled.recovery_codes, second)
    refused = await regenerate(gql, ann, second[1])
    assert problems(refused) == [("INVALID_CODE", ["input", "code"])]
    assert (await regenerate(gql, ann, third[9]))["userErrors"] == []


async def test_regenerate_sends_a_notice_to_the_account(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann", email="Ann.Smith@example.com")
    enrolled = await enroll(gql, ann, unix_time=clock)
    payload = await regenerate(gql, ann, next_code(enrolled, clock))
    assert payload["userErrors"] == []
    rows = await messages_to(db_of(gql), "Ann.Smith@example.com", "recovery_codes_regenerated")
    assert kinds(rows) == [("recovery_codes_regenerated", "Ann.Smith@example.com", "pending")]
    [notice] = rows
    assert notice.subject
    assert "Hello ann," in notice.text_body
    assert "ann" in notice.html_body
    assert "old ones no longer work" in notice.text_body
    assert "with a recovery code" not in notice.text_body
    for value in payload["recoveryCodes"]:
        assert value not in notice.text_body and value not in notice.html_body


# --- refusals -----------------------------------------------------------------------------


async def test_regenerate_needs_sign_in(gql: GraphQL) -> None:
    body = await gql(REGENERATE, {"input": {"password": DEFAULT_PASSWORD, "code": "123456"}})
    assert_only_error(body, "UNAUTHENTICATED", ["regenerateRecoveryCodes"])


async def test_regenerate_when_totp_is_off(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    payload = await regenerate(gql, ann, "123456")
    assert payload["recoveryCodes"] is None
    assert problems(payload) == [("TOTP_NOT_ENABLED", [])]
    assert payload["userErrors"][0]["message"]
    # Nor for a pending secret's code.
    data = await gql.ok(
        START_TOTP, {"input": {"password": DEFAULT_PASSWORD}}, token=ann.access_token
    )
    payload = await regenerate(gql, ann, code(data["startTotpEnrollment"]["secret"], clock()))
    assert problems(payload) == [("TOTP_NOT_ENABLED", [])]
    assert await remaining(gql, ann) == 0


async def test_regenerate_with_a_wrong_password(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    for password in (WRONG, ""):
        payload = await regenerate(gql, ann, enrolled.recovery_codes[0], password)
        assert problems(payload) == [("INVALID_CREDENTIALS", ["input", "password"])]
        assert payload["recoveryCodes"] is None
    # The old codes still work, the one given included (it was never checked).
    assert await remaining(gql, ann) == 10
    assert (await sign_in_with(gql, "ann", enrolled.recovery_codes[0]))["userErrors"] == []
    assert await messages_to(db_of(gql), "ann@example.com", "recovery_codes_regenerated") == []


async def test_regenerate_with_a_wrong_code(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    for value in (
        wrong_code(enrolled.secret, clock()),
        code(enrolled.secret, clock()),  # the step enrollment used
        "k7qm-2xfa-a2b3-c4d5",
        "",
    ):
        payload = await regenerate(gql, ann, value)
        assert problems(payload) == [("INVALID_CODE", ["input", "code"])], value
        assert payload["recoveryCodes"] is None
    assert await remaining(gql, ann) == 10
    assert (await sign_in_with(gql, "ann", enrolled.recovery_codes[5]))["userErrors"] == []
    assert await messages_to(db_of(gql), "ann@example.com", "recovery_codes_regenerated") == []


# --- the lockout --------------------------------------------------------------------------


async def test_wrong_passwords_lock_the_account(strict: tuple[GraphQL, Clock]) -> None:
    gql, clock = strict
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    answers = [
        (await regenerate(gql, ann, enrolled.recovery_codes[0], WRONG))["userErrors"][0]
        for _ in range(LIMIT + 1)
    ]
    assert answers[0]["code"] == "INVALID_CREDENTIALS"
    assert answers[-1]["code"] == "ACCOUNT_LOCKED", answers
    assert 0 < answers[-1]["retryAfter"] <= 60
    assert answers[-1]["field"] in (["input", "password"], ["input", "code"])
    payload = await regenerate(gql, ann, enrolled.recovery_codes[0])
    assert problems(payload)[0][0] == "ACCOUNT_LOCKED"
    assert payload["recoveryCodes"] is None
    assert await login_codes(gql, "ann") == ["ACCOUNT_LOCKED"]


async def test_right_password_and_wrong_codes_lock_the_account(
    strict: tuple[GraphQL, Clock],
) -> None:
    gql, clock = strict
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    answers = [
        (await regenerate(gql, ann, wrong_code(enrolled.secret, clock())))["userErrors"][0]
        for _ in range(LIMIT + 1)
    ]
    # Each attempt counts once: LIMIT wrong codes, then the lock.
    assert [answer["code"] for answer in answers] == ["INVALID_CODE"] * LIMIT + ["ACCOUNT_LOCKED"]
    assert answers[-1]["retryAfter"] > 0
    payload = await regenerate(gql, ann, next_code(enrolled, clock))
    assert problems(payload)[0][0] == "ACCOUNT_LOCKED"
    assert await login_codes(gql, "ann") == ["ACCOUNT_LOCKED"]


async def test_a_right_password_does_not_clear_failed_logins(
    strict: tuple[GraphQL, Clock],
) -> None:
    gql, clock = strict
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    assert await login_codes(gql, "ann", WRONG) == ["INVALID_CREDENTIALS"]
    payload = await regenerate(gql, ann, wrong_code(enrolled.secret, clock()))
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
    # A right password elsewhere (changePassword) clears the login count, not the code count.
    gql, clock = strict
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    passwords = [DEFAULT_PASSWORD, OTHER_PASSWORD]
    answers = []
    for attempt in range(LIMIT + 1):
        current = passwords[attempt % 2]
        payload = await regenerate(gql, ann, wrong_code(enrolled.secret, clock()), current)
        answers.append(payload["userErrors"][0]["code"])
        changed = await gql.ok(
            CHANGE_PASSWORD,
            {"input": {"currentPassword": current, "newPassword": passwords[(attempt + 1) % 2]}},
            token=ann.access_token,
        )
        assert changed["changePassword"]["userErrors"] == [], attempt
    assert answers == ["INVALID_CODE"] * LIMIT + ["ACCOUNT_LOCKED"]


async def test_a_right_code_clears_the_count(strict: tuple[GraphQL, Clock]) -> None:
    gql, clock = strict
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    assert await login_codes(gql, "ann", WRONG) == ["INVALID_CREDENTIALS"]
    assert (await regenerate(gql, ann, next_code(enrolled, clock)))["userErrors"] == []
    for _ in range(LIMIT):
        assert await login_codes(gql, "ann", WRONG) == ["INVALID_CREDENTIALS"]
    assert await login_codes(gql, "ann") == ["ACCOUNT_LOCKED"]


# --- the security log ---------------------------------------------------------------------


async def test_regenerate_is_logged_without_codes(
    gql: GraphQL, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    caplog.clear()
    assert (await regenerate(gql, ann, enrolled.recovery_codes[0], WRONG))["userErrors"]
    assert (await regenerate(gql, ann, wrong_code(enrolled.secret, clock())))["userErrors"]
    totp_code = next_code(enrolled, clock)
    second = (await regenerate(gql, ann, totp_code))["recoveryCodes"]
    third = (await regenerate(gql, ann, second[0]))["recoveryCodes"]

    events = [
        record.security_event  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == SECURITY
    ]
    failed = [e for e in events if e["event"] == "recovery_codes_regeneration_failed"]
    assert [e["reason"] for e in failed] == ["credentials", "code"]
    made = [e for e in events if e["event"] == "recovery_codes_regenerated"]
    assert [e["method"] for e in made] == ["TOTP", "RECOVERY_CODE"]
    assert len({e["user_id"] for e in failed + made}) == 1
    assert isinstance(made[0]["user_id"], int)

    text = "\n".join(record.getMessage() for record in caplog.records) + caplog.text
    leaks = [enrolled.secret, totp_code, WRONG]
    for value in enrolled.recovery_codes + second + third:
        leaks += [value, value.replace("-", "")]
    for leak in leaks:
        assert leak not in text, leak
