"""Mutation.confirmEmailChange over HTTP."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.client import DEFAULT_PASSWORD, Account, GraphQL
from tests.environment import make_settings
from tests.mail_rows import (
    ANY_TOKEN,
    db_of,
    expire_tokens,
    kinds,
    latest_token,
    messages,
    token_rows,
)
from usergraph.db.models import utcnow
from usergraph.settings import Settings

CONFIRM = """mutation($input: ConfirmEmailChangeInput!) { confirmEmailChange(input: $input) {
  user { id username email emailVerified emailVerifiedAt } userErrors { field message code }
} }"""
REQUEST = """mutation($input: RequestEmailChangeInput!) { requestEmailChange(input: $input) {
  userErrors { code }
} }"""
VERIFY = """mutation($t: String!) { verifyEmail(input: {token: $t}) { userErrors { code } } }"""
CHANGE_PASSWORD = """mutation($input: ChangePasswordInput!) { changePassword(input: $input) {
  userErrors { code }
} }"""
ME = "{ me { email emailVerified emailVerifiedAt } }"
NEW = "ann.new@example.com"
INVALID = [{"field": ["input", "token"], "code": "INVALID_TOKEN"}]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, email_change_token_ttl_seconds=300)


async def start_change(gql: GraphQL, account: Account, new_email: str = NEW) -> str:
    """Ask for the change; the token sent to the new address."""
    data = await gql.ok(
        REQUEST,
        {"input": {"newEmail": new_email, "password": account.password}},
        token=account.access_token,
    )
    assert data == {"requestEmailChange": {"userErrors": []}}
    return await latest_token(db_of(gql), new_email, "change_email")


async def confirm(gql: GraphQL, token: str, *, viewer: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = (await gql.ok(CONFIRM, {"input": {"token": token}}, token=viewer))[
        "confirmEmailChange"
    ]
    return payload


def errors(payload: dict[str, Any]) -> list[dict[str, Any]]:
    assert payload["user"] is None, payload
    return [{"field": e["field"], "code": e["code"]} for e in payload["userErrors"]]


async def login_codes(gql: GraphQL, login: str) -> list[str]:
    return [error["code"] for error in (await gql.login(login))["userErrors"]]


async def test_confirm_email_change_switches_the_address(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    token = await start_change(gql, ann)
    before = utcnow()
    payload = await confirm(gql, token, viewer=ann.access_token)
    after = utcnow()
    assert payload["userErrors"] == []
    user = payload["user"]
    assert (user["id"], user["username"], user["email"], user["emailVerified"]) == (
        ann.id,
        "ann",
        NEW,
        True,
    )
    at = datetime.fromisoformat(user["emailVerifiedAt"])
    assert before - timedelta(seconds=1) <= at <= after + timedelta(seconds=1)
    assert (await gql.ok(ME, token=ann.access_token))["me"] == {
        "email": NEW,
        "emailVerified": True,
        "emailVerifiedAt": user["emailVerifiedAt"],
    }
    # Sign in by the new address; the old one is no one's now.
    assert await login_codes(gql, NEW) == []
    assert await login_codes(gql, "ANN.NEW@example.com") == []
    assert await login_codes(gql, "ann@example.com") == ["INVALID_CREDENTIALS"]
    assert await login_codes(gql, "ann") == []
    # The old address is free to register.
    await gql.register("other", email="ann@example.com")


async def test_confirm_email_change_tells_the_old_address(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    await confirm(gql, await start_change(gql, ann))
    rows = await messages(db_of(gql))
    assert kinds(rows) == [
        ("verify_email", "ann@example.com", "pending"),
        ("change_email", NEW, "pending"),
        ("email_change_requested", "ann@example.com", "pending"),
        ("email_changed", "ann@example.com", "pending"),
    ]
    notice = rows[-1]
    assert notice.subject == "Your usergraph email address was changed"
    assert NEW in notice.text_body
    assert ANY_TOKEN.search(notice.text_body) is None


async def test_confirm_email_change_needs_no_sign_in(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    payload = await confirm(gql, await start_change(gql, ann))
    # The payload's user is not the (anonymous) viewer: only public fields show.
    assert payload == {
        "user": {
            "id": ann.id,
            "username": "ann",
            "email": None,
            "emailVerified": None,
            "emailVerifiedAt": None,
        },
        "userErrors": [],
    }
    assert (await gql.ok(ME, token=ann.access_token))["me"]["email"] == NEW


async def test_a_verified_address_is_verified_again_at_the_change(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    db = db_of(gql)
    await gql.ok(VERIFY, {"t": await latest_token(db, "ann@example.com", "verify_email")})
    first = (await gql.ok(ME, token=ann.access_token))["me"]["emailVerifiedAt"]
    await confirm(gql, await start_change(gql, ann))
    me = (await gql.ok(ME, token=ann.access_token))["me"]
    assert me["emailVerified"] is True
    assert datetime.fromisoformat(me["emailVerifiedAt"]) > datetime.fromisoformat(first)


async def test_the_old_addresss_verification_link_dies(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    db = db_of(gql)
    verification = await latest_token(db, "ann@example.com", "verify_email")
    await confirm(gql, await start_change(gql, ann))
    body = await gql(VERIFY, {"t": verification})
    assert body == {"data": {"verifyEmail": {"userErrors": [{"code": "INVALID_TOKEN"}]}}}


async def test_an_address_taken_meanwhile(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    token = await start_change(gql, ann)
    await gql.register("bob", email="Ann.New@example.com")
    payload = await confirm(gql, token)
    assert errors(payload) == [{"field": ["input", "token"], "code": "EMAIL_TAKEN"}]
    assert payload["userErrors"][0]["message"]
    assert (await gql.ok(ME, token=ann.access_token))["me"]["email"] == "ann@example.com"
    assert await login_codes(gql, "ann@example.com") == []
    # Nothing was written: no notice to the old address, the link not used up.
    assert [row.kind for row in await messages(db_of(gql))].count("email_changed") == 0
    [row] = await token_rows(db_of(gql), "change_email")
    assert row.used_at is None


async def test_a_used_token_is_invalid(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    token = await start_change(gql, ann)
    assert (await confirm(gql, token))["userErrors"] == []
    second = await confirm(gql, token)
    assert errors(second) == INVALID
    assert second["userErrors"][0]["message"] == (
        "This link is not valid (used, replaced or unknown)."
    )


async def test_a_replaced_token_is_invalid(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    older = await start_change(gql, ann, "first@example.com")
    newer = await start_change(gql, ann, "second@example.com")
    assert errors(await confirm(gql, older)) == INVALID
    assert (await gql.ok(ME, token=ann.access_token))["me"]["email"] == "ann@example.com"
    assert (await confirm(gql, newer))["userErrors"] == []
    assert (await gql.ok(ME, token=ann.access_token))["me"]["email"] == "second@example.com"


async def test_other_purposes_tokens_do_not_confirm(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    db = db_of(gql)
    verification = await latest_token(db, "ann@example.com", "verify_email")
    await gql.ok(
        """mutation { requestPasswordReset(input: {email: "ann@example.com"}) {
             userErrors { code } } }"""
    )
    reset = await latest_token(db, "ann@example.com", "reset_password")
    await start_change(gql, ann)
    for token in (verification, reset):
        assert errors(await confirm(gql, token)) == INVALID
    assert (await gql.ok(ME, token=ann.access_token))["me"]["email"] == "ann@example.com"


@pytest.mark.parametrize("token", ["", "uge_" + "C" * 43, "nonsense", "uge_" + "q" * 300])
async def test_garbage_tokens_are_invalid(gql: GraphQL, token: str) -> None:
    assert errors(await confirm(gql, token)) == INVALID


async def test_an_expired_token(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    token = await start_change(gql, ann)
    db = db_of(gql)
    [row] = await token_rows(db, "change_email")
    assert row.expires_at - row.created_at == timedelta(seconds=300)  # the setting
    await expire_tokens(db, "change_email")
    payload = await confirm(gql, token)
    assert errors(payload) == [{"field": ["input", "token"], "code": "EXPIRED_TOKEN"}]
    assert (await gql.ok(ME, token=ann.access_token))["me"]["email"] == "ann@example.com"


async def test_a_password_change_stops_an_email_change_in_progress(gql: GraphQL) -> None:
    # What the email_change_requested notice tells the owner to do ("change your password
    # now") must stop a change someone else started.
    ann = await gql.register("ann")
    token = await start_change(gql, ann, "intruder@example.com")
    changed = await gql.ok(
        CHANGE_PASSWORD,
        {"input": {"currentPassword": DEFAULT_PASSWORD, "newPassword": "taken back 12345"}},
        token=ann.access_token,
    )
    assert changed == {"changePassword": {"userErrors": []}}
    assert errors(await confirm(gql, token)) == INVALID
    assert (await gql.ok(ME, token=ann.access_token))["me"]["email"] == "ann@example.com"


async def test_a_password_reset_stops_an_email_change_in_progress(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    token = await start_change(gql, ann, "intruder@example.com")
    await gql.ok(
        """mutation { requestPasswordReset(input: {email: "ann@example.com"}) {
             userErrors { code } } }"""
    )
    reset = await latest_token(db_of(gql), "ann@example.com", "reset_password")
    body = await gql.ok(
        """mutation($t: String!, $p: String!) {
             resetPassword(input: {token: $t, newPassword: $p}) { userErrors { code } } }""",
        {"t": reset, "p": "taken back 12345"},
    )
    assert body == {"resetPassword": {"userErrors": []}}
    assert errors(await confirm(gql, token)) == INVALID
    signed_in = await gql.login("ann", "taken back 12345")
    assert (await gql.ok(ME, token=signed_in["accessToken"]))["me"]["email"] == "ann@example.com"


async def test_an_email_change_stops_reset_links_sent_to_the_old_address(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    await gql.ok(
        """mutation { requestPasswordReset(input: {email: "ann@example.com"}) {
             userErrors { code } } }"""
    )
    old_reset = await latest_token(db_of(gql), "ann@example.com", "reset_password")
    assert (await confirm(gql, await start_change(gql, ann)))["userErrors"] == []
    body = await gql.ok(
        """mutation($t: String!, $p: String!) {
             resetPassword(input: {token: $t, newPassword: $p}) { userErrors { code } } }""",
        {"t": old_reset, "p": "an intruders passphrase"},
    )
    assert body == {"resetPassword": {"userErrors": [{"code": "INVALID_TOKEN"}]}}
    assert await login_codes(gql, "ann") == []


async def test_security_log_and_no_token_in_answers_or_warnings(
    gql: GraphQL, caplog: pytest.LogCaptureFixture
) -> None:
    ann = await gql.register("ann")
    token = await start_change(gql, ann)
    [user_id] = {t.user_id for t in await token_rows(db_of(gql))}
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    first = await gql.post(CONFIRM, {"input": {"token": token}})
    again = await gql.post(CONFIRM, {"input": {"token": token}})
    for response in (first, again):
        assert ANY_TOKEN.search(response.text) is None
    security = [r.getMessage() for r in caplog.records if r.name == "usergraph.security"]
    assert security == [f"event=email_changed user_id={user_id}"]
    for record in caplog.records:
        if record.levelno >= logging.WARNING:
            assert ANY_TOKEN.search(record.getMessage()) is None, record.getMessage()
