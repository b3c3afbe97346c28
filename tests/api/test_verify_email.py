"""Mutation.verifyEmail over HTTP; User.emailVerified and emailVerifiedAt; required
verification at login."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.client import DEFAULT_PASSWORD, GraphQL, serving
from tests.environment import make_settings
from tests.helpers import TOKEN_FIELDS, problems
from tests.mail_rows import ANY_TOKEN, db_of, expire_tokens, latest_token, token_rows
from usergraph.db.models import utcnow
from usergraph.settings import Settings

VERIFY = """mutation($input: VerifyEmailInput!) { verifyEmail(input: $input) {
  user { id username emailVerified emailVerifiedAt } userErrors { field message code }
} }"""
VERIFIED = "{ me { emailVerified emailVerifiedAt } }"
USER = """query($id: ID!) { user(id: $id) { username email emailVerified emailVerifiedAt } }"""
REQUEST_RESET = """mutation($email: String!) { requestPasswordReset(input: {email: $email}) {
  userErrors { code }
} }"""
REQUEST_VERIFICATION = """mutation { requestEmailVerification { userErrors { code } } }"""
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken refreshToken tokenType accessTokenExpiresAt refreshTokenExpiresAt
  user { id username } userErrors { field message code }
} }"""
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken user { id } userErrors { code }
} }"""
INVALID = [{"field": ["input", "token"], "code": "INVALID_TOKEN"}]
EXPIRED = [{"field": ["input", "token"], "code": "EXPIRED_TOKEN"}]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # A short verification lifetime, to see the setting reach the tokens.
    return make_settings(database_url, tmp_path, verification_token_ttl_seconds=60)


async def verify(gql: GraphQL, token: str, *, viewer: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = (await gql.ok(VERIFY, {"input": {"token": token}}, token=viewer))[
        "verifyEmail"
    ]
    return payload


def errors(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The user errors without their messages (and the payload's user must be null)."""
    assert payload["user"] is None, payload
    return [{"field": e["field"], "code": e["code"]} for e in payload["userErrors"]]


async def verified(gql: GraphQL, access_token: str) -> dict[str, Any]:
    me: dict[str, Any] = (await gql.ok(VERIFIED, token=access_token))["me"]
    return me


async def test_verify_email_with_the_registration_link(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    assert await verified(gql, ann.access_token) == {
        "emailVerified": False,
        "emailVerifiedAt": None,
    }
    token = await latest_token(db_of(gql), "ann@example.com", "verify_email")
    before = utcnow()
    payload = await verify(gql, token, viewer=ann.access_token)
    after = utcnow()
    assert payload["userErrors"] == []
    user = payload["user"]
    assert (user["id"], user["username"], user["emailVerified"]) == (ann.id, "ann", True)
    at = datetime.fromisoformat(user["emailVerifiedAt"])
    assert before - timedelta(seconds=1) <= at <= after + timedelta(seconds=1)
    assert await verified(gql, ann.access_token) == {
        "emailVerified": True,
        "emailVerifiedAt": user["emailVerifiedAt"],
    }
    [row] = await token_rows(db_of(gql))
    assert row.used_at is not None


async def test_verify_email_needs_no_sign_in(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    token = await latest_token(db_of(gql), "ann@example.com", "verify_email")
    payload = await verify(gql, token)
    # The payload's user is not the (anonymous) viewer: only public fields show.
    assert payload == {
        "user": {"id": ann.id, "username": "ann", "emailVerified": None, "emailVerifiedAt": None},
        "userErrors": [],
    }
    assert (await verified(gql, ann.access_token))["emailVerified"] is True


async def test_a_used_token_is_invalid(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    token = await latest_token(db_of(gql), "ann@example.com", "verify_email")
    first = await verify(gql, token)
    assert first["userErrors"] == []
    verified_at = (await verified(gql, ann.access_token))["emailVerifiedAt"]
    second = await verify(gql, token)
    assert errors(second) == INVALID
    assert second["userErrors"][0]["message"] == (
        "This link is not valid (used, replaced or unknown)."
    )
    assert (await verified(gql, ann.access_token))["emailVerifiedAt"] == verified_at


async def test_a_replaced_token_is_invalid(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    db = db_of(gql)
    older = await latest_token(db, "ann@example.com", "verify_email")
    body = await gql(REQUEST_VERIFICATION, token=ann.access_token)
    assert body == {"data": {"requestEmailVerification": {"userErrors": []}}}
    newer = await latest_token(db, "ann@example.com", "verify_email")
    assert errors(await verify(gql, older)) == INVALID
    assert (await verified(gql, ann.access_token))["emailVerified"] is False
    assert (await verify(gql, newer))["userErrors"] == []


async def test_a_reset_token_does_not_verify(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    db = db_of(gql)
    await gql.ok(REQUEST_RESET, {"email": "ann@example.com"})
    reset_token = await latest_token(db, "ann@example.com", "reset_password")
    assert errors(await verify(gql, reset_token)) == INVALID
    assert (await verified(gql, ann.access_token))["emailVerified"] is False
    # The refusal used nothing up: the reset token is still open.
    [reset_row] = await token_rows(db, "reset_password")
    assert reset_row.used_at is None


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("uge_", id="prefix-only"),
        pytest.param("uge_" + "A" * 43, id="well-formed-unknown"),
        pytest.param("not a token at all", id="garbage"),
        pytest.param("uge_" + "x" * 200, id="too-long"),
        pytest.param("eyJhbGciOiJIUzI1NiJ9.e30.sig", id="a-jwt"),
    ],
)
async def test_garbage_tokens_are_invalid(gql: GraphQL, token: str) -> None:
    ann = await gql.register("ann")
    assert errors(await verify(gql, token)) == INVALID
    assert (await verified(gql, ann.access_token))["emailVerified"] is False


async def test_a_token_of_another_account_verifies_that_account_only(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    token = await latest_token(db_of(gql), "bob@example.com", "verify_email")
    payload = await verify(gql, token, viewer=ann.access_token)
    assert payload["userErrors"] == []
    assert payload["user"]["id"] == bob.id
    assert (await verified(gql, ann.access_token))["emailVerified"] is False
    assert (await verified(gql, bob.access_token))["emailVerified"] is True


async def test_an_expired_token(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    db = db_of(gql)
    [row] = await token_rows(db, "verify_email")
    assert row.expires_at - row.created_at == timedelta(seconds=60)  # the setting
    token = await latest_token(db, "ann@example.com", "verify_email")
    await expire_tokens(db, "verify_email")
    payload = await verify(gql, token)
    assert errors(payload) == EXPIRED
    assert payload["userErrors"][0]["message"] == "This link has expired; ask for a new one."
    assert (await verified(gql, ann.access_token))["emailVerified"] is False
    [row] = await token_rows(db, "verify_email")
    assert row.used_at is None


async def test_an_expired_and_used_token_is_invalid(gql: GraphQL) -> None:
    await gql.register("ann")
    db = db_of(gql)
    token = await latest_token(db, "ann@example.com", "verify_email")
    assert (await verify(gql, token))["userErrors"] == []
    await expire_tokens(db, "verify_email")
    assert errors(await verify(gql, token)) == INVALID


# --- who sees emailVerified ------------------------------------------------------------------


async def test_email_verified_is_for_the_user_and_administrators(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    token = await latest_token(db_of(gql), "ann@example.com", "verify_email")
    await verify(gql, token)
    verified_at = (await verified(gql, ann.access_token))["emailVerifiedAt"]
    assert verified_at is not None

    seen_by = {
        "self": (await gql.ok(USER, {"id": ann.id}, token=ann.access_token))["user"],
        "admin": (await gql.ok(USER, {"id": ann.id}, token=admin.access_token))["user"],
        "other": (await gql.ok(USER, {"id": ann.id}, token=bob.access_token))["user"],
    }
    full = {
        "username": "ann",
        "email": "ann@example.com",
        "emailVerified": True,
        "emailVerifiedAt": verified_at,
    }
    hidden = {"username": "ann", "email": None, "emailVerified": None, "emailVerifiedAt": None}
    assert seen_by == {"self": full, "admin": full, "other": hidden}
    # An unverified account: false (not null) for those who may see it.
    bob_by_admin = (await gql.ok(USER, {"id": bob.id}, token=admin.access_token))["user"]
    assert (bob_by_admin["emailVerified"], bob_by_admin["emailVerifiedAt"]) == (False, None)


# --- required verification -------------------------------------------------------------------


def register_input(username: str) -> dict[str, Any]:
    return {
        "input": {
            "email": f"{username}@example.com",
            "username": username,
            "password": DEFAULT_PASSWORD,
        }
    }


async def login(gql: GraphQL, login: str, password: str = DEFAULT_PASSWORD) -> dict[str, Any]:
    payload: dict[str, Any] = (
        await gql.ok(LOGIN, {"input": {"login": login, "password": password}})
    )["login"]
    return payload


def refused(payload: dict[str, Any]) -> list[tuple[str, list[str]]]:
    for key in TOKEN_FIELDS:
        assert payload[key] is None, key
    return problems(payload)


async def test_required_mode_login_waits_for_verification(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, email_verification="required") as gql:
        name = f"ann{uuid.uuid4().hex[:10]}"
        payload = (await gql.ok(REGISTER, register_input(name)))["register"]
        assert payload == {"accessToken": None, "user": None, "userErrors": []}

        # Only the right password learns that the address is unverified.
        wrong = await login(gql, name, "not the right password")
        assert refused(wrong) == [("INVALID_CREDENTIALS", [])]
        for login_as in (name, f"{name}@example.com"):
            right = await login(gql, login_as)
            assert refused(right) == [("EMAIL_NOT_VERIFIED", [])]
            assert right["userErrors"][0]["message"] == (
                "Verify your email address first: follow the link we sent you."
            )

        token = await latest_token(db_of(gql), f"{name}@example.com", "verify_email")
        assert (await verify(gql, token))["userErrors"] == []
        signed_in = await login(gql, name)
        assert signed_in["userErrors"] == []
        assert signed_in["accessToken"] and signed_in["refreshToken"]
        assert signed_in["user"]["username"] == name
        me = await verified(gql, signed_in["accessToken"])
        assert me["emailVerified"] is True and me["emailVerifiedAt"] is not None


async def test_required_mode_a_new_verification_link_signed_out(
    database_url: str, tmp_path: Path
) -> None:
    # With no session to ask from, the signed-out request is how an unverified user gets in.
    async with serving(database_url, tmp_path, email_verification="required") as gql:
        name = f"ann{uuid.uuid4().hex[:10]}"
        await gql.ok(REGISTER, register_input(name))
        db = db_of(gql)
        first = await latest_token(db, f"{name}@example.com", "verify_email")
        body = await gql(
            """mutation($email: String!) { requestEmailVerification(input: {email: $email}) {
                 userErrors { code } } }""",
            {"email": f"{name}@example.com"},
        )
        assert body == {"data": {"requestEmailVerification": {"userErrors": []}}}
        second = await latest_token(db, f"{name}@example.com", "verify_email")
        assert errors(await verify(gql, first)) == INVALID
        assert (await verify(gql, second))["userErrors"] == []
        assert (await login(gql, name))["userErrors"] == []


async def test_required_mode_unverified_logins_do_not_lock_the_account(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(
        database_url, tmp_path, email_verification="required", login_account_limit="3/minute"
    ) as gql:
        name = f"ann{uuid.uuid4().hex[:10]}"
        await gql.ok(REGISTER, register_input(name))
        for _ in range(3):
            assert refused(await login(gql, name)) == [("EMAIL_NOT_VERIFIED", [])]
        token = await latest_token(db_of(gql), f"{name}@example.com", "verify_email")
        assert (await verify(gql, token))["userErrors"] == []
        assert (await login(gql, name))["userErrors"] == []


async def test_optional_mode_signs_in_unverified_accounts(gql: GraphQL) -> None:
    await gql.register("ann")
    payload = await login(gql, "ann")
    assert payload["userErrors"] == []
    assert payload["accessToken"]


async def test_security_log_and_no_token_in_warnings(
    gql: GraphQL, caplog: pytest.LogCaptureFixture
) -> None:
    ann = await gql.register("ann")
    token = await latest_token(db_of(gql), "ann@example.com", "verify_email")
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    response = await gql.post(VERIFY, {"input": {"token": token}})
    again = await gql.post(VERIFY, {"input": {"token": token}})
    for answer in (response, again):
        assert ANY_TOKEN.search(answer.text) is None
    user_id = (await token_rows(db_of(gql)))[0].user_id
    security = [r.getMessage() for r in caplog.records if r.name == "usergraph.security"]
    assert security == [f"event=email_verified user_id={user_id}"]
    for record in caplog.records:
        if record.levelno >= logging.WARNING:
            assert ANY_TOKEN.search(record.getMessage()) is None, record.getMessage()
    assert (await verified(gql, ann.access_token))["emailVerified"] is True
