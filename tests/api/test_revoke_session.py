"""Mutation.revokeSession over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.client import GraphQL
from tests.helpers import assert_only_error
from usergraph.schema.relay import to_global_id

REVOKE = """mutation($input: RevokeSessionInput!) { revokeSession(input: $input) {
  session { id revokedAt user { id } }
  userErrors { field message code }
} }"""
ME = "{ me { id } }"
MY_SESSIONS = "{ me { sessions { totalCount edges { node { id current } } } } }"
REFRESH = """mutation($input: RefreshInput!) { refresh(input: $input) {
  accessToken userErrors { code }
} }"""


async def revoke(gql: GraphQL, token: str | None, session_id: str) -> Any:
    return await gql(REVOKE, {"input": {"id": session_id}}, token=token)


async def current_session_id(gql: GraphQL, token: str) -> str:
    edges = (await gql.ok(MY_SESSIONS, token=token))["me"]["sessions"]["edges"]
    [session_id] = [edge["node"]["id"] for edge in edges if edge["node"]["current"]]
    return str(session_id)


async def test_revoke_session_own_current_session_signs_out(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    session_id = await current_session_id(gql, ann.access_token)
    body = await revoke(gql, ann.access_token, session_id)
    payload = body["data"]["revokeSession"]
    assert payload["userErrors"] == []
    assert payload["session"]["id"] == session_id
    assert payload["session"]["revokedAt"] is not None
    assert payload["session"]["user"] == {"id": ann.id}
    assert await gql.ok(ME, token=ann.access_token) == {"me": None}
    refreshed = (await gql.ok(REFRESH, {"input": {"refreshToken": ann.refresh_token}}))["refresh"]
    assert refreshed["accessToken"] is None
    assert [e["code"] for e in refreshed["userErrors"]] == ["INVALID_REFRESH_TOKEN"]


async def test_revoke_session_own_other_session(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    phone = await gql.login("ann")
    phone_session = await current_session_id(gql, phone["accessToken"])
    body = await revoke(gql, ann.access_token, phone_session)
    assert body["data"]["revokeSession"]["userErrors"] == []
    assert await gql.ok(ME, token=phone["accessToken"]) == {"me": None}
    sessions = (await gql.ok(MY_SESSIONS, token=ann.access_token))["me"]["sessions"]
    assert sessions["totalCount"] == 1
    assert [edge["node"]["current"] for edge in sessions["edges"]] == [True]


async def test_revoke_session_twice_is_harmless(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    phone = await gql.login("ann")
    phone_session = await current_session_id(gql, phone["accessToken"])
    first = (await revoke(gql, ann.access_token, phone_session))["data"]["revokeSession"]
    again = (await revoke(gql, ann.access_token, phone_session))["data"]["revokeSession"]
    assert again["userErrors"] == []
    assert again["session"]["revokedAt"] == first["session"]["revokedAt"]


async def test_revoke_session_of_another_user_is_not_found(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    bob_session = await current_session_id(gql, bob.access_token)
    body = await revoke(gql, ann.access_token, bob_session)
    payload = body["data"]["revokeSession"]
    assert payload["session"] is None
    [error] = payload["userErrors"]
    assert error["code"] == "NOT_FOUND"
    assert error["field"] == ["input", "id"]
    assert (await gql.ok(ME, token=bob.access_token))["me"] == {"id": bob.id}


async def test_revoke_session_that_does_not_exist_is_not_found(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    body = await revoke(gql, ann.access_token, to_global_id("Session", uuid.uuid4()))
    payload = body["data"]["revokeSession"]
    assert payload["session"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
        ("NOT_FOUND", ["input", "id"])
    ]


async def test_revoke_session_admin_may_revoke_anyones(gql: GraphQL) -> None:
    admin = await gql.admin()
    bob = await gql.register("bob")
    bob_session = await current_session_id(gql, bob.access_token)
    body = await revoke(gql, admin.access_token, bob_session)
    payload = body["data"]["revokeSession"]
    assert payload["userErrors"] == []
    assert payload["session"]["id"] == bob_session
    assert payload["session"]["user"] == {"id": bob.id}
    assert await gql.ok(ME, token=bob.access_token) == {"me": None}
    assert (await gql.ok(ME, token=admin.access_token))["me"] == {"id": admin.id}


@pytest.mark.parametrize(
    "malformed",
    ["not-an-id", to_global_id("User", 1), to_global_id("Session", "nope"), ""],
    ids=["garbage", "user-id", "session-not-a-uuid", "empty"],
)
async def test_revoke_session_malformed_id_is_bad_user_input(gql: GraphQL, malformed: str) -> None:
    ann = await gql.register("ann")
    body = await revoke(gql, ann.access_token, malformed)
    assert_only_error(body, "BAD_USER_INPUT", ["revokeSession"])
    assert (await gql.ok(ME, token=ann.access_token))["me"] == {"id": ann.id}


async def test_revoke_session_needs_sign_in(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    session_id = await current_session_id(gql, ann.access_token)
    body = await revoke(gql, None, session_id)
    assert_only_error(body, "UNAUTHENTICATED")
    assert (await gql.ok(ME, token=ann.access_token))["me"] == {"id": ann.id}
