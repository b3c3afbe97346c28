"""Mutation.resetSecondFactors over HTTP: an administrator turns off the second factors of a
user who lost them all; the user then signs in with the password alone."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.client import DEFAULT_PASSWORD, Account, GraphQL
from tests.helpers import assert_only_error, problems
from tests.mail_rows import db_of, kinds, messages_to
from tests.totp import (
    LOGIN,
    RESET_FACTORS,
    SECOND_FACTORS,
    START_TOTP,
    STEP,
    Clock,
    challenge,
    code,
    enroll,
    verify,
)
from usergraph.db.models import RecoveryCode, SecondFactorChallenge, TotpFactor
from usergraph.schema.relay import to_global_id, user_pk

SECURITY = "usergraph.security"
OFF = {"totpEnabled": False, "recoveryCodesRemaining": 0}


async def reset(gql: GraphQL, actor: Account | None, user_id: str) -> dict[str, Any]:
    return await gql(
        RESET_FACTORS,
        {"input": {"userId": user_id}},
        token=actor.access_token if actor else None,
    )


async def row_counts(gql: GraphQL) -> tuple[int, int, int]:
    """How many TOTP factors, recovery codes and challenges the database holds."""
    async with db_of(gql).read_sessionmaker() as s:
        counts = [
            await s.scalar(select(func.count()).select_from(model))
            for model in (TotpFactor, RecoveryCode, SecondFactorChallenge)
        ]
    return counts[0] or 0, counts[1] or 0, counts[2] or 0


async def login(gql: GraphQL, username: str) -> dict[str, Any]:
    data = await gql.ok(LOGIN, {"input": {"login": username, "password": DEFAULT_PASSWORD}})
    payload: dict[str, Any] = data["login"]
    return payload


def pk(account: Account) -> int:
    """The users.id behind an account's global id."""
    return user_pk(account.id)


# --- resetting ----------------------------------------------------------------------------


async def test_an_admin_resets_a_users_factors(gql: GraphQL, clock: Clock) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    open_challenge = (await challenge(gql, "ann", DEFAULT_PASSWORD))["secondFactorChallenge"]

    body = await reset(gql, admin, ann.id)
    assert body == {
        "data": {
            "resetSecondFactors": {
                "user": {"id": ann.id, "secondFactors": OFF},
                "userErrors": [],
            }
        }
    }
    assert await row_counts(gql) == (0, 0, 0)
    data = await gql.ok(SECOND_FACTORS, token=ann.access_token)
    assert data["me"]["secondFactors"] == {**OFF, "totpEnabledAt": None}

    # The password alone signs in now.
    signed_in = await login(gql, "ann")
    assert signed_in["userErrors"] == []
    assert signed_in["accessToken"] and signed_in["refreshToken"]
    assert signed_in["secondFactorChallenge"] is None
    assert signed_in["user"] == {"id": ann.id, "username": "ann"}
    # What was open or held before is dead: the challenge, the secret, the recovery codes.
    clock.advance(STEP)
    late = await verify(gql, open_challenge["token"], code(enrolled.secret, clock()))
    assert problems(late) == [("INVALID_CHALLENGE", ["input", "challengeToken"])]
    assert late["accessToken"] is None


async def test_after_a_reset_the_user_can_enroll_again(gql: GraphQL, clock: Clock) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    first = await enroll(gql, ann, unix_time=clock)
    assert (await reset(gql, admin, ann.id))["data"]["resetSecondFactors"]["userErrors"] == []
    clock.advance(STEP)
    second = await enroll(gql, ann, unix_time=clock)
    assert second.secret != first.secret
    token = (await challenge(gql, "ann", DEFAULT_PASSWORD))["secondFactorChallenge"]["token"]
    refused = await verify(gql, token, first.recovery_codes[0])
    assert problems(refused) == [("INVALID_CODE", ["input", "code"])]
    assert (await verify(gql, token, second.recovery_codes[0]))["userErrors"] == []


async def test_reset_touches_only_that_user(gql: GraphQL, clock: Clock) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    await enroll(gql, ann, unix_time=clock)
    await enroll(gql, bob, unix_time=clock)
    assert (await reset(gql, admin, ann.id))["data"]["resetSecondFactors"]["userErrors"] == []
    data = await gql.ok(SECOND_FACTORS, token=bob.access_token)
    assert data["me"]["secondFactors"]["totpEnabled"] is True
    assert data["me"]["secondFactors"]["recoveryCodesRemaining"] == 10
    assert (await login(gql, "bob"))["secondFactorChallenge"] is not None
    assert await messages_to(db_of(gql), "bob@example.com", "second_factors_reset") == []


async def test_an_admin_can_reset_their_own_factors(gql: GraphQL, clock: Clock) -> None:
    admin = await gql.admin()
    await enroll(gql, admin, unix_time=clock)
    body = await reset(gql, admin, admin.id)
    payload = body["data"]["resetSecondFactors"]
    assert payload == {"user": {"id": admin.id, "secondFactors": OFF}, "userErrors": []}


async def test_reset_sends_a_notice_to_the_user(gql: GraphQL, clock: Clock) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann", email="Ann.Smith@example.com")
    await enroll(gql, ann, unix_time=clock)
    assert (await reset(gql, admin, ann.id))["data"]["resetSecondFactors"]["userErrors"] == []
    rows = await messages_to(db_of(gql), "Ann.Smith@example.com", "second_factors_reset")
    assert kinds(rows) == [("second_factors_reset", "Ann.Smith@example.com", "pending")]
    [notice] = rows
    assert notice.subject
    assert "Hello ann," in notice.text_body
    assert "ann" in notice.html_body
    assert "administrator" in notice.text_body
    # Nothing goes to the administrator.
    assert await messages_to(db_of(gql), "admin@example.com", "second_factors_reset") == []


async def test_reset_is_a_warning_with_the_actor(
    gql: GraphQL, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = await gql.admin()
    ann = await gql.register("ann")
    enrolled = await enroll(gql, ann, unix_time=clock)
    assert (await reset(gql, admin, ann.id))["data"]["resetSecondFactors"]["userErrors"] == []
    [record] = [
        r
        for r in caplog.records
        if r.name == SECURITY and r.security_event["event"] == "second_factors_reset"  # type: ignore[attr-defined]
    ]
    assert record.levelno == logging.WARNING
    event = record.security_event  # type: ignore[attr-defined]
    assert event["user_id"] == pk(ann)
    assert event["actor_id"] == pk(admin)
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for leak in [enrolled.secret, *enrolled.recovery_codes]:
        assert leak not in text


# --- refusals -----------------------------------------------------------------------------


async def test_reset_by_a_non_admin_is_forbidden(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    await enroll(gql, ann, unix_time=clock)
    await enroll(gql, bob, unix_time=clock)
    for target in (bob, ann):  # not another's, nor one's own
        body = await reset(gql, ann, target.id)
        assert_only_error(body, "FORBIDDEN", ["resetSecondFactors"])
    assert await row_counts(gql) == (2, 20, 0)
    assert await messages_to(db_of(gql), "bob@example.com", "second_factors_reset") == []


async def test_reset_needs_sign_in(gql: GraphQL, clock: Clock) -> None:
    ann = await gql.register("ann")
    await enroll(gql, ann, unix_time=clock)
    body = await reset(gql, None, ann.id)
    assert_only_error(body, "UNAUTHENTICATED", ["resetSecondFactors"])
    assert await row_counts(gql) == (1, 10, 0)


async def test_reset_of_an_unknown_user(gql: GraphQL) -> None:
    admin = await gql.admin()
    body = await reset(gql, admin, to_global_id("User", 999_999_999))
    payload = body["data"]["resetSecondFactors"]
    assert payload["user"] is None
    assert problems(payload) == [("NOT_FOUND", ["input", "userId"])]
    assert payload["userErrors"][0]["message"]


@pytest.mark.parametrize(
    "malformed",
    ["not-an-id", to_global_id("Session", "00000000-0000-0000-0000-000000000001")],
    ids=["garbage", "session-id"],
)
async def test_reset_with_a_malformed_id(gql: GraphQL, malformed: str) -> None:
    admin = await gql.admin()
    body = await reset(gql, admin, malformed)
    assert_only_error(body, "BAD_USER_INPUT", ["resetSecondFactors"])


async def test_reset_when_totp_is_off(gql: GraphQL, clock: Clock) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    body = await reset(gql, admin, ann.id)
    payload = body["data"]["resetSecondFactors"]
    assert payload["user"] is None
    assert problems(payload) == [("TOTP_NOT_ENABLED", ["input", "userId"])]
    assert payload["userErrors"][0]["message"]
    assert await messages_to(db_of(gql), "ann@example.com", "second_factors_reset") == []


async def test_reset_when_only_pending(gql: GraphQL, clock: Clock) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    data = await gql.ok(
        START_TOTP, {"input": {"password": DEFAULT_PASSWORD}}, token=ann.access_token
    )
    assert data["startTotpEnrollment"]["userErrors"] == []
    body = await reset(gql, admin, ann.id)
    assert problems(body["data"]["resetSecondFactors"]) == [
        ("TOTP_NOT_ENABLED", ["input", "userId"])
    ]
    assert await row_counts(gql) == (1, 0, 0)  # the pending secret is left as it was
    assert await messages_to(db_of(gql), "ann@example.com", "second_factors_reset") == []


async def test_reset_twice(gql: GraphQL, clock: Clock) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    await enroll(gql, ann, unix_time=clock)
    assert (await reset(gql, admin, ann.id))["data"]["resetSecondFactors"]["userErrors"] == []
    again = (await reset(gql, admin, ann.id))["data"]["resetSecondFactors"]
    assert problems(again) == [("TOTP_NOT_ENABLED", ["input", "userId"])]
    rows = await messages_to(db_of(gql), "ann@example.com", "second_factors_reset")
    assert len(rows) == 1
