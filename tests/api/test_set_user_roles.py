"""Mutation.setUserRoles over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client import GraphQL
from tests.helpers import assert_only_error
from usergraph.schema.relay import to_global_id

SET_ROLES = """mutation($input: SetUserRolesInput!) { setUserRoles(input: $input) {
  user { id username roles { name } }
  userErrors { field message code }
} }"""
USERS = "{ users { totalCount } }"
ME_ROLES = "{ me { roles { name } } }"


async def set_roles(gql: GraphQL, token: str | None, user_id: str, roles: list[str]) -> Any:
    return await gql(SET_ROLES, {"input": {"userId": user_id, "roles": roles}}, token=token)


async def roles_of(gql: GraphQL, token: str) -> list[str]:
    return [role["name"] for role in (await gql.ok(ME_ROLES, token=token))["me"]["roles"]]


async def test_set_user_roles_replaces_the_roles(gql: GraphQL) -> None:
    admin = await gql.admin()
    bob = await gql.register("bob")
    body = await set_roles(gql, admin.access_token, bob.id, ["admin", "user"])
    assert body == {
        "data": {
            "setUserRoles": {
                "user": {
                    "id": bob.id,
                    "username": "bob",
                    "roles": [{"name": "admin"}, {"name": "user"}],
                },
                "userErrors": [],
            }
        }
    }
    assert await roles_of(gql, bob.access_token) == ["admin", "user"]


async def test_set_user_roles_takes_effect_on_the_next_request(gql: GraphQL) -> None:
    admin = await gql.admin()
    bob = await gql.register("bob")
    before = await gql(USERS, token=bob.access_token)
    assert before["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    await set_roles(gql, admin.access_token, bob.id, ["user", "admin"])
    # Bob's access token was issued before the promotion; the roles come from the database.
    assert await gql.ok(USERS, token=bob.access_token) == {"users": {"totalCount": 2}}

    await set_roles(gql, admin.access_token, bob.id, ["user"])
    after = await gql(USERS, token=bob.access_token)
    assert after["data"] is None
    assert after["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_set_user_roles_a_promoted_user_can_demote_the_first_admin(gql: GraphQL) -> None:
    admin = await gql.admin()
    bob = await gql.register("bob")
    await set_roles(gql, admin.access_token, bob.id, ["admin"])
    body = await set_roles(gql, bob.access_token, admin.id, ["user"])
    assert body["data"]["setUserRoles"]["userErrors"] == []
    assert body["data"]["setUserRoles"]["user"]["roles"] == [{"name": "user"}]
    denied = await gql(USERS, token=admin.access_token)
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_set_user_roles_normalizes_names_and_drops_duplicates(gql: GraphQL) -> None:
    admin = await gql.admin()
    bob = await gql.register("bob")
    body = await set_roles(gql, admin.access_token, bob.id, [" Admin ", "USER", "admin"])
    payload = body["data"]["setUserRoles"]
    assert payload["userErrors"] == []
    assert payload["user"]["roles"] == [{"name": "admin"}, {"name": "user"}]


async def test_set_user_roles_to_none(gql: GraphQL) -> None:
    admin = await gql.admin()
    bob = await gql.register("bob")
    body = await set_roles(gql, admin.access_token, bob.id, [])
    assert body["data"]["setUserRoles"] == {
        "user": {"id": bob.id, "username": "bob", "roles": []},
        "userErrors": [],
    }
    assert await roles_of(gql, bob.access_token) == []


async def test_set_user_roles_unknown_role(gql: GraphQL) -> None:
    admin = await gql.admin()
    bob = await gql.register("bob")
    body = await set_roles(gql, admin.access_token, bob.id, ["admin", "wizard", "user", "root"])
    payload = body["data"]["setUserRoles"]
    assert payload["user"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
        ("INVALID_INPUT", ["input", "roles", "1"]),
        ("INVALID_INPUT", ["input", "roles", "3"]),
    ]
    assert all(e["message"] for e in payload["userErrors"])
    assert await roles_of(gql, bob.access_token) == ["user"]


async def test_set_user_roles_user_not_found(gql: GraphQL) -> None:
    admin = await gql.admin()
    body = await set_roles(gql, admin.access_token, to_global_id("User", 999_999_999), ["user"])
    payload = body["data"]["setUserRoles"]
    assert payload["user"] is None
    [error] = payload["userErrors"]
    assert error["code"] == "NOT_FOUND"
    assert error["field"] == ["input", "userId"]


async def test_set_user_roles_keeps_an_active_admin(gql: GraphQL) -> None:
    admin = await gql.admin()
    body = await set_roles(gql, admin.access_token, admin.id, ["user"])
    payload = body["data"]["setUserRoles"]
    assert payload["user"] is None
    [error] = payload["userErrors"]
    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == ["input", "userId"]
    assert await roles_of(gql, admin.access_token) == ["admin", "user"]


@pytest.mark.parametrize(
    "malformed",
    ["not-an-id", to_global_id("Session", "00000000-0000-0000-0000-000000000001"), ""],
    ids=["garbage", "session-id", "empty"],
)
async def test_set_user_roles_malformed_id_is_bad_user_input(gql: GraphQL, malformed: str) -> None:
    admin = await gql.admin()
    body = await set_roles(gql, admin.access_token, malformed, ["user"])
    assert_only_error(body, "BAD_USER_INPUT", ["setUserRoles"])


async def test_set_user_roles_needs_sign_in(gql: GraphQL) -> None:
    bob = await gql.register("bob")
    body = await set_roles(gql, None, bob.id, ["admin"])
    assert_only_error(body, "UNAUTHENTICATED")


async def test_set_user_roles_is_for_admins_only(gql: GraphQL) -> None:
    await gql.admin()
    bob = await gql.register("bob")
    body = await set_roles(gql, bob.access_token, bob.id, ["admin", "user"])
    assert_only_error(body, "FORBIDDEN", ["setUserRoles"])
    assert await roles_of(gql, bob.access_token) == ["user"]
