"""Mutation.resetPassword over HTTP."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.client import DEFAULT_PASSWORD, GraphQL, serving
from tests.environment import make_settings
from tests.helpers import me, refresh_codes
from tests.mail_rows import (
    ANY_TOKEN,
    db_of,
    expire_tokens,
    kinds,
    latest_token,
    messages,
    token_rows,
)
from usergraph.settings import Settings

RESET = """mutation($input: ResetPasswordInput!) { resetPassword(input: $input) {
  user { id username emailVerified } userErrors { field message code }
} }"""
REQUEST = """mutation($email: String!) { requestPasswordReset(input: {email: $email}) {
  userErrors { code }
} }"""
CHANGE = """mutation($input: ChangePasswordInput!) { changePassword(input: $input) {
  userErrors { code }
} }"""
VERIFIED = "{ me { emailVerified emailVerifiedAt } }"
PAYLOAD_FIELDS = """{ __type(name: "ResetPasswordPayload") { fields { name } } }"""
NEW_PASSWORD = "a brand new passphrase 42"
INVALID = [{"field": ["input", "token"], "code": "INVALID_TOKEN"}]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, reset_token_ttl_seconds=120)


async def reset(gql: GraphQL, token: str, new_password: str = NEW_PASSWORD) -> dict[str, Any]:
    payload: dict[str, Any] = (
        await gql.ok(RESET, {"input": {"token": token, "newPassword": new_password}})
    )["resetPassword"]
    return payload


async def reset_link(gql: GraphQL, email: str) -> str:
    assert await gql.ok(REQUEST, {"email": email}) == {"requestPasswordReset": {"userErrors": []}}
    return await latest_token(db_of(gql), email, "reset_password")


def errors(payload: dict[str, Any]) -> list[dict[str, Any]]:
    assert payload["user"] is None, payload
    return [{"field": e["field"], "code": e["code"]} for e in payload["userErrors"]]


async def login_codes(gql: GraphQL, login: str, password: str = DEFAULT_PASSWORD) -> list[str]:
    return [error["code"] for error in (await gql.login(login, password))["userErrors"]]


async def test_reset_password_sets_the_new_password(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    token = await reset_link(gql, "ann@example.com")
    payload = await reset(gql, token)
    # Signed out, the payload's user is someone else's: emailVerified is null there.
    assert payload == {
        "user": {"id": ann.id, "username": "ann", "emailVerified": None},
        "userErrors": [],
    }
    assert await login_codes(gql, "ann", DEFAULT_PASSWORD) == ["INVALID_CREDENTIALS"]
    assert await login_codes(gql, "ann@example.com", DEFAULT_PASSWORD) == ["INVALID_CREDENTIALS"]
    assert await login_codes(gql, "ann", NEW_PASSWORD) == []
    assert await login_codes(gql, "ann@example.com", NEW_PASSWORD) == []


async def test_reset_password_does_not_sign_in(gql: GraphQL) -> None:
    fields = (await gql.ok(PAYLOAD_FIELDS))["__type"]["fields"]
    assert sorted(field["name"] for field in fields) == ["user", "userErrors"]
    await gql.register("ann")
    token = await reset_link(gql, "ann@example.com")
    response = await gql.post(RESET, {"input": {"token": token, "newPassword": NEW_PASSWORD}})
    assert response.json()["data"]["resetPassword"]["userErrors"] == []
    assert "set-cookie" not in response.headers
    assert ANY_TOKEN.search(response.text) is None


async def test_reset_password_ends_every_session(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    other = await gql.login("ann")
    token = await reset_link(gql, "ann@example.com")
    assert (await reset(gql, token))["userErrors"] == []
    for access_token in (ann.access_token, other["accessToken"]):
        assert await me(gql, access_token) is None
    for refresh_token in (ann.refresh_token, other["refreshToken"]):
        assert await refresh_codes(gql, refresh_token) == ["INVALID_REFRESH_TOKEN"]
    # A new sign-in works.
    assert await login_codes(gql, "ann", NEW_PASSWORD) == []


async def test_reset_password_marks_the_address_verified(gql: GraphQL) -> None:
    await gql.register("ann")
    token = await reset_link(gql, "ann@example.com")
    await reset(gql, token)
    signed_in = await gql.login("ann", NEW_PASSWORD)
    verified = (await gql.ok(VERIFIED, token=signed_in["accessToken"]))["me"]
    assert verified["emailVerified"] is True
    assert verified["emailVerifiedAt"] is not None


async def test_reset_password_keeps_an_earlier_verification(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    db = db_of(gql)
    verify_token = await latest_token(db, "ann@example.com", "verify_email")
    await gql.ok(
        "mutation($t: String!) { verifyEmail(input: {token: $t}) { userErrors { code } } }",
        {"t": verify_token},
    )
    verified_at = (await gql.ok(VERIFIED, token=ann.access_token))["me"]["emailVerifiedAt"]
    await reset(gql, await reset_link(gql, "ann@example.com"))
    signed_in = await gql.login("ann", NEW_PASSWORD)
    assert (await gql.ok(VERIFIED, token=signed_in["accessToken"]))["me"] == {
        "emailVerified": True,
        "emailVerifiedAt": verified_at,
    }


async def test_reset_password_sends_a_notice(gql: GraphQL) -> None:
    await gql.register("ann")
    token = await reset_link(gql, "ann@example.com")
    await reset(gql, token)
    rows = await messages(db_of(gql))
    assert kinds(rows) == [
        ("verify_email", "ann@example.com", "pending"),
        ("reset_password", "ann@example.com", "pending"),
        ("password_changed", "ann@example.com", "pending"),
    ]
    notice = rows[-1]
    assert notice.subject == "Your usergraph password was changed"
    assert "Hello ann," in notice.text_body
    assert ANY_TOKEN.search(notice.text_body) is None
    assert ANY_TOKEN.search(notice.html_body) is None


async def test_reset_password_clears_the_lockout(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, login_account_limit="3/minute") as gql:
        name = f"ann{uuid.uuid4().hex[:10]}"
        email = f"{name}@example.com"
        await gql.register(name)
        for login_as in (name, email, name):  # one account, whichever name
            assert await login_codes(gql, login_as, "wrong password") == ["INVALID_CREDENTIALS"]
        for login_as in (name, email):
            assert await login_codes(gql, login_as, DEFAULT_PASSWORD) == ["ACCOUNT_LOCKED"]
        token = await reset_link(gql, email)
        assert (await reset(gql, token))["userErrors"] == []
        # Both login names are free again, at once.
        assert await login_codes(gql, name, NEW_PASSWORD) == []
        assert await login_codes(gql, email, NEW_PASSWORD) == []


@pytest.mark.parametrize(
    ("new_password", "message"),
    [
        pytest.param("Sh0rt!x", "Use at least 8 characters.", id="too-short"),
        pytest.param("x" * 129, "Use at most 128 characters.", id="too-long"),
        pytest.param(
            "ANNABELLA@example.com",
            "The password must differ from your email and username.",
            id="equals-email",
        ),
        pytest.param(
            "AnnaBella", "The password must differ from your email and username.", id="equals-name"
        ),
    ],
)
async def test_a_weak_password(gql: GraphQL, new_password: str, message: str) -> None:
    await gql.register("annabella")
    token = await reset_link(gql, "annabella@example.com")
    payload = await reset(gql, token, new_password)
    assert payload == {
        "user": None,
        "userErrors": [
            {"field": ["input", "newPassword"], "message": message, "code": "WEAK_PASSWORD"}
        ],
    }
    # Nothing changed and the link still works.
    assert await login_codes(gql, "annabella") == []
    [row] = await token_rows(db_of(gql), "reset_password")
    assert row.used_at is None
    assert (await reset(gql, token))["userErrors"] == []


async def test_a_second_use_is_invalid(gql: GraphQL) -> None:
    await gql.register("ann")
    token = await reset_link(gql, "ann@example.com")
    assert (await reset(gql, token))["userErrors"] == []
    second = await reset(gql, token, "yet another passphrase 7")
    assert errors(second) == INVALID
    assert await login_codes(gql, "ann", NEW_PASSWORD) == []
    assert await login_codes(gql, "ann", "yet another passphrase 7") == ["INVALID_CREDENTIALS"]


async def test_a_replaced_link_is_invalid(gql: GraphQL) -> None:
    await gql.register("ann")
    older = await reset_link(gql, "ann@example.com")
    newer = await reset_link(gql, "ann@example.com")
    assert errors(await reset(gql, older)) == INVALID
    assert (await reset(gql, newer))["userErrors"] == []


async def test_a_verification_token_does_not_reset(gql: GraphQL) -> None:
    await gql.register("ann")
    token = await latest_token(db_of(gql), "ann@example.com", "verify_email")
    assert errors(await reset(gql, token)) == INVALID
    assert await login_codes(gql, "ann") == []


@pytest.mark.parametrize("token", ["", "uge_" + "B" * 43, "garbage", "uge_" + "z" * 200])
async def test_garbage_tokens_are_invalid(gql: GraphQL, token: str) -> None:
    await gql.register("ann")
    assert errors(await reset(gql, token)) == INVALID


async def test_a_garbage_token_is_invalid_before_the_password_is_judged(gql: GraphQL) -> None:
    payload = await reset(gql, "garbage", "short")
    assert errors(payload) == INVALID


async def test_an_expired_link(gql: GraphQL) -> None:
    await gql.register("ann")
    token = await reset_link(gql, "ann@example.com")
    db = db_of(gql)
    [row] = await token_rows(db, "reset_password")
    assert row.expires_at - row.created_at == timedelta(seconds=120)  # the setting
    await expire_tokens(db, "reset_password")
    payload = await reset(gql, token)
    assert errors(payload) == [{"field": ["input", "token"], "code": "EXPIRED_TOKEN"}]
    assert await login_codes(gql, "ann") == []


async def test_change_password_retires_open_reset_links(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    token = await reset_link(gql, "ann@example.com")
    changed = await gql.ok(
        CHANGE,
        {"input": {"currentPassword": DEFAULT_PASSWORD, "newPassword": "changed passphrase 9"}},
        token=ann.access_token,
    )
    assert changed == {"changePassword": {"userErrors": []}}
    assert errors(await reset(gql, token)) == INVALID
    assert await login_codes(gql, "ann", "changed passphrase 9") == []


async def test_a_reset_retires_the_other_open_reset_links(gql: GraphQL) -> None:
    # Two accounts' links are independent; the one used is the only one of its account.
    await gql.register("ann")
    await gql.register("bob")
    ann_token = await reset_link(gql, "ann@example.com")
    bob_token = await reset_link(gql, "bob@example.com")
    assert (await reset(gql, ann_token))["userErrors"] == []
    assert (await reset(gql, bob_token))["userErrors"] == []
    assert await login_codes(gql, "bob", NEW_PASSWORD) == []


async def test_security_log_and_no_token_in_warnings(
    gql: GraphQL, caplog: pytest.LogCaptureFixture
) -> None:
    await gql.register("ann")
    await gql.login("ann")
    token = await reset_link(gql, "ann@example.com")
    [user_id] = {t.user_id for t in await token_rows(db_of(gql))}
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    await reset(gql, token)
    await reset(gql, token)
    security = [r.getMessage() for r in caplog.records if r.name == "usergraph.security"]
    assert security == [f"event=password_reset user_id={user_id} sessions_ended=2"]
    for record in caplog.records:
        assert token not in record.getMessage()
        if record.levelno >= logging.WARNING:
            assert ANY_TOKEN.search(record.getMessage()) is None, record.getMessage()
