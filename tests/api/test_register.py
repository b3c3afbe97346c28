"""Mutation.register over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from tests.client import DEFAULT_PASSWORD, GraphQL
from tests.helpers import assert_no_tokens, problems

REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken refreshToken tokenType accessTokenExpiresAt refreshTokenExpiresAt
  user { id username email displayName isActive roles { name } }
  userErrors { field message code }
} }"""
ME = "{ me { id username email } }"
SESSIONS = "{ me { sessions { totalCount edges { node { ipAddress userAgent current } } } } }"
USER_AGENT = "usergraph-tests/1.0 (register)"


async def register(gql: GraphQL, **fields: Any) -> dict[str, Any]:
    values = {
        "email": "ann@example.com",
        "username": "ann",
        "password": DEFAULT_PASSWORD,
        **fields,
    }
    payload: dict[str, Any] = (await gql.ok(REGISTER, {"input": values}))["register"]
    return payload


def assert_rejected(payload: dict[str, Any]) -> None:
    """A refused registration hands out nothing."""
    assert_no_tokens(payload)
    assert payload["userErrors"], payload


async def assert_cannot_log_in(gql: GraphQL, *logins: str) -> None:
    for login in logins:
        payload = await gql.login(login)
        assert [e["code"] for e in payload["userErrors"]] == ["INVALID_CREDENTIALS"], login
        assert payload["accessToken"] is None


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


async def test_register_signs_the_new_account_in(gql: GraphQL) -> None:
    payload = await register(gql, displayName="Ann Smith")
    assert payload["userErrors"] == []
    assert payload["tokenType"] == "Bearer"
    assert isinstance(payload["accessToken"], str) and payload["accessToken"]
    assert isinstance(payload["refreshToken"], str) and payload["refreshToken"]
    assert payload["accessToken"] != payload["refreshToken"]
    user = payload["user"]
    assert user["username"] == "ann"
    assert user["displayName"] == "Ann Smith"
    assert user["isActive"] is True
    assert user["roles"] == [{"name": "user"}]

    access_expires = parse_time(payload["accessTokenExpiresAt"])
    refresh_expires = parse_time(payload["refreshTokenExpiresAt"])
    assert access_expires > datetime.now(UTC)
    assert refresh_expires > access_expires
    claims = jwt.decode(payload["accessToken"], options={"verify_signature": False})
    assert claims["exp"] == int(access_expires.timestamp())

    me = (await gql.ok(ME, token=payload["accessToken"]))["me"]
    assert me == {"id": user["id"], "username": "ann", "email": "ann@example.com"}


async def test_register_payload_shows_the_new_user_their_private_fields(gql: GraphQL) -> None:
    # The payload's user is the account that just signed in: its own email and lastLoginAt are
    # visible to it (the contract: "visible to the user"), even though the request carried no
    # access token yet.
    data = await gql.ok(
        """mutation($input: RegisterInput!) { register(input: $input) {
             user { email lastLoginAt } userErrors { code }
           } }""",
        {"input": {"email": "Ann@Example.com", "username": "ann", "password": DEFAULT_PASSWORD}},
    )
    payload = data["register"]
    assert payload["userErrors"] == []
    assert payload["user"]["email"] == "Ann@example.com"
    assert payload["user"]["lastLoginAt"] is not None


async def test_register_can_log_in_afterwards_by_email_and_username(gql: GraphQL) -> None:
    registered = await register(gql)
    for login in ("ann", "ann@example.com"):
        payload = await gql.login(login)
        assert payload["userErrors"] == []
        assert payload["user"]["id"] == registered["user"]["id"]


async def test_register_stores_the_username_lower_case(gql: GraphQL) -> None:
    payload = await register(gql, username="AnnSmith", email="ann@example.com")
    assert payload["userErrors"] == []
    assert payload["user"]["username"] == "annsmith"
    me = (await gql.ok(ME, token=payload["accessToken"]))["me"]
    assert me["username"] == "annsmith"
    assert (await gql.login("annsmith"))["userErrors"] == []
    # The lower-cased name is the one that is taken.
    again = await register(gql, username="annsmith", email="other@example.com")
    assert problems(again) == [("USERNAME_TAKEN", ["input", "username"])]


@pytest.mark.parametrize(
    "email",
    [
        "",
        "not-an-email",
        "ann@",
        "@example.com",
        "ann smith@example.com",
        "ann@@example.com",
        "ann@example",
        "a" * 250 + "@example.com",
    ],
)
async def test_register_invalid_email(gql: GraphQL, email: str) -> None:
    payload = await register(gql, email=email)
    assert_rejected(payload)
    assert problems(payload) == [("INVALID_EMAIL", ["input", "email"])]
    assert payload["userErrors"][0]["message"]
    await assert_cannot_log_in(gql, "ann")


@pytest.mark.parametrize(
    "username",
    [
        pytest.param("", id="empty"),
        pytest.param("ab", id="too-short"),
        pytest.param("a" * 31, id="too-long"),
        pytest.param("1ann", id="leading-digit"),
        pytest.param("_ann", id="leading-underscore"),
        pytest.param("ann_", id="trailing-underscore"),
        pytest.param("ann-smith", id="hyphen"),
        pytest.param("ann smith", id="space"),
        pytest.param("ann.smith", id="dot"),
        pytest.param("ann@smith", id="at-sign"),
        pytest.param("émile", id="non-ascii"),
    ],
)
async def test_register_invalid_username(gql: GraphQL, username: str) -> None:
    payload = await register(gql, username=username)
    assert_rejected(payload)
    assert problems(payload) == [("INVALID_USERNAME", ["input", "username"])]
    await assert_cannot_log_in(gql, "ann@example.com")


@pytest.mark.parametrize("username", ["abc", "a" * 30, "a_b", "ann_1", "a1b2"])
async def test_register_accepts_usernames_at_the_limits(gql: GraphQL, username: str) -> None:
    payload = await register(gql, username=username)
    assert payload["userErrors"] == []
    assert payload["user"]["username"] == username


@pytest.mark.parametrize(
    ("username", "email", "password"),
    [
        pytest.param("annsmith", "ann@example.com", "Sh0rt!x", id="too-short"),
        pytest.param("annsmith", "ann@example.com", "x" * 129, id="too-long"),
        pytest.param("annsmith", "ann@example.com", "AnnSmith", id="equals-username"),
        pytest.param("annsmith", "ann@example.com", "ANN@example.com", id="equals-email"),
        pytest.param("annsmith", "ann@example.com", "12345678", id="common"),
        pytest.param("annsmith", "ann@example.com", "Baseball", id="common-any-case"),
        pytest.param("annsmith", "ann@example.com", "iloveyou", id="common-2"),
    ],
)
async def test_register_weak_password(
    gql: GraphQL, username: str, email: str, password: str
) -> None:
    payload = await register(gql, username=username, email=email, password=password)
    assert_rejected(payload)
    assert problems(payload) == [("WEAK_PASSWORD", ["input", "password"])]
    # The message explains the rule without echoing the password.
    message = payload["userErrors"][0]["message"]
    assert message and password not in message
    await assert_cannot_log_in(gql, username, email)


@pytest.mark.parametrize("password", ["x7Kq!pZ2", "Zq9#" * 32])
async def test_register_accepts_passwords_at_the_length_limits(gql: GraphQL, password: str) -> None:
    payload = await register(gql, password=password)
    assert payload["userErrors"] == []
    assert (await gql.login("ann", password))["userErrors"] == []


@pytest.mark.parametrize("email", ["ann@example.com", "ANN@EXAMPLE.COM", "Ann@Example.com"])
async def test_register_email_taken_in_any_case(gql: GraphQL, email: str) -> None:
    await register(gql, email="ann@example.com", username="ann")
    payload = await register(gql, email=email, username="bob")
    assert_rejected(payload)
    assert problems(payload) == [("EMAIL_TAKEN", ["input", "email"])]
    # The rejected attempt created nothing: its username is still free.
    await assert_cannot_log_in(gql, "bob")
    assert (await register(gql, email="bob@example.com", username="bob"))["userErrors"] == []


@pytest.mark.parametrize("username", ["ann", "ANN", "Ann"])
async def test_register_username_taken(gql: GraphQL, username: str) -> None:
    await register(gql, email="ann@example.com", username="ann")
    payload = await register(gql, email="bob@example.com", username=username)
    assert_rejected(payload)
    assert problems(payload) == [("USERNAME_TAKEN", ["input", "username"])]
    # The rejected attempt created nothing: its email is still free.
    await assert_cannot_log_in(gql, "bob@example.com")
    assert (await register(gql, email="bob@example.com", username="bob"))["userErrors"] == []


async def test_register_email_and_username_taken_together(gql: GraphQL) -> None:
    await register(gql, email="ann@example.com", username="ann")
    payload = await register(gql, email="Ann@example.com", username="Ann")
    assert_rejected(payload)
    assert sorted(problems(payload)) == [
        ("EMAIL_TAKEN", ["input", "email"]),
        ("USERNAME_TAKEN", ["input", "username"]),
    ]


async def test_register_reports_every_problem_at_once(gql: GraphQL) -> None:
    payload = await register(gql, email="not-an-email", username="1x", password="short")
    assert_rejected(payload)
    assert sorted(problems(payload)) == [
        ("INVALID_EMAIL", ["input", "email"]),
        ("INVALID_USERNAME", ["input", "username"]),
        ("WEAK_PASSWORD", ["input", "password"]),
    ]
    assert all(error["message"] for error in payload["userErrors"])


async def test_register_with_bad_input_creates_nothing(gql: GraphQL) -> None:
    # Only the password is wrong: neither the email nor the username may be taken afterwards.
    payload = await register(gql, email="ann@example.com", username="ann", password="password")
    assert_rejected(payload)
    await assert_cannot_log_in(gql, "ann", "ann@example.com")
    again = await register(gql, email="ann@example.com", username="ann")
    assert again["userErrors"] == []
    me = (await gql.ok(SESSIONS, token=again["accessToken"]))["me"]
    assert me["sessions"]["totalCount"] == 1


async def test_register_records_the_client_of_the_session(gql: GraphQL) -> None:
    response = await gql.post(
        REGISTER,
        {"input": {"email": "ann@example.com", "username": "ann", "password": DEFAULT_PASSWORD}},
        headers={"user-agent": USER_AGENT},
    )
    assert response.status_code == 200, response.text
    payload = response.json()["data"]["register"]
    assert payload["userErrors"] == []
    sessions = (await gql.ok(SESSIONS, token=payload["accessToken"]))["me"]["sessions"]
    assert sessions["totalCount"] == 1
    assert sessions["edges"] == [
        {"node": {"ipAddress": "203.0.113.7", "userAgent": USER_AGENT, "current": True}}
    ]
