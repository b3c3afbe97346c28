"""Mutation.logout over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client import GraphQL
from tests.helpers import (
    assert_only_error,
    error_codes,
    me,
    refresh,
    refresh_codes,
    session_count,
    tampered,
)

LOGOUT = """mutation($input: LogoutInput) { logout(input: $input) {
  revokedSessions userErrors { field message code }
} }"""


async def logout(
    gql: GraphQL, *, refresh_token: str | None = None, token: str | None = None
) -> dict[str, Any]:
    variables = {"input": {"refreshToken": refresh_token}} if refresh_token else {}
    payload: dict[str, Any] = (await gql.ok(LOGOUT, variables, token=token))["logout"]
    return payload


async def test_logout_with_the_refresh_token_alone(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    payload = await logout(gql, refresh_token=ann.refresh_token)
    assert payload == {"revokedSessions": 1, "userErrors": []}
    assert await refresh_codes(gql, ann.refresh_token) == ["INVALID_REFRESH_TOKEN"]
    assert await me(gql, ann.access_token) is None


async def test_logout_with_the_refresh_token_ends_that_session_not_the_callers(
    gql: GraphQL,
) -> None:
    ann = await gql.register("ann")
    phone = await gql.login("ann")
    # The refresh token names the session to end, whichever access token comes along.
    payload = await logout(gql, refresh_token=phone["refreshToken"], token=ann.access_token)
    assert payload == {"revokedSessions": 1, "userErrors": []}
    assert await me(gql, phone["accessToken"]) is None
    assert await me(gql, ann.access_token) == {"id": ann.id, "username": "ann"}


@pytest.mark.parametrize("variables", [{}, {"input": None}, {"input": {}}])
async def test_logout_with_the_access_token_ends_the_current_session(
    gql: GraphQL, variables: dict[str, Any]
) -> None:
    ann = await gql.register("ann")
    data = await gql.ok(LOGOUT, variables, token=ann.access_token)
    assert data["logout"] == {"revokedSessions": 1, "userErrors": []}
    assert await me(gql, ann.access_token) is None
    assert await refresh_codes(gql, ann.refresh_token) == ["INVALID_REFRESH_TOKEN"]


async def test_logout_without_input_argument(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    data = await gql.ok("mutation { logout { revokedSessions } }", token=ann.access_token)
    assert data["logout"] == {"revokedSessions": 1}
    assert await me(gql, ann.access_token) is None


async def test_logout_twice_with_the_refresh_token(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    assert (await logout(gql, refresh_token=ann.refresh_token))["revokedSessions"] == 1
    assert await logout(gql, refresh_token=ann.refresh_token) == {
        "revokedSessions": 0,
        "userErrors": [],
    }


async def test_logout_twice_with_the_access_token(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    assert (await logout(gql, token=ann.access_token))["revokedSessions"] == 1
    assert await logout(gql, token=ann.access_token) == {"revokedSessions": 0, "userErrors": []}


async def test_logout_after_a_refresh_ends_the_rotated_session(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    rotated = await refresh(gql, ann.refresh_token)
    assert rotated["userErrors"] == []
    assert await logout(gql, refresh_token=rotated["refreshToken"]) == {
        "revokedSessions": 1,
        "userErrors": [],
    }
    assert await me(gql, rotated["accessToken"]) is None
    assert await refresh_codes(gql, rotated["refreshToken"]) == ["INVALID_REFRESH_TOKEN"]


@pytest.mark.parametrize(
    "variables", [{}, {"input": None}, {"input": {}}, {"input": {"refreshToken": None}}]
)
async def test_logout_anonymous_without_a_token(gql: GraphQL, variables: dict[str, Any]) -> None:
    body = await gql(LOGOUT, variables)
    assert_only_error(body, "UNAUTHENTICATED", ["logout"])


async def test_logout_with_a_tampered_access_token(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    body = await gql(LOGOUT, token=tampered(ann.access_token))
    assert error_codes(body) == ["UNAUTHENTICATED"]
    # Nothing was ended.
    assert await me(gql, ann.access_token) == {"id": ann.id, "username": "ann"}


@pytest.mark.parametrize("refresh_token", ["garbage", "ugr_" + "A" * 43])
async def test_logout_with_an_unknown_refresh_token(gql: GraphQL, refresh_token: str) -> None:
    ann = await gql.register("ann")
    payload = await logout(gql, refresh_token=refresh_token, token=ann.access_token)
    assert payload["revokedSessions"] == 0
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
        ("INVALID_REFRESH_TOKEN", ["input", "refreshToken"])
    ]
    assert payload["userErrors"][0]["message"]
    # The caller's own session is not ended instead.
    assert await me(gql, ann.access_token) == {"id": ann.id, "username": "ann"}


async def test_logout_leaves_other_sessions_alone(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    laptop = await gql.login("ann")
    phone = await gql.login("ann")
    bob = await gql.register("bob")

    assert (await logout(gql, refresh_token=ann.refresh_token))["revokedSessions"] == 1
    assert (await logout(gql, token=laptop["accessToken"]))["revokedSessions"] == 1

    assert await me(gql, ann.access_token) is None
    assert await me(gql, laptop["accessToken"]) is None
    assert await me(gql, phone["accessToken"]) == {"id": ann.id, "username": "ann"}
    assert await session_count(gql, phone["accessToken"]) == 1
    assert await refresh_codes(gql, phone["refreshToken"]) == []
    assert await me(gql, bob.access_token) == {"id": bob.id, "username": "bob"}
    assert await refresh_codes(gql, bob.refresh_token) == []
