"""Mutation.confirmTotpEnrollment over HTTP: a current code of the pending secret turns TOTP
on and answers the recovery codes once; the confirming code's time step is then used up."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.client import DEFAULT_PASSWORD, Account, GraphQL
from tests.helpers import assert_no_tokens, assert_only_error, problems
from tests.mail_rows import db_of, kinds, messages, messages_to
from tests.totp import (
    CONFIRM_TOTP,
    LOGIN,
    START_TOTP,
    STEP,
    STRICT_LIMIT,
    Clock,
    challenge,
    code,
    factors_of,
    verify,
    wrong_code,
)
from usergraph.db.models import RecoveryCode, TotpFactor

RECOVERY_CODE = re.compile(r"[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}")
SECURITY = "usergraph.security"


async def start(gql: GraphQL, account: Account) -> str:
    data = await gql.ok(
        START_TOTP, {"input": {"password": DEFAULT_PASSWORD}}, token=account.access_token
    )
    payload = data["startTotpEnrollment"]
    assert payload["userErrors"] == [], payload
    secret: str = payload["secret"]
    return secret


async def confirm(gql: GraphQL, account: Account, code_value: str) -> Any:
    data = await gql.ok(CONFIRM_TOTP, {"input": {"code": code_value}}, token=account.access_token)
    return data["confirmTotpEnrollment"]


async def totp_rows(gql: GraphQL) -> list[TotpFactor]:
    async with db_of(gql).read_sessionmaker() as s:
        return list((await s.scalars(select(TotpFactor))).all())


async def recovery_rows(gql: GraphQL) -> list[RecoveryCode]:
    async with db_of(gql).read_sessionmaker() as s:
        return list((await s.scalars(select(RecoveryCode))).all())


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- turning TOTP on ----------------------------------------------------------------------


async def test_confirm_turns_totp_on_and_answers_ten_recovery_codes(
    gql: GraphQL, clock: Clock
) -> None:
    ann = await gql.register("ann")
    secret = await start(gql, ann)
    before = datetime.now(UTC)
    payload = await confirm(gql, ann, code(secret, clock()))
    after = datetime.now(UTC)
    assert payload["userErrors"] == []
    codes = payload["recoveryCodes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert all(RECOVERY_CODE.fullmatch(value) for value in codes), codes

    user = payload["user"]
    assert user["id"] == ann.id
    factors = user["secondFactors"]
    assert factors["totpEnabled"] is True
    assert factors["recoveryCodesRemaining"] == 10
    enabled_at = parse_time(factors["totpEnabledAt"])
    assert before - timedelta(seconds=1) <= enabled_at <= after + timedelta(seconds=1)
    assert await factors_of(gql, ann) == factors

    # Signing in now takes a second step: the right password alone gives no tokens.
    login = await challenge(gql, "ann", DEFAULT_PASSWORD)
    assert login["userErrors"] == []
    assert login["accessToken"] is None and login["user"] is None
    assert login["secondFactorChallenge"]["methods"] == ["TOTP", "RECOVERY_CODE"]


async def test_the_recovery_codes_are_shown_once_and_stored_only_as_hashes(
    gql: GraphQL, clock: Clock
) -> None:
    ann = await gql.register("ann")
    secret = await start(gql, ann)
    codes = (await confirm(gql, ann, code(secret, clock())))["recoveryCodes"]
    clock.advance(STEP)
    again = await confirm(gql, ann, code(secret, clock()))
    assert problems(again) == [("TOTP_ALREADY_ENABLED", [])]
    assert again["recoveryCodes"] is None and again["user"] is None

    rows = await recovery_rows(gql)
    assert len(rows) == 10
    stored = " ".join(f"{row.code_hash} {row.user_id}" for row in rows)
    for value in codes:
        assert value not in stored
        assert value.replace("-", "") not in stored
    # Nor does the notice carry them.
    [notice] = await messages_to(db_of(gql), "ann@example.com", "totp_enabled")
    for value in codes:
        assert value not in notice.text_body and value not in notice.html_body


@pytest.mark.parametrize("typed", ["plain", "spaced", "dashed"])
async def test_confirm_ignores_spaces_and_dashes(gql: GraphQL, clock: Clock, typed: str) -> None:
    ann = await gql.register("ann")
    secret = await start(gql, ann)
    value = code(secret, clock())
    value = {
        "plain": value,
        "spaced": f" {value[:3]} {value[3:]} ",
        "dashed": f"{value[:3]}-{value[3:]}",
    }[typed]
    payload = await confirm(gql, ann, value)
    assert payload["userErrors"] == []
    assert payload["user"]["secondFactors"]["totpEnabled"] is True


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-2 * STEP, False), (-STEP, True), (STEP, True), (2 * STEP, False)],
    ids=["two-steps-early", "one-step-early", "one-step-late", "two-steps-late"],
)
async def test_confirm_accepts_one_step_of_drift(
    gql: GraphQL, clock: Clock, offset: int, accepted: bool
) -> None:
    ann = await gql.register("ann")
    secret = await start(gql, ann)
    window = {code(secret, clock() + drift) for drift in (-STEP, 0, STEP)}
    # An out-of-window code that equals one inside (1 in ~300 000): move on to another step.
    while not accepted and code(secret, clock() + offset) in window:
        clock.advance(STEP)
        window = {code(secret, clock() + drift) for drift in (-STEP, 0, STEP)}
    value = code(secret, clock() + offset)
    payload = await confirm(gql, ann, value)
    if accepted:
        assert payload["userErrors"] == []
    else:
        assert problems(payload) == [("INVALID_CODE", ["input", "code"])]
        assert (await factors_of(gql, ann))["totpEnabled"] is False


async def test_each_recovery_code_signs_in_once(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    secret = await start(gql, ann)
    codes = (await confirm(gql, ann, code(secret, clock())))["recoveryCodes"]
    for used, value in enumerate(codes[:3], start=1):
        token = (await challenge(gql, "ann", DEFAULT_PASSWORD))["secondFactorChallenge"]["token"]
        signed_in = await verify(gql, token, value)
        assert signed_in["userErrors"] == []
        assert signed_in["accessToken"] and signed_in["user"]["username"] == "ann"
        assert signed_in["user"]["secondFactors"]["recoveryCodesRemaining"] == 10 - used
        token = (await challenge(gql, "ann", DEFAULT_PASSWORD))["secondFactorChallenge"]["token"]
        again = await verify(gql, token, value)
        assert problems(again) == [("INVALID_CODE", ["input", "code"])]
        assert_no_tokens(again)


# --- refusals -----------------------------------------------------------------------------


async def test_confirm_needs_sign_in(gql: GraphQL) -> None:
    body = await gql(CONFIRM_TOTP, {"input": {"code": "123456"}})
    assert_only_error(body, "UNAUTHENTICATED", ["confirmTotpEnrollment"])


async def test_confirm_without_a_pending_secret(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    payload = await confirm(gql, ann, "123456")
    assert problems(payload) == [("TOTP_NOT_ENABLED", ["input", "code"])]
    assert payload["userErrors"][0]["message"]
    assert payload["recoveryCodes"] is None and payload["user"] is None
    assert await totp_rows(gql) == []


async def test_confirm_when_totp_is_on(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    secret = await start(gql, ann)
    assert (await confirm(gql, ann, code(secret, clock())))["userErrors"] == []
    [row] = await totp_rows(gql)
    clock.advance(STEP)
    payload = await confirm(gql, ann, code(secret, clock()))
    assert problems(payload) == [("TOTP_ALREADY_ENABLED", [])]
    # Nothing changed: same factor, same ten codes.
    [again] = await totp_rows(gql)
    assert (again.enabled_at, again.secret_ciphertext) == (row.enabled_at, row.secret_ciphertext)
    assert len(await recovery_rows(gql)) == 10


async def test_confirm_with_a_wrong_code(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    secret = await start(gql, ann)
    for value in [
        wrong_code(secret, clock()),
        "12345",
        "1234567",
        "abcdef",
        "",
        "k7qm-2xfa-a2b3-c4d5",
    ]:
        payload = await confirm(gql, ann, value)
        assert problems(payload) == [("INVALID_CODE", ["input", "code"])], value
        assert payload["userErrors"][0]["message"]
        assert payload["recoveryCodes"] is None and payload["user"] is None
    assert (await factors_of(gql, ann))["totpEnabled"] is False
    assert await recovery_rows(gql) == []
    assert await messages_to(db_of(gql), "ann@example.com", "totp_enabled") == []
    # The pending secret is still there: a right code turns it on.
    payload = await confirm(gql, ann, code(secret, clock()))
    assert payload["userErrors"] == []


# --- the confirming code is used up -------------------------------------------------------


async def test_the_confirming_code_cannot_sign_in(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    secret = await start(gql, ann)
    confirming = code(secret, clock())
    assert (await confirm(gql, ann, confirming))["userErrors"] == []

    login = await challenge(gql, "ann", DEFAULT_PASSWORD)
    token = login["secondFactorChallenge"]["token"]
    refused = await verify(gql, token, confirming)
    assert problems(refused) == [("INVALID_CODE", ["input", "code"])]
    assert_no_tokens(refused)
    # Nor the step before it (never older than the newest used).
    earlier = code(secret, clock() - STEP)
    if earlier != confirming:
        refused = await verify(gql, token, earlier)
        assert problems(refused) == [("INVALID_CODE", ["input", "code"])]
    # The next step's code works, on the same challenge.
    clock.advance(STEP)
    signed_in = await verify(gql, token, code(secret, clock()))
    assert signed_in["userErrors"] == []
    assert signed_in["accessToken"] and signed_in["refreshToken"]
    assert signed_in["user"]["username"] == "ann"


async def test_the_next_steps_code_signs_in_without_waiting(gql: GraphQL, clock: Clock) -> None:
    # The window reaches one step ahead: a code of the next step works at once.
    ann = await gql.register("ann")
    secret = await start(gql, ann)
    assert (await confirm(gql, ann, code(secret, clock())))["userErrors"] == []
    token = (await challenge(gql, "ann", DEFAULT_PASSWORD))["secondFactorChallenge"]["token"]
    signed_in = await verify(gql, token, code(secret, clock() + STEP))
    assert signed_in["userErrors"] == []
    assert signed_in["accessToken"]


# --- the notice and the log ---------------------------------------------------------------


async def test_confirm_sends_a_notice_to_the_account(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann", email="Ann.Smith@example.com")
    await gql.register("bob")
    before = await messages(db_of(gql))
    secret = await start(gql, ann)
    # Starting sends nothing.
    assert [m.kind for m in await messages(db_of(gql))] == [m.kind for m in before]
    assert (await confirm(gql, ann, code(secret, clock())))["userErrors"] == []

    new = [m for m in await messages(db_of(gql)) if m.id not in {b.id for b in before}]
    assert kinds(new) == [("totp_enabled", "Ann.Smith@example.com", "pending")]
    [notice] = new
    assert notice.subject
    assert "ann" in notice.text_body and "ann" in notice.html_body
    assert "recovery codes" in notice.text_body.lower()
    assert secret not in notice.text_body and secret not in notice.html_body


async def test_confirm_is_logged_without_secret_or_codes(
    gql: GraphQL, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ann = await gql.register("ann")
    secret = await start(gql, ann)
    assert (await confirm(gql, ann, wrong_code(secret, clock())))["userErrors"]
    confirming = code(secret, clock())
    payload = await confirm(gql, ann, confirming)
    assert payload["userErrors"] == []

    enabled = [
        record
        for record in caplog.records
        if record.name == SECURITY and record.security_event["event"] == "totp_enabled"  # type: ignore[attr-defined]
    ]
    assert len(enabled) == 1
    assert enabled[0].levelno == logging.INFO
    assert isinstance(enabled[0].security_event["user_id"], int)  # type: ignore[attr-defined]
    text = "\n".join(record.getMessage() for record in caplog.records) + caplog.text
    for leak in (secret, secret.lower(), confirming):
        assert leak not in text
    for value in payload["recoveryCodes"]:
        assert value not in text
        assert value.replace("-", "") not in text


async def test_confirm_does_not_touch_login_for_others(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    await gql.register("bob")
    secret = await start(gql, ann)
    assert (await confirm(gql, ann, code(secret, clock())))["userErrors"] == []
    data = await gql.ok(LOGIN, {"input": {"login": "bob", "password": DEFAULT_PASSWORD}})
    assert data["login"]["accessToken"]
    assert data["login"]["secondFactorChallenge"] is None


async def test_wrong_confirming_codes_lock_the_account(strict: tuple[GraphQL, Clock]) -> None:
    # A stolen access token must not guess the code of an enrollment left unfinished.
    gql, clock = strict
    ann = await gql.register("ann")
    started = await gql.ok(
        START_TOTP, {"input": {"password": ann.password}}, token=ann.access_token
    )
    secret = started["startTotpEnrollment"]["secret"]
    answers = []
    for _ in range(STRICT_LIMIT):
        data = await gql.ok(
            CONFIRM_TOTP, {"input": {"code": wrong_code(secret, clock())}}, token=ann.access_token
        )
        answers.append(data["confirmTotpEnrollment"]["userErrors"][0]["code"])
    assert answers == ["INVALID_CODE"] * STRICT_LIMIT
    locked = await gql.ok(
        CONFIRM_TOTP, {"input": {"code": code(secret, clock())}}, token=ann.access_token
    )
    [error] = locked["confirmTotpEnrollment"]["userErrors"]
    assert error["code"] == "ACCOUNT_LOCKED"
    assert (await factors_of(gql, ann))["totpEnabled"] is False
