"""Mutation.requestEmailVerification over HTTP, and the verification email of a registration."""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.client import DEFAULT_PASSWORD, GraphQL, serving
from tests.helpers import TOKEN_FIELDS, error_codes, problems
from tests.mail_rows import ANY_TOKEN, db_of, kinds, latest_token, messages, token_in, token_rows

REQUEST = """mutation($input: RequestEmailVerificationInput) {
  requestEmailVerification(input: $input) { userErrors { field message code } }
}"""
REQUEST_NO_INPUT = "mutation { requestEmailVerification { userErrors { field message code } } }"
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken refreshToken tokenType accessTokenExpiresAt refreshTokenExpiresAt
  user { id username emailVerified emailVerifiedAt }
  userErrors { field message code }
} }"""
VERIFY = """mutation($token: String!) { verifyEmail(input: {token: $token}) {
  user { emailVerified } userErrors { code }
} }"""
SET_ACTIVE = """mutation($input: SetUserActiveInput!) { setUserActive(input: $input) {
  user { isActive } userErrors { code }
} }"""
OK: dict[str, Any] = {"data": {"requestEmailVerification": {"userErrors": []}}}


def register_input(username: str, email: str | None = None) -> dict[str, Any]:
    return {
        "input": {
            "email": email or f"{username}@example.com",
            "username": username,
            "password": DEFAULT_PASSWORD,
        }
    }


def unique(name: str) -> str:
    """A fresh username (apps built with serving() share the test's database, unemptied)."""
    return f"{name}{uuid.uuid4().hex[:10]}"


async def request(gql: GraphQL, email: str | None = None, *, token: str | None = None) -> Any:
    return await gql(REQUEST, {"input": {"email": email}}, token=token)


async def verify(gql: GraphQL, token: str) -> dict[str, Any]:
    payload: dict[str, Any] = (await gql.ok(VERIFY, {"token": token}))["verifyEmail"]
    return payload


# --- at registration -------------------------------------------------------------------------


async def test_registration_writes_a_verification_email(gql: GraphQL) -> None:
    payload = (await gql.ok(REGISTER, register_input("ann")))["register"]
    # Optional verification (the default): signed in as before, not yet verified.
    assert payload["userErrors"] == []
    assert payload["accessToken"] and payload["refreshToken"]
    assert payload["user"]["emailVerified"] is False
    assert payload["user"]["emailVerifiedAt"] is None

    [message] = await messages(db_of(gql))
    assert kinds([message]) == [("verify_email", "ann@example.com", "pending")]
    assert message.subject == "Verify your email address for usergraph"
    assert "Hello ann," in message.text_body
    assert "expires in 24 hours" in message.text_body
    token = token_in(message)
    assert f"http://127.0.0.1:8000/verify-email#token={token}" in message.text_body
    [row] = await token_rows(db_of(gql))
    assert (row.purpose, row.email, row.used_at) == ("verify_email", "ann@example.com", None)
    assert row.user_id is not None
    # Only the token's SHA-256 is kept.
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert row.expires_at - row.created_at == timedelta(hours=24)


async def test_off_mode_registration_sends_nothing(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, email_verification="off") as gql:
        username = unique("ann")
        payload = (await gql.ok(REGISTER, register_input(username)))["register"]
        assert payload["userErrors"] == []
        assert payload["accessToken"] and payload["refreshToken"]
        assert payload["user"]["emailVerified"] is False
        db = db_of(gql)
        assert [m for m in await messages(db) if m.to_address == f"{username}@example.com"] == []
        assert [r for r in await token_rows(db) if r.email == f"{username}@example.com"] == []


async def test_required_mode_registration_answers_no_tokens_and_sends_the_email(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, email_verification="required") as gql:
        username = unique("ann")
        response = await gql.post(REGISTER, register_input(username))
        payload = response.json()["data"]["register"]
        assert payload["userErrors"] == []
        for key in TOKEN_FIELDS:
            assert payload[key] is None, key
        assert "set-cookie" not in response.headers
        rows = [m for m in await messages(db_of(gql)) if m.to_address == f"{username}@example.com"]
        assert kinds(rows) == [("verify_email", f"{username}@example.com", "pending")]


async def test_required_mode_answers_a_taken_address_like_a_new_one(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, email_verification="required") as gql:
        owner, fresh, other = unique("ann"), unique("bob"), unique("cy")
        await gql.ok(REGISTER, register_input(owner))
        new_address = await gql.post(REGISTER, register_input(fresh))
        taken_address = await gql.post(
            REGISTER, register_input(other, email=f"{owner.upper()}@example.com")
        )
        assert new_address.status_code == taken_address.status_code == 200
        assert taken_address.content == new_address.content
        assert new_address.json() == {
            "data": {
                "register": {
                    "accessToken": None,
                    "refreshToken": None,
                    "tokenType": None,
                    "accessTokenExpiresAt": None,
                    "refreshTokenExpiresAt": None,
                    "user": None,
                    "userErrors": [],
                }
            }
        }
        db = db_of(gql)
        owner_rows = [m for m in await messages(db) if m.to_address == f"{owner}@example.com"]
        # The owner gets a notice (no link), nobody a second verification link.
        assert kinds(owner_rows) == [
            ("verify_email", f"{owner}@example.com", "pending"),
            ("account_exists", f"{owner}@example.com", "pending"),
        ]
        assert ANY_TOKEN.search(owner_rows[1].text_body) is None
        assert f"Hello {owner}," in owner_rows[1].text_body
        # The taken attempt created no account: its username is still free.
        again = (await gql.ok(REGISTER, register_input(other)))["register"]
        assert again["userErrors"] == []


async def test_required_mode_still_names_a_taken_username(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, email_verification="required") as gql:
        owner = unique("ann")
        await gql.ok(REGISTER, register_input(owner))
        payload = (
            await gql.ok(REGISTER, register_input(owner, email=f"{unique('x')}@example.com"))
        )["register"]
        assert problems(payload) == [("USERNAME_TAKEN", ["input", "username"])]


# --- signed in -------------------------------------------------------------------------------


async def test_signed_in_sends_a_new_link_that_replaces_the_old_one(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    db = db_of(gql)
    first = await latest_token(db, "ann@example.com", "verify_email")
    assert await request(gql, token=ann.access_token) == OK
    rows = await messages(db)
    assert kinds(rows) == [("verify_email", "ann@example.com", "pending")] * 2
    second = token_in(rows[1])
    assert second != first
    old, new = await token_rows(db, "verify_email")
    assert old.used_at is not None and new.used_at is None
    assert (await verify(gql, first))["userErrors"] == [{"code": "INVALID_TOKEN"}]
    # Signed out, the payload's user is someone else's: emailVerified is null there.
    assert await verify(gql, second) == {"user": {"emailVerified": None}, "userErrors": []}
    me = (await gql.ok("{ me { emailVerified } }", token=ann.access_token))["me"]
    assert me == {"emailVerified": True}


async def test_signed_in_goes_to_the_viewers_address_whatever_email_says(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    await gql.register("bob")
    assert await request(gql, "bob@example.com", token=ann.access_token) == OK
    rows = await messages(db_of(gql))
    assert kinds(rows[2:]) == [("verify_email", "ann@example.com", "pending")]


async def test_signed_in_and_verified_is_email_already_verified(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    db = db_of(gql)
    await verify(gql, await latest_token(db, "ann@example.com", "verify_email"))
    before = len(await messages(db))
    body = await request(gql, token=ann.access_token)
    payload = body["data"]["requestEmailVerification"]
    assert problems(payload) == [("EMAIL_ALREADY_VERIFIED", [])]
    assert payload["userErrors"][0]["message"] == "This email address is already verified."
    assert len(await messages(db)) == before


async def test_signed_in_without_input(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    assert await gql(REQUEST_NO_INPUT, token=ann.access_token) == OK
    assert len(await messages(db_of(gql))) == 2


# --- signed out ------------------------------------------------------------------------------


async def test_signed_out_answers_alike_for_known_unknown_verified_and_disabled_addresses(
    gql: GraphQL,
) -> None:
    admin = await gql.admin()
    await gql.register("ann")
    await gql.register("vic")
    dan = await gql.register("dan")
    db = db_of(gql)
    await verify(gql, await latest_token(db, "vic@example.com", "verify_email"))
    await gql.ok(
        SET_ACTIVE, {"input": {"userId": dan.id, "active": False}}, token=admin.access_token
    )
    before = len(await messages(db))
    tokens_before = len(await token_rows(db))

    addresses = ["ann@example.com", "nobody@example.com", "vic@example.com", "dan@example.com"]
    responses = [await gql.post(REQUEST, {"input": {"email": address}}) for address in addresses]
    assert {response.status_code for response in responses} == {200}
    assert {response.content for response in responses} == {responses[0].content}
    assert responses[0].json() == OK

    # The same work for each: one token row and one message; only the unverified active
    # account's is sent.
    rows = (await messages(db))[before:]
    assert kinds(rows) == [
        ("verify_email", "ann@example.com", "pending"),
        ("verify_email", "nobody@example.com", "suppressed"),
        ("verify_email", "vic@example.com", "suppressed"),
        ("verify_email", "dan@example.com", "suppressed"),
    ]
    tokens = (await token_rows(db))[tokens_before:]
    assert [(t.purpose, t.email, t.user_id is None) for t in tokens] == [
        ("verify_email", "ann@example.com", False),
        ("verify_email", "nobody@example.com", True),
        ("verify_email", "vic@example.com", True),
        ("verify_email", "dan@example.com", True),
    ]
    # A suppressed message's link matches no account.
    for row in rows[1:]:
        assert (await verify(gql, token_in(row)))["userErrors"] == [{"code": "INVALID_TOKEN"}]


async def test_signed_out_finds_the_account_in_any_case(gql: GraphQL) -> None:
    await gql.register("ann", email="Ann.Smith@example.com")
    assert await request(gql, "ANN.SMITH@EXAMPLE.COM") == OK
    rows = await messages(db_of(gql))
    # Sent to the address as the account has it.
    assert kinds(rows) == [("verify_email", "Ann.Smith@example.com", "pending")] * 2


@pytest.mark.parametrize("email", ["not-an-email", "ann@", "@example.com", "a b@example.com"])
async def test_signed_out_invalid_email(gql: GraphQL, email: str) -> None:
    body = await request(gql, email)
    assert problems(body["data"]["requestEmailVerification"]) == [
        ("INVALID_EMAIL", ["input", "email"])
    ]
    assert await messages(db_of(gql)) == []


@pytest.mark.parametrize(
    "variables",
    [
        pytest.param(None, id="no-input"),
        pytest.param({"input": {}}, id="no-email"),
        pytest.param({"input": {"email": None}}, id="null-email"),
    ],
)
async def test_signed_out_needs_an_email(gql: GraphQL, variables: dict[str, Any] | None) -> None:
    body = await gql(REQUEST if variables else REQUEST_NO_INPUT, variables)
    payload = body["data"]["requestEmailVerification"]
    assert problems(payload) == [("INVALID_INPUT", ["input", "email"])]
    assert payload["userErrors"][0]["message"] == "Give the email address."
    assert await messages(db_of(gql)) == []


# --- throttling ------------------------------------------------------------------------------


def assert_rate_limited(body: dict[str, Any], window: int) -> None:
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    retry_after = error["extensions"]["retryAfter"]
    assert isinstance(retry_after, int) and 0 < retry_after <= window


async def test_requests_per_address_are_limited_signed_in_or_out(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, email_address_limit="2/hour") as gql:
        name = unique("ann")
        ann = (await gql.ok(REGISTER, register_input(name)))["register"]
        db = db_of(gql)
        before = len(await messages(db))
        # Registration's own email is not counted; the signed-in and the signed-out requests
        # share the address's window (in any case).
        assert await request(gql, token=ann["accessToken"]) == OK
        assert await request(gql, f"{name.upper()}@EXAMPLE.COM") == OK
        refused = await request(gql, f"{name}@example.com")
        assert_rate_limited(refused, 3600)
        assert_rate_limited(await request(gql, token=ann["accessToken"]), 3600)
        assert len(await messages(db)) == before + 2
        # Another address has its own window; an unknown one is counted alike.
        nobody = f"{unique('nobody')}@example.com"
        assert await request(gql, nobody) == OK
        assert await request(gql, nobody) == OK
        assert error_codes(await request(gql, nobody)) == ["RATE_LIMITED"]


async def test_requests_per_ip_are_limited(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, email_ip_limit="2/hour") as gql:
        assert await request(gql, f"{unique('a')}@example.com") == OK
        assert await request(gql, f"{unique('b')}@example.com") == OK
        assert_rate_limited(await request(gql, f"{unique('c')}@example.com"), 3600)


# --- what is logged --------------------------------------------------------------------------


async def test_security_log_and_no_token_in_answers_or_warnings(
    gql: GraphQL, caplog: pytest.LogCaptureFixture
) -> None:
    ann = await gql.register("ann")
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    signed_out = await gql.post(REQUEST, {"input": {"email": "nobody@example.com"}})
    signed_in = await gql.post(REQUEST, {"input": None}, token=ann.access_token)
    for response in (signed_out, signed_in):
        assert ANY_TOKEN.search(response.text) is None
    security = [r.getMessage() for r in caplog.records if r.name == "usergraph.security"]
    assert "event=verify_email_requested user_id=-" in security
    for record in caplog.records:
        if record.levelno >= logging.WARNING:
            assert ANY_TOKEN.search(record.getMessage()) is None, record.getMessage()


async def test_a_signed_in_request_is_logged(
    gql: GraphQL, caplog: pytest.LogCaptureFixture
) -> None:
    ann = await gql.register("ann")
    [row] = await token_rows(db_of(gql))
    caplog.set_level(logging.INFO, logger="usergraph.security")
    caplog.clear()
    assert await request(gql, token=ann.access_token) == OK
    security = [r.getMessage() for r in caplog.records if r.name == "usergraph.security"]
    assert security == [f"event=verify_email_requested user_id={row.user_id}"]
