"""Mutation.changePassword over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client import DEFAULT_PASSWORD, GraphQL
from tests.helpers import assert_only_error, me, problems, refresh, refresh_codes, session_count

CHANGE = """mutation($input: ChangePasswordInput!) { changePassword(input: $input) {
  user { id username } userErrors { field message code }
} }"""
NEW_PASSWORD = "a brand new passphrase 42"


async def change(
    gql: GraphQL, token: str | None, current: str, new: str = NEW_PASSWORD
) -> dict[str, Any]:
    data = await gql.ok(
        CHANGE, {"input": {"currentPassword": current, "newPassword": new}}, token=token
    )
    payload: dict[str, Any] = data["changePassword"]
    return payload


async def login_codes(gql: GraphQL, login: str, password: str) -> list[str]:
    return [error["code"] for error in (await gql.login(login, password))["userErrors"]]


async def test_change_password(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    payload = await change(gql, ann.access_token, DEFAULT_PASSWORD)
    assert payload == {"user": {"id": ann.id, "username": "ann"}, "userErrors": []}
    assert await login_codes(gql, "ann", DEFAULT_PASSWORD) == ["INVALID_CREDENTIALS"]
    assert await login_codes(gql, "ann@example.com", DEFAULT_PASSWORD) == ["INVALID_CREDENTIALS"]
    assert await login_codes(gql, "ann", NEW_PASSWORD) == []
    assert await login_codes(gql, "ann@example.com", NEW_PASSWORD) == []


async def test_change_password_with_a_wrong_current_password(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    other = await gql.login("ann")
    payload = await change(gql, ann.access_token, "not my password")
    assert payload["user"] is None
    assert problems(payload) == [("INVALID_CREDENTIALS", ["input", "currentPassword"])]
    assert payload["userErrors"][0]["message"]
    # Nothing changed: the old password still works, the new one does not, sessions live on.
    assert await login_codes(gql, "ann", DEFAULT_PASSWORD) == []
    assert await login_codes(gql, "ann", NEW_PASSWORD) == ["INVALID_CREDENTIALS"]
    assert await me(gql, other["accessToken"]) == {"id": ann.id, "username": "ann"}


@pytest.mark.parametrize(
    "new_password",
    [
        pytest.param("Sh0rt!x", id="too-short"),
        pytest.param("x" * 129, id="too-long"),
        pytest.param("AnnSmith", id="equals-username"),
        pytest.param("ANNSMITH@example.com", id="equals-email"),
        pytest.param("12345678", id="common"),
        pytest.param("Baseball", id="common-any-case"),
    ],
)
async def test_change_password_to_a_weak_one(gql: GraphQL, new_password: str) -> None:
    ann = await gql.register("annsmith", email="annsmith@example.com")
    other = await gql.login("annsmith")
    payload = await change(gql, ann.access_token, DEFAULT_PASSWORD, new_password)
    assert payload["user"] is None
    assert problems(payload) == [("WEAK_PASSWORD", ["input", "newPassword"])]
    message = payload["userErrors"][0]["message"]
    assert message and new_password not in message
    assert await login_codes(gql, "annsmith", DEFAULT_PASSWORD) == []
    assert await login_codes(gql, "annsmith", new_password) == ["INVALID_CREDENTIALS"]
    assert await me(gql, other["accessToken"]) == {"id": ann.id, "username": "annsmith"}


async def test_change_password_ends_the_other_sessions_only(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    laptop = await gql.login("ann")
    phone = await gql.login("ann")
    bob = await gql.register("bob")

    payload = await change(gql, ann.access_token, DEFAULT_PASSWORD)
    assert payload["userErrors"] == []

    for other in (laptop, phone):
        assert await me(gql, other["accessToken"]) is None
        assert await refresh_codes(gql, other["refreshToken"]) == ["INVALID_REFRESH_TOKEN"]
    # The session that changed the password keeps working, and its refresh token too.
    assert await me(gql, ann.access_token) == {"id": ann.id, "username": "ann"}
    assert await session_count(gql, ann.access_token) == 1
    rotated = await refresh(gql, ann.refresh_token)
    assert rotated["userErrors"] == []
    assert await me(gql, rotated["accessToken"]) == {"id": ann.id, "username": "ann"}
    # Other users are untouched.
    assert await me(gql, bob.access_token) == {"id": bob.id, "username": "bob"}


async def test_change_password_twice(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    assert (await change(gql, ann.access_token, DEFAULT_PASSWORD))["userErrors"] == []
    # The old password is no longer the current one.
    payload = await change(gql, ann.access_token, DEFAULT_PASSWORD, "yet another passphrase 7")
    assert problems(payload) == [("INVALID_CREDENTIALS", ["input", "currentPassword"])]
    payload = await change(gql, ann.access_token, NEW_PASSWORD, "yet another passphrase 7")
    assert payload["userErrors"] == []
    assert await login_codes(gql, "ann", "yet another passphrase 7") == []


async def test_change_password_anonymous(gql: GraphQL) -> None:
    body = await gql(
        CHANGE, {"input": {"currentPassword": DEFAULT_PASSWORD, "newPassword": NEW_PASSWORD}}
    )
    assert_only_error(body, "UNAUTHENTICATED", ["changePassword"])


async def test_change_password_with_an_ended_session(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    data = await gql.ok("mutation { logout { revokedSessions } }", token=ann.access_token)
    assert data["logout"]["revokedSessions"] == 1
    body = await gql(
        CHANGE,
        {"input": {"currentPassword": DEFAULT_PASSWORD, "newPassword": NEW_PASSWORD}},
        token=ann.access_token,
    )
    assert [error["extensions"]["code"] for error in body["errors"]] == ["UNAUTHENTICATED"]
    assert await login_codes(gql, "ann", DEFAULT_PASSWORD) == []
