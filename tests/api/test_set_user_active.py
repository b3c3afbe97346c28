"""Mutation.setUserActive over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client import GraphQL
from tests.helpers import assert_only_error
from usergraph.schema.relay import to_global_id

SET_ACTIVE = """mutation($input: SetUserActiveInput!) { setUserActive(input: $input) {
  user { id username isActive sessions { totalCount } }
  userErrors { field message code }
} }"""
ME = "{ me { id } }"
REFRESH = """mutation($input: RefreshInput!) { refresh(input: $input) {
  accessToken refreshToken userErrors { field code }
} }"""


async def set_active(gql: GraphQL, token: str | None, user_id: str, active: bool) -> Any:
    return await gql(SET_ACTIVE, {"input": {"userId": user_id, "active": active}}, token=token)


async def test_set_user_active_false_disables_and_ends_sessions(gql: GraphQL) -> None:
    admin = await gql.admin()
    bob = await gql.register("bob")
    second = await gql.login("bob")
    assert (await gql.ok(ME, token=bob.access_token))["me"] == {"id": bob.id}

    body = await set_active(gql, admin.access_token, bob.id, False)
    assert body == {
        "data": {
            "setUserActive": {
                "user": {
                    "id": bob.id,
                    "username": "bob",
                    "isActive": False,
                    "sessions": {"totalCount": 0},
                },
                "userErrors": [],
            }
        }
    }
    # Every access token of bob's stops working...
    for token in (bob.access_token, second["accessToken"]):
        assert await gql.ok(ME, token=token) == {"me": None}
        denied = await gql('{ user(username: "bob") { id } }', token=token)
        assert denied["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # ...every refresh token is refused...
    for refresh_token in (bob.refresh_token, second["refreshToken"]):
        refreshed = (await gql.ok(REFRESH, {"input": {"refreshToken": refresh_token}}))["refresh"]
        assert refreshed["accessToken"] is None
        assert refreshed["refreshToken"] is None
        assert [e["code"] for e in refreshed["userErrors"]] == ["INVALID_REFRESH_TOKEN"]
    # ...and signing in again is refused.
    login = await gql.login("bob")
    assert login["accessToken"] is None
    assert [e["code"] for e in login["userErrors"]] == ["ACCOUNT_DISABLED"]


async def test_set_user_active_leaves_other_users_alone(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    await set_active(gql, admin.access_token, bob.id, False)
    assert (await gql.ok(ME, token=ann.access_token))["me"] == {"id": ann.id}
    assert (await gql.ok(ME, token=admin.access_token))["me"] == {"id": admin.id}


async def test_set_user_active_true_enables_again(gql: GraphQL) -> None:
    admin = await gql.admin()
    bob = await gql.register("bob")
    await set_active(gql, admin.access_token, bob.id, False)
    body = await set_active(gql, admin.access_token, bob.id, True)
    payload = body["data"]["setUserActive"]
    assert payload["userErrors"] == []
    assert payload["user"]["isActive"] is True
    login = await gql.login("bob")
    assert login["userErrors"] == []
    assert (await gql.ok(ME, token=login["accessToken"]))["me"] == {"id": bob.id}
    # Sessions ended by disabling stay ended.
    assert await gql.ok(ME, token=bob.access_token) == {"me": None}


async def test_set_user_active_true_on_an_active_user_changes_nothing(gql: GraphQL) -> None:
    admin = await gql.admin()
    bob = await gql.register("bob")
    body = await set_active(gql, admin.access_token, bob.id, True)
    payload = body["data"]["setUserActive"]
    assert payload["userErrors"] == []
    assert payload["user"]["isActive"] is True
    assert payload["user"]["sessions"] == {"totalCount": 1}
    assert (await gql.ok(ME, token=bob.access_token))["me"] == {"id": bob.id}


async def test_set_user_active_cannot_disable_yourself(gql: GraphQL) -> None:
    admin = await gql.admin()
    body = await set_active(gql, admin.access_token, admin.id, False)
    payload = body["data"]["setUserActive"]
    assert payload["user"] is None
    [error] = payload["userErrors"]
    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == ["input", "active"]
    assert (await gql.ok(ME, token=admin.access_token))["me"] == {"id": admin.id}


async def test_set_user_active_can_disable_another_admin(gql: GraphQL) -> None:
    admin = await gql.admin()
    other = await gql.admin("other")
    body = await set_active(gql, admin.access_token, other.id, False)
    assert body["data"]["setUserActive"]["userErrors"] == []
    assert await gql.ok(ME, token=other.access_token) == {"me": None}


async def test_set_user_active_user_not_found(gql: GraphQL) -> None:
    admin = await gql.admin()
    body = await set_active(gql, admin.access_token, to_global_id("User", 999_999_999), False)
    payload = body["data"]["setUserActive"]
    assert payload["user"] is None
    [error] = payload["userErrors"]
    assert error["code"] == "NOT_FOUND"
    assert error["field"] == ["input", "userId"]


@pytest.mark.parametrize(
    "malformed",
    ["not-an-id", to_global_id("Session", "00000000-0000-0000-0000-000000000001")],
    ids=["garbage", "session-id"],
)
async def test_set_user_active_malformed_id_is_bad_user_input(gql: GraphQL, malformed: str) -> None:
    admin = await gql.admin()
    body = await set_active(gql, admin.access_token, malformed, False)
    assert_only_error(body, "BAD_USER_INPUT", ["setUserActive"])


async def test_set_user_active_needs_sign_in(gql: GraphQL) -> None:
    bob = await gql.register("bob")
    body = await set_active(gql, None, bob.id, False)
    assert_only_error(body, "UNAUTHENTICATED")
    assert (await gql.ok(ME, token=bob.access_token))["me"] == {"id": bob.id}


async def test_set_user_active_is_for_admins_only(gql: GraphQL) -> None:
    await gql.admin()
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    body = await set_active(gql, ann.access_token, bob.id, False)
    assert_only_error(body, "FORBIDDEN")
    assert (await gql.ok(ME, token=bob.access_token))["me"] == {"id": bob.id}
