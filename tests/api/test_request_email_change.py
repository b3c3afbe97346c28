"""Mutation.requestEmailChange over HTTP."""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.client import DEFAULT_PASSWORD, GraphQL, serving
from tests.helpers import assert_only_error, error_codes, problems
from tests.mail_rows import ANY_TOKEN, db_of, kinds, messages, token_in, token_rows

REQUEST = """mutation($input: RequestEmailChangeInput!) { requestEmailChange(input: $input) {
  userErrors { field message code }
} }"""
ME = "{ me { email emailVerified } }"
OK: dict[str, Any] = {"data": {"requestEmailChange": {"userErrors": []}}}


async def request(
    gql: GraphQL, token: str | None, new_email: str, password: str = DEFAULT_PASSWORD
) -> Any:
    return await gql(REQUEST, {"input": {"newEmail": new_email, "password": password}}, token=token)


def payload_problems(body: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return problems(body["data"]["requestEmailChange"])


async def test_request_email_change_writes_a_link_and_a_notice(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    assert await request(gql, ann.access_token, "ann.new@example.com") == OK
    db = db_of(gql)
    rows = (await messages(db))[1:]  # after the registration's verification email
    assert kinds(rows) == [
        ("change_email", "ann.new@example.com", "pending"),
        ("email_change_requested", "ann@example.com", "pending"),
    ]
    link, notice = rows
    assert link.subject == "Confirm your new email address for usergraph"
    token = token_in(link)
    assert f"http://127.0.0.1:8000/confirm-email-change#token={token}" in link.text_body
    assert "expires in 24 hours" in link.text_body
    assert notice.subject == "Your usergraph email address is about to change"
    assert "ann.new@example.com" in notice.text_body
    assert ANY_TOKEN.search(notice.text_body) is None
    assert ANY_TOKEN.search(notice.html_body) is None
    [row] = await token_rows(db, "change_email")
    assert (row.email, row.used_at) == ("ann.new@example.com", None)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert row.expires_at - row.created_at == timedelta(hours=24)
    # Nothing changes until the link is opened.
    assert (await gql.ok(ME, token=ann.access_token))["me"] == {
        "email": "ann@example.com",
        "emailVerified": False,
    }


async def test_the_new_address_is_normalized(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    assert await request(gql, ann.access_token, "  Ann.New@EXAMPLE.com ") == OK
    [row] = await token_rows(db_of(gql), "change_email")
    assert row.email == "Ann.New@example.com"


async def test_request_email_change_needs_sign_in(gql: GraphQL) -> None:
    await gql.register("ann")
    body = await request(gql, None, "ann.new@example.com")
    assert_only_error(body, "UNAUTHENTICATED", ["requestEmailChange"])
    assert len(await messages(db_of(gql))) == 1


async def test_a_wrong_password(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    body = await request(gql, ann.access_token, "ann.new@example.com", "not my password")
    payload = body["data"]["requestEmailChange"]
    assert problems(payload) == [("INVALID_CREDENTIALS", ["input", "password"])]
    assert payload["userErrors"][0]["message"] == "The current password is wrong."
    assert await token_rows(db_of(gql), "change_email") == []
    assert len(await messages(db_of(gql))) == 1


async def test_wrong_passwords_lock_the_account_like_failed_logins(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, login_account_limit="3/minute") as gql:
        name = f"ann{uuid.uuid4().hex[:10]}"
        ann = await gql.register(name)
        new = f"{name}.new@example.com"
        for _ in range(3):
            body = await request(gql, ann.access_token, new, "not my password")
            assert payload_problems(body) == [("INVALID_CREDENTIALS", ["input", "password"])]
        # Even the right password is refused now.
        locked = await gql.ok(
            """mutation($input: RequestEmailChangeInput!) { requestEmailChange(input: $input) {
                 userErrors { field code retryAfter } } }""",
            {"input": {"newEmail": new, "password": DEFAULT_PASSWORD}},
            token=ann.access_token,
        )
        [error] = locked["requestEmailChange"]["userErrors"]
        assert (error["field"], error["code"]) == (["input", "password"], "ACCOUNT_LOCKED")
        assert 0 < error["retryAfter"] <= 60
        # The same counter as a login by username.
        login = await gql.login(name)
        assert [e["code"] for e in login["userErrors"]] == ["ACCOUNT_LOCKED"]
        assert [r for r in await token_rows(db_of(gql), "change_email") if r.email == new] == []


async def test_a_right_password_clears_earlier_failures(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, login_account_limit="3/minute") as gql:
        name = f"ann{uuid.uuid4().hex[:10]}"
        ann = await gql.register(name)
        new = f"{name}.new@example.com"
        for _ in range(2):
            await request(gql, ann.access_token, new, "not my password")
        assert await request(gql, ann.access_token, new) == OK
        for _ in range(2):
            await request(gql, ann.access_token, new, "not my password")
        assert await request(gql, ann.access_token, new) == OK


@pytest.mark.parametrize("new_email", ["not-an-email", "ann@", "", "a" * 250 + "@example.com"])
async def test_an_invalid_email(gql: GraphQL, new_email: str) -> None:
    ann = await gql.register("ann")
    body = await request(gql, ann.access_token, new_email)
    assert payload_problems(body) == [("INVALID_EMAIL", ["input", "newEmail"])]
    assert len(await messages(db_of(gql))) == 1


@pytest.mark.parametrize("new_email", ["bob@example.com", "BOB@example.com", "Bob@Example.COM"])
async def test_an_address_taken_by_another_account(gql: GraphQL, new_email: str) -> None:
    ann = await gql.register("ann")
    await gql.register("bob")
    body = await request(gql, ann.access_token, new_email)
    payload = body["data"]["requestEmailChange"]
    assert problems(payload) == [("EMAIL_TAKEN", ["input", "newEmail"])]
    assert payload["userErrors"][0]["message"]
    assert await token_rows(db_of(gql), "change_email") == []
    assert len(await messages(db_of(gql))) == 2


async def test_a_taken_address_is_told_only_with_the_right_password(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    await gql.register("bob")
    body = await request(gql, ann.access_token, "bob@example.com", "not my password")
    assert payload_problems(body) == [("INVALID_CREDENTIALS", ["input", "password"])]


@pytest.mark.parametrize("new_email", ["ann@example.com", "ANN@EXAMPLE.COM", " Ann@example.com"])
async def test_the_current_address(gql: GraphQL, new_email: str) -> None:
    ann = await gql.register("ann")
    body = await request(gql, ann.access_token, new_email)
    payload = body["data"]["requestEmailChange"]
    assert problems(payload) == [("INVALID_INPUT", ["input", "newEmail"])]
    assert payload["userErrors"][0]["message"] == "This is already your address."
    assert len(await messages(db_of(gql))) == 1


async def test_a_newer_request_replaces_the_older(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    assert await request(gql, ann.access_token, "first@example.com") == OK
    assert await request(gql, ann.access_token, "second@example.com") == OK
    older, newer = await token_rows(db_of(gql), "change_email")
    assert (older.email, older.used_at is not None) == ("first@example.com", True)
    assert (newer.email, newer.used_at) == ("second@example.com", None)
    # The other purposes of the account stay open.
    [verification] = await token_rows(db_of(gql), "verify_email")
    assert verification.used_at is None


async def test_requests_for_one_new_address_are_limited(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, email_address_limit="2/hour") as gql:
        name = f"ann{uuid.uuid4().hex[:10]}"
        ann = await gql.register(name)
        new = f"{name}.new@example.com"
        assert await request(gql, ann.access_token, new) == OK
        assert await request(gql, ann.access_token, new.upper()) == OK
        refused = await request(gql, ann.access_token, new)
        assert refused["data"] is None
        [error] = refused["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert 0 < error["extensions"]["retryAfter"] <= 3600
        assert await request(gql, ann.access_token, f"{name}.other@example.com") == OK


async def test_requests_per_ip_are_limited(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, email_ip_limit="1/hour") as gql:
        name = f"ann{uuid.uuid4().hex[:10]}"
        ann = await gql.register(name)
        assert await request(gql, ann.access_token, f"{name}.a@example.com") == OK
        body = await request(gql, ann.access_token, f"{name}.b@example.com")
        assert error_codes(body) == ["RATE_LIMITED"]


async def test_security_log_and_no_token_in_answers_or_warnings(
    gql: GraphQL, caplog: pytest.LogCaptureFixture
) -> None:
    ann = await gql.register("ann")
    [user_id] = {t.user_id for t in await token_rows(db_of(gql))}
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    wrong = await gql.post(
        REQUEST,
        {"input": {"newEmail": "ann.new@example.com", "password": "not my password"}},
        token=ann.access_token,
    )
    right = await gql.post(
        REQUEST,
        {"input": {"newEmail": "ann.new@example.com", "password": DEFAULT_PASSWORD}},
        token=ann.access_token,
    )
    for response in (wrong, right):
        assert ANY_TOKEN.search(response.text) is None
    security = [r.getMessage() for r in caplog.records if r.name == "usergraph.security"]
    assert security == [
        f"event=email_change_failed user_id={user_id} reason=credentials",
        f"event=email_change_requested user_id={user_id}",
    ]
    for record in caplog.records:
        assert DEFAULT_PASSWORD not in record.getMessage()
        if record.levelno >= logging.WARNING:
            assert ANY_TOKEN.search(record.getMessage()) is None, record.getMessage()
