"""Query.user over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client import GraphQL
from usergraph.schema.relay import to_global_id

BY_ID = """query($id: ID) { user(id: $id) {
  id username displayName email lastLoginAt isActive createdAt roles { name }
} }"""
BY_USERNAME = """query($username: String) { user(username: $username) {
  id username email lastLoginAt
} }"""
SESSIONS = """query($id: ID) { user(id: $id) {
  username sessions { totalCount edges { node { id current } } }
} }"""
SET_ACTIVE = """mutation($input: SetUserActiveInput!) { setUserActive(input: $input) {
  user { isActive } userErrors { code }
} }"""


async def user_by_id(gql: GraphQL, id: str, token: str) -> Any:
    return (await gql.ok(BY_ID, {"id": id}, token=token))["user"]


@pytest.mark.parametrize("by", ["id", "username"])
async def test_user_needs_sign_in(gql: GraphQL, by: str) -> None:
    ann = await gql.register("ann")
    if by == "id":
        body = await gql(BY_ID, {"id": ann.id})
    else:
        body = await gql(BY_USERNAME, {"username": "ann"})
    assert body["data"] == {"user": None}
    [error] = body["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["path"] == ["user"]


async def test_user_by_id_hides_private_fields_from_other_users(gql: GraphQL) -> None:
    ann = await gql.register("ann", display_name="Ann Smith")
    bob = await gql.register("bob")
    found = await user_by_id(gql, ann.id, bob.access_token)
    assert found["id"] == ann.id
    assert found["username"] == "ann"
    assert found["displayName"] == "Ann Smith"
    assert found["isActive"] is True
    assert found["createdAt"]
    assert found["roles"] == [{"name": "user"}]
    # Private fields answer null without an error (gql.ok checks there is none).
    assert found["email"] is None
    assert found["lastLoginAt"] is None


async def test_user_by_id_shows_private_fields_to_the_user(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    found = await user_by_id(gql, ann.id, ann.access_token)
    assert found["email"] == "ann@example.com"
    assert found["lastLoginAt"] is not None


async def test_user_by_id_shows_private_fields_to_admins(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    found = await user_by_id(gql, ann.id, admin.access_token)
    assert found["email"] == "ann@example.com"
    assert found["lastLoginAt"] is not None


async def test_user_private_fields_of_many_users_in_one_request(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    data = await gql.ok(
        """query($me: ID, $other: ID) {
             mine: user(id: $me) { email } theirs: user(id: $other) { email } }""",
        {"me": ann.id, "other": bob.id},
        token=ann.access_token,
    )
    assert data == {"mine": {"email": "ann@example.com"}, "theirs": {"email": None}}


@pytest.mark.parametrize("spelling", ["ann", "ANN", "Ann", " ann "])
async def test_user_by_username_ignores_case(gql: GraphQL, spelling: str) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    data = await gql.ok(BY_USERNAME, {"username": spelling}, token=bob.access_token)
    assert data["user"] == {"id": ann.id, "username": "ann", "email": None, "lastLoginAt": None}


async def test_user_by_username_shows_private_fields_to_the_user(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    data = await gql.ok(BY_USERNAME, {"username": "ANN"}, token=ann.access_token)
    assert data["user"]["email"] == "ann@example.com"
    assert data["user"]["lastLoginAt"] is not None


async def test_user_is_null_when_it_does_not_exist(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    assert await user_by_id(gql, to_global_id("User", 999_999_999), ann.access_token) is None
    data = await gql.ok(BY_USERNAME, {"username": "nobody"}, token=ann.access_token)
    assert data == {"user": None}


@pytest.mark.parametrize(
    "query",
    [
        "{ user { id } }",
        'query($id: ID) { user(id: $id, username: "ann") { id } }',
        "{ user(id: null, username: null) { id } }",
        '{ user(username: "") { id } }',
    ],
    ids=["neither", "both", "both-null", "empty-username"],
)
async def test_user_needs_exactly_one_of_id_and_username(gql: GraphQL, query: str) -> None:
    ann = await gql.register("ann")
    variables = {"id": ann.id} if "$id" in query else {}
    body = await gql(query, variables, token=ann.access_token)
    assert body["data"] == {"user": None}, body
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["path"] == ["user"]


@pytest.mark.parametrize(
    "malformed", ["nope", to_global_id("Session", "1"), to_global_id("User", "x")]
)
async def test_user_malformed_id_is_bad_user_input(gql: GraphQL, malformed: str) -> None:
    ann = await gql.register("ann")
    body = await gql(BY_ID, {"id": malformed}, token=ann.access_token)
    assert body["data"] == {"user": None}
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error


async def test_user_sessions_of_another_user_are_forbidden(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    body = await gql(SESSIONS, {"id": ann.id}, token=bob.access_token)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["path"] == ["user", "sessions"]
    # sessions is non-null (SessionConnection!), so the null reaches the nullable `user` field.
    assert body["data"] == {"user": None}


async def test_user_sessions_are_visible_to_the_user(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    await gql.login("ann")
    data = await gql.ok(SESSIONS, {"id": ann.id}, token=ann.access_token)
    sessions = data["user"]["sessions"]
    assert sessions["totalCount"] == 2
    assert sorted(edge["node"]["current"] for edge in sessions["edges"]) == [False, True]


async def test_user_sessions_are_visible_to_admins(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    data = await gql.ok(SESSIONS, {"id": ann.id}, token=admin.access_token)
    sessions = data["user"]["sessions"]
    assert sessions["totalCount"] == 1
    [edge] = sessions["edges"]
    assert edge["node"]["current"] is False


async def test_user_is_active_follows_set_user_active(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    assert (await user_by_id(gql, ann.id, admin.access_token))["isActive"] is True
    data = await gql.ok(
        SET_ACTIVE, {"input": {"userId": ann.id, "active": False}}, token=admin.access_token
    )
    assert data["setUserActive"] == {"user": {"isActive": False}, "userErrors": []}
    assert (await user_by_id(gql, ann.id, admin.access_token))["isActive"] is False


async def test_user_sessions_are_keyset_paginated(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    for _ in range(4):
        assert (await gql.login("ann"))["userErrors"] == []
    query = """query($id: ID, $after: String) { user(id: $id) {
      sessions(first: 2, after: $after) {
        totalCount
        edges { cursor node { id } }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
      } } }"""
    seen: list[str] = []
    after = None
    while True:
        data = await gql.ok(query, {"id": ann.id, "after": after}, token=ann.access_token)
        sessions = data["user"]["sessions"]
        assert sessions["totalCount"] == 5
        assert sessions["pageInfo"]["hasPreviousPage"] is (after is not None)
        assert sessions["pageInfo"]["endCursor"] == sessions["edges"][-1]["cursor"]
        seen += [edge["node"]["id"] for edge in sessions["edges"]]
        if not sessions["pageInfo"]["hasNextPage"]:
            break
        after = sessions["pageInfo"]["endCursor"]
    assert len(seen) == 5
    assert len(set(seen)) == 5


@pytest.mark.parametrize(
    ("arguments", "before_execution"),
    [("first: 101", True), ("first: -1", True), ('after: "garbage"', False)],
    ids=["101", "negative", "cursor"],
)
async def test_user_sessions_bad_page_arguments(
    gql: GraphQL, arguments: str, before_execution: bool
) -> None:
    ann = await gql.register("ann")
    body = await gql(
        f"query($id: ID) {{ user(id: $id) {{ sessions({arguments}) {{ totalCount }} }} }}",
        {"id": ann.id},
        token=ann.access_token,
    )
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    if before_execution:
        # Page sizes are checked with the query cost (usergraph.guards.limits), before anything
        # runs: no data and no path.
        assert body.get("data") is None
        assert "path" not in error
    else:
        assert body["data"] == {"user": None}
        assert error["path"] == ["user", "sessions"]
