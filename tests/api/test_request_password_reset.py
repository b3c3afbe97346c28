"""Mutation.requestPasswordReset over HTTP."""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.client import GraphQL, http_client, serving
from tests.helpers import error_codes, problems
from tests.mail_rows import (
    ANY_TOKEN,
    db_of,
    kinds,
    latest_token,
    messages,
    token_in,
    token_rows,
)

REQUEST = """mutation($input: RequestPasswordResetInput!) { requestPasswordReset(input: $input) {
  userErrors { field message code }
} }"""
VERIFY = (
    """mutation($token: String!) { verifyEmail(input: {token: $token}) { userErrors { code } } }"""
)
SET_ACTIVE = """mutation($input: SetUserActiveInput!) { setUserActive(input: $input) {
  user { isActive } userErrors { code }
} }"""
OK: dict[str, Any] = {"data": {"requestPasswordReset": {"userErrors": []}}}


def unique(name: str) -> str:
    return f"{name}{uuid.uuid4().hex[:10]}"


async def request(gql: GraphQL, email: str) -> Any:
    return await gql(REQUEST, {"input": {"email": email}})


async def test_the_reset_email(gql: GraphQL) -> None:
    await gql.register("ann")
    assert await request(gql, "ann@example.com") == OK
    db = db_of(gql)
    [message] = await messages_of_kind(gql, "reset_password")
    assert kinds([message]) == [("reset_password", "ann@example.com", "pending")]
    assert message.subject == "Reset your usergraph password"
    assert "Hello ann," in message.text_body
    token = token_in(message)
    assert f"http://127.0.0.1:8000/reset-password#token={token}" in message.text_body
    [row] = await token_rows(db, "reset_password")
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert (row.email, row.used_at) == ("ann@example.com", None)
    assert row.expires_at - row.created_at == timedelta(hours=1)


async def messages_of_kind(gql: GraphQL, kind: str) -> list[Any]:
    return [m for m in await messages(db_of(gql)) if m.kind == kind]


async def test_the_same_answer_and_work_for_every_address(gql: GraphQL) -> None:
    admin = await gql.admin()
    await gql.register("ann")  # verified below
    dan = await gql.register("dan")  # disabled below
    await gql.register("una")  # unverified
    db = db_of(gql)
    await gql.ok(VERIFY, {"token": await latest_token(db, "ann@example.com", "verify_email")})
    await gql.ok(
        SET_ACTIVE, {"input": {"userId": dan.id, "active": False}}, token=admin.access_token
    )

    addresses = ["ann@example.com", "nobody@example.com", "dan@example.com", "una@example.com"]
    responses = [await gql.post(REQUEST, {"input": {"email": a}}) for a in addresses]
    assert [r.status_code for r in responses] == [200] * 4
    assert [r.content for r in responses] == [responses[0].content] * 4
    assert responses[0].json() == OK

    # One token row and one message per request; only an active account's is sent.
    resets = await messages_of_kind(gql, "reset_password")
    assert kinds(resets) == [
        ("reset_password", "ann@example.com", "pending"),
        ("reset_password", "nobody@example.com", "suppressed"),
        ("reset_password", "dan@example.com", "suppressed"),
        ("reset_password", "una@example.com", "pending"),
    ]
    tokens = await token_rows(db, "reset_password")
    assert [(t.email, t.user_id is None, t.used_at) for t in tokens] == [
        ("ann@example.com", False, None),
        ("nobody@example.com", True, None),
        ("dan@example.com", True, None),
        ("una@example.com", False, None),
    ]
    # The suppressed ones have bodies like any other (same rendering work), but are never sent.
    for row in resets:
        assert token_in(row)


async def test_an_address_in_another_case_finds_the_account(gql: GraphQL) -> None:
    await gql.register("ann", email="Ann.Smith@example.com")
    assert await request(gql, "  ANN.SMITH@Example.COM ") == OK
    assert kinds(await messages_of_kind(gql, "reset_password")) == [
        ("reset_password", "Ann.Smith@example.com", "pending")
    ]


async def test_a_username_is_not_an_address(gql: GraphQL) -> None:
    await gql.register("ann")
    body = await request(gql, "ann")
    assert problems(body["data"]["requestPasswordReset"]) == [("INVALID_EMAIL", ["input", "email"])]
    assert await messages_of_kind(gql, "reset_password") == []


@pytest.mark.parametrize("email", ["", "not-an-email", "ann@", "a" * 250 + "@example.com"])
async def test_invalid_email(gql: GraphQL, email: str) -> None:
    body = await request(gql, email)
    payload = body["data"]["requestPasswordReset"]
    assert problems(payload) == [("INVALID_EMAIL", ["input", "email"])]
    assert payload["userErrors"][0]["message"]
    assert await messages(db_of(gql)) == []
    assert await token_rows(db_of(gql)) == []


async def test_a_newer_request_retires_the_older_link(gql: GraphQL) -> None:
    await gql.register("ann")
    await request(gql, "ann@example.com")
    await request(gql, "ann@example.com")
    older, newer = await token_rows(db_of(gql), "reset_password")
    assert older.used_at is not None
    assert newer.used_at is None
    # The verification token of the same account is another purpose: left open.
    [verification] = await token_rows(db_of(gql), "verify_email")
    assert verification.used_at is None


# --- throttling ------------------------------------------------------------------------------


def assert_rate_limited(body: dict[str, Any], window: int) -> None:
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    retry_after = error["extensions"]["retryAfter"]
    assert isinstance(retry_after, int) and 0 < retry_after <= window


async def test_requests_per_address_are_limited(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, email_address_limit="2/hour") as gql:
        name = unique("ann")
        await gql.register(name)
        address = f"{name}@example.com"
        db = db_of(gql)
        assert await request(gql, address) == OK
        assert await request(gql, address.upper()) == OK  # one address in any case
        refused = await request(gql, address)
        assert_rate_limited(refused, 3600)
        rows = [m for m in await messages(db) if m.to_address == address]
        assert kinds(rows)[1:] == [("reset_password", address, "pending")] * 2
        # From another client ip too: the limit is the address's.
        async with http_client(gql.app, peer="198.51.100.9") as other_client:
            other = GraphQL(client=other_client, app=gql.app)
            assert error_codes(await request(other, address)) == ["RATE_LIMITED"]
        # An unknown address is limited alike, so the refusal tells nothing either.
        nobody = f"{unique('nobody')}@example.com"
        assert await request(gql, nobody) == OK
        assert await request(gql, nobody) == OK
        assert_rate_limited(await request(gql, nobody), 3600)
        # Another address is still allowed.
        assert await request(gql, f"{unique('cy')}@example.com") == OK


async def test_requests_per_ip_are_limited(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, email_ip_limit="2/hour") as gql:
        assert await request(gql, f"{unique('a')}@example.com") == OK
        assert await request(gql, f"{unique('b')}@example.com") == OK
        last = f"{unique('c')}@example.com"
        assert_rate_limited(await request(gql, last), 3600)
        assert [m for m in await messages(db_of(gql)) if m.to_address == last] == []
        # Another client ip has its own window.
        async with http_client(gql.app, peer="198.51.100.9") as other_client:
            other = GraphQL(client=other_client, app=gql.app)
            assert await request(other, last) == OK


async def test_an_invalid_address_is_not_counted(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, email_ip_limit="1/hour") as gql:
        body = await request(gql, "not-an-email")
        assert problems(body["data"]["requestPasswordReset"]) == [
            ("INVALID_EMAIL", ["input", "email"])
        ]
        assert await request(gql, f"{unique('a')}@example.com") == OK


# --- what is logged --------------------------------------------------------------------------


async def test_security_log_and_no_token_in_answers_or_warnings(
    gql: GraphQL, caplog: pytest.LogCaptureFixture
) -> None:
    await gql.register("ann")
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    known = await gql.post(REQUEST, {"input": {"email": "ann@example.com"}})
    unknown = await gql.post(REQUEST, {"input": {"email": "nobody@example.com"}})
    token = await latest_token(db_of(gql), "ann@example.com", "reset_password")
    for response in (known, unknown):
        assert token not in response.text
        assert ANY_TOKEN.search(response.text) is None
    [user_id] = {t.user_id for t in await token_rows(db_of(gql), "reset_password")} - {None}
    security = [r.getMessage() for r in caplog.records if r.name == "usergraph.security"]
    assert security == [
        f"event=reset_password_requested user_id={user_id}",
        "event=reset_password_requested user_id=-",
    ]
    for record in caplog.records:
        if record.levelno >= logging.WARNING:
            assert ANY_TOKEN.search(record.getMessage()) is None, record.getMessage()
