"""Mutation.startTotpEnrollment over HTTP: the secret, its otpauth URI and QR code, the
password it needs (counted like a failed login), and a pending secret replaced by a new start."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from tests.client import DEFAULT_PASSWORD, Account, GraphQL, serving
from tests.helpers import assert_only_error, problems
from tests.mail_rows import db_of
from tests.totp import (
    CONFIRM_TOTP,
    SECOND_FACTORS,
    START_TOTP,
    STEP,
    Clock,
    code,
    enroll,
    secret_key,
)
from tests.totp import (
    STRICT_LIMIT as LIMIT,
)
from usergraph.db.models import TotpFactor

WRONG = "not the password at all"
BASE32 = re.compile(r"[A-Z2-7]{32}")
SVG_NS = "http://www.w3.org/2000/svg"


async def start(gql: GraphQL, account: Account, password: str = DEFAULT_PASSWORD) -> Any:
    data = await gql.ok(START_TOTP, {"input": {"password": password}}, token=account.access_token)
    return data["startTotpEnrollment"]


async def confirm(gql: GraphQL, account: Account, code_value: str) -> Any:
    data = await gql.ok(CONFIRM_TOTP, {"input": {"code": code_value}}, token=account.access_token)
    return data["confirmTotpEnrollment"]


async def login_problems(gql: GraphQL, login: str, password: str = DEFAULT_PASSWORD) -> Any:
    payload = await gql.login(login, password)
    return [error["code"] for error in payload["userErrors"]], payload


async def factor_rows(gql: GraphQL) -> list[TotpFactor]:
    async with db_of(gql).read_sessionmaker() as s:
        return list((await s.scalars(select(TotpFactor))).all())


def all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records) + caplog.text


# --- the answer ---------------------------------------------------------------------------


async def test_start_answers_a_secret_its_uri_and_a_qr_code(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    payload = await start(gql, ann)
    assert payload["userErrors"] == []
    secret = payload["secret"]
    assert BASE32.fullmatch(secret), secret
    assert len(secret_key(secret)) == 20  # 160 bits

    uri = urlsplit(payload["otpauthUri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == "/usergraph:ann"
    query = parse_qs(uri.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["usergraph"]
    # Apps assume SHA-1, 6 digits and 30 s when the URI says nothing else.
    assert query.get("algorithm", ["SHA1"]) == ["SHA1"]
    assert query.get("digits", ["6"]) == ["6"]
    assert query.get("period", ["30"]) == ["30"]

    svg = payload["qrCodeSvg"]
    assert svg.startswith("<svg"), svg[:80]
    assert f'xmlns="{SVG_NS}"' in svg.split(">", 1)[0]
    assert svg.rstrip().endswith("</svg>")
    assert secret not in svg  # the URI is drawn, not written out

    # Nothing is on until confirmed: the factors say so, and login still gives tokens.
    data = await gql.ok(SECOND_FACTORS, token=ann.access_token)
    assert data["me"]["secondFactors"] == {
        "totpEnabled": False,
        "totpEnabledAt": None,
        "recoveryCodesRemaining": 0,
    }
    signed_in = await gql.login("ann")
    assert signed_in["userErrors"] == []
    assert signed_in["accessToken"] and signed_in["refreshToken"]


async def test_the_secret_is_the_one_the_code_is_checked_against(
    gql: GraphQL, clock: Clock
) -> None:
    ann = await gql.register("ann")
    secret = (await start(gql, ann))["secret"]
    confirmed = await confirm(gql, ann, code(secret, clock()))
    assert confirmed["userErrors"] == []
    assert confirmed["user"]["secondFactors"]["totpEnabled"] is True


async def test_each_start_answers_a_new_secret(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    secrets = [(await start(gql, ann))["secret"], (await start(gql, ann))["secret"]]
    secrets.append((await start(gql, bob))["secret"])
    assert len(set(secrets)) == 3
    assert all(BASE32.fullmatch(secret) for secret in secrets)


async def test_the_issuer_comes_from_the_settings(
    app: Starlette, database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, totp_issuer="Acme Corp") as gql:
        ann = await gql.register("ann")
        payload = await start(gql, ann)
    assert payload["userErrors"] == []
    uri = urlsplit(payload["otpauthUri"])
    assert unquote(uri.path) == "/Acme Corp:ann"
    assert parse_qs(uri.query)["issuer"] == ["Acme Corp"]
    assert payload["otpauthUri"].startswith("otpauth://totp/Acme%20Corp:ann?")


# --- refusals -----------------------------------------------------------------------------


async def test_start_needs_sign_in(gql: GraphQL) -> None:
    body = await gql(START_TOTP, {"input": {"password": DEFAULT_PASSWORD}})
    assert_only_error(body, "UNAUTHENTICATED", ["startTotpEnrollment"])


async def test_start_with_an_ended_session_is_unauthenticated(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    await gql.ok("mutation { logout { revokedSessions } }", token=ann.access_token)
    body = await gql(START_TOTP, {"input": {"password": DEFAULT_PASSWORD}}, token=ann.access_token)
    assert_only_error(body, "UNAUTHENTICATED", ["startTotpEnrollment"])
    assert await factor_rows(gql) == []


@pytest.mark.parametrize("password", [WRONG, "", "x" * 5000], ids=["wrong", "empty", "too-long"])
async def test_start_with_a_wrong_password(gql: GraphQL, password: str) -> None:
    ann = await gql.register("ann")
    payload = await start(gql, ann, password)
    assert problems(payload) == [("INVALID_CREDENTIALS", ["input", "password"])]
    assert payload["userErrors"][0]["message"]
    assert payload["userErrors"][0]["retryAfter"] is None
    assert (payload["secret"], payload["otpauthUri"], payload["qrCodeSvg"]) == (None, None, None)
    assert await factor_rows(gql) == []
    # Nothing is pending, so there is nothing to confirm.
    confirmed = await confirm(gql, ann, "123456")
    assert problems(confirmed) == [("TOTP_NOT_ENABLED", ["input", "code"])]


async def test_start_when_totp_is_on(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    [before] = await factor_rows(gql)
    payload = await start(gql, ann)
    assert problems(payload) == [("TOTP_ALREADY_ENABLED", [])]
    assert payload["secret"] is None
    # The factor that is on stays as it was.
    [after] = await factor_rows(gql)
    assert after.secret_ciphertext == before.secret_ciphertext
    assert after.enabled_at == before.enabled_at
    clock.advance(STEP)
    body = await gql.ok(
        """mutation($input: DisableTotpInput!) { disableTotp(input: $input) {
             userErrors { code } } }""",
        {"input": {"password": DEFAULT_PASSWORD, "code": code(enrolled.secret, clock())}},
        token=ann.access_token,
    )
    assert body["disableTotp"]["userErrors"] == []


async def test_totp_already_on_is_answered_before_the_password_is_checked(
    strict: tuple[GraphQL, Clock],
) -> None:
    gql, clock = strict
    ann = await gql.register("ann")
    await enroll(gql, ann, unix_time=clock)
    for _ in range(LIMIT + 2):
        payload = await start(gql, ann, WRONG)
        assert problems(payload) == [("TOTP_ALREADY_ENABLED", [])]
    # None of those counted: the right password still gets its challenge, not a lockout.
    data = await gql.ok(
        """mutation($input: LoginInput!) { login(input: $input) {
             accessToken secondFactorChallenge { token } userErrors { code } } }""",
        {"input": {"login": "ann", "password": DEFAULT_PASSWORD}},
    )
    assert data["login"]["userErrors"] == []
    assert data["login"]["secondFactorChallenge"]["token"]


# --- the lockout --------------------------------------------------------------------------


async def test_wrong_passwords_lock_the_account(strict: tuple[GraphQL, Clock]) -> None:
    gql, _clock = strict
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    for _ in range(LIMIT):
        payload = await start(gql, ann, WRONG)
        assert problems(payload) == [("INVALID_CREDENTIALS", ["input", "password"])]
    # The account is locked now, for the right password too, here and at login.
    payload = await start(gql, ann)
    assert problems(payload) == [("ACCOUNT_LOCKED", ["input", "password"])]
    [error] = payload["userErrors"]
    assert 0 < error["retryAfter"] <= 60
    assert payload["secret"] is None
    codes, _ = await login_problems(gql, "ann")
    assert codes == ["ACCOUNT_LOCKED"]
    assert await factor_rows(gql) == []
    # Another account is not touched.
    assert (await start(gql, bob))["userErrors"] == []


async def test_failed_logins_and_wrong_passwords_here_share_one_count(
    strict: tuple[GraphQL, Clock],
) -> None:
    gql, _clock = strict
    ann = await gql.register("ann")
    for _ in range(LIMIT - 1):
        codes, _ = await login_problems(gql, "ann", WRONG)
        assert codes == ["INVALID_CREDENTIALS"]
    payload = await start(gql, ann, WRONG)
    assert problems(payload) == [("INVALID_CREDENTIALS", ["input", "password"])]
    payload = await start(gql, ann)
    assert problems(payload) == [("ACCOUNT_LOCKED", ["input", "password"])]
    assert payload["userErrors"][0]["retryAfter"] > 0


async def test_a_right_password_clears_the_count(strict: tuple[GraphQL, Clock]) -> None:
    gql, _clock = strict
    ann = await gql.register("ann")
    for _ in range(LIMIT - 1):
        assert problems(await start(gql, ann, WRONG)) == [
            ("INVALID_CREDENTIALS", ["input", "password"])
        ]
    assert (await start(gql, ann))["userErrors"] == []
    # The count starts again: LIMIT more failures before a lockout.
    for _ in range(LIMIT):
        codes, _ = await login_problems(gql, "ann", WRONG)
        assert codes == ["INVALID_CREDENTIALS"]
    codes, _ = await login_problems(gql, "ann")
    assert codes == ["ACCOUNT_LOCKED"]


# --- a pending secret ---------------------------------------------------------------------


async def test_starting_again_replaces_the_pending_secret(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    old = (await start(gql, ann))["secret"]
    new = (await start(gql, ann))["secret"]
    assert old != new
    [row] = await factor_rows(gql)
    assert row.enabled_at is None
    # A moment when the old secret's code is none of the new one's accepted codes.
    while code(old, clock()) in {code(new, clock() + drift) for drift in (-STEP, 0, STEP)}:
        clock.advance(STEP)

    refused = await confirm(gql, ann, code(old, clock()))
    assert problems(refused) == [("INVALID_CODE", ["input", "code"])]
    assert refused["recoveryCodes"] is None
    confirmed = await confirm(gql, ann, code(new, clock()))
    assert confirmed["userErrors"] == []
    assert len(confirmed["recoveryCodes"]) == 10


async def test_a_pending_secret_of_one_user_is_not_another_users(
    gql: GraphQL, clock: Clock
) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    secret = (await start(gql, ann))["secret"]
    # bob has nothing pending; ann's code does not turn anything on for him.
    refused = await confirm(gql, bob, code(secret, clock()))
    assert problems(refused) == [("TOTP_NOT_ENABLED", ["input", "code"])]
    data = await gql.ok(SECOND_FACTORS, token=bob.access_token)
    assert data["me"]["secondFactors"]["totpEnabled"] is False


# --- the security log ---------------------------------------------------------------------


async def test_start_is_logged_without_the_secret(
    gql: GraphQL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ann = await gql.register("ann")
    refused = await start(gql, ann, WRONG)
    assert refused["userErrors"]
    payload = await start(gql, ann)
    events = [
        record.security_event  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "usergraph.security"
    ]
    failed = [event for event in events if event["event"] == "totp_enrollment_failed"]
    started = [event for event in events if event["event"] == "totp_enrollment_started"]
    assert [event["reason"] for event in failed] == ["credentials"]
    assert len(started) == 1
    assert isinstance(started[0]["user_id"], int)
    assert failed[0]["user_id"] == started[0]["user_id"]
    text = all_log_text(caplog)
    secret = payload["secret"]
    for leak in (secret, secret.lower(), payload["otpauthUri"], WRONG):
        assert leak not in text
