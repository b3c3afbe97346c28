"""Query.node over HTTP."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from tests.client import Account, GraphQL
from usergraph.schema.relay import to_global_id

NODE = """query($id: ID!) { node(id: $id) {
  __typename id
  ... on User { username }
  ... on Session { current user { id } }
} }"""

MY_SESSIONS = "{ me { sessions { edges { node { id } } } } }"


async def only_session_id(gql: GraphQL, token: str) -> str:
    """The global id of the one open session of the token's user."""
    edges = (await gql.ok(MY_SESSIONS, token=token))["me"]["sessions"]["edges"]
    assert len(edges) == 1, edges
    session_id: str = edges[0]["node"]["id"]
    return session_id


async def node(gql: GraphQL, id: str, token: str | None = None) -> Any:
    return (await gql.ok(NODE, {"id": id}, token=token))["node"]


async def register_with_session(gql: GraphQL, username: str) -> tuple[Account, str]:
    """A new account and the global id of its one open session."""
    account = await gql.register(username)
    return account, await only_session_id(gql, account.access_token)


def session_node(session_id: str, user_id: str, *, current: bool) -> dict[str, Any]:
    """What NODE answers for a session."""
    return {"__typename": "Session", "id": session_id, "current": current, "user": {"id": user_id}}


async def test_node_returns_a_user_to_a_signed_in_viewer(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    found = await node(gql, ann.id, token=bob.access_token)
    assert found == {"__typename": "User", "id": ann.id, "username": "ann"}


async def test_node_user_is_null_for_anonymous(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    assert await node(gql, ann.id) is None


async def test_node_user_is_null_with_a_revoked_token(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    await gql.ok("mutation { logout { revokedSessions } }", token=ann.access_token)
    assert await node(gql, ann.id, token=ann.access_token) is None


async def test_node_returns_the_owners_session(gql: GraphQL) -> None:
    ann, session_id = await register_with_session(gql, "ann")
    found = await node(gql, session_id, token=ann.access_token)
    assert found == session_node(session_id, ann.id, current=True)


async def test_node_returns_any_session_to_an_admin(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann, session_id = await register_with_session(gql, "ann")
    found = await node(gql, session_id, token=admin.access_token)
    assert found == session_node(session_id, ann.id, current=False)


async def test_node_session_of_another_user_is_null(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    session_id = await only_session_id(gql, ann.access_token)
    assert await node(gql, session_id, token=bob.access_token) is None


async def test_node_session_is_null_for_anonymous(gql: GraphQL) -> None:
    _, session_id = await register_with_session(gql, "ann")
    assert await node(gql, session_id) is None


@pytest.mark.parametrize(
    "missing",
    [
        to_global_id("User", 999_999_999),
        to_global_id("Session", uuid.UUID(int=1)),
        to_global_id("Planet", 1),
    ],
    ids=["user", "session", "unknown-type"],
)
async def test_node_is_null_for_an_id_that_does_not_exist(gql: GraphQL, missing: str) -> None:
    admin = await gql.admin()
    assert await node(gql, missing, token=admin.access_token) is None


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "not an id!",
        "%%%%",
        to_global_id("User", "abc"),
        to_global_id("User", "-1"),
        to_global_id("User", "²"),
        to_global_id("User", "1" * 19),
        to_global_id("Session", "not-a-uuid"),
        "A" * 500,
        base64.urlsafe_b64encode(b"no colon here").decode(),
    ],
    ids=[
        "empty",
        "not-base64",
        "percent",
        "user-not-a-number",
        "user-negative",
        "user-superscript-digit",
        "user-too-long",
        "session-not-a-uuid",
        "too-long",
        "no-local-id",
    ],
)
async def test_node_malformed_id_is_bad_user_input(gql: GraphQL, malformed: str) -> None:
    ann = await gql.register("ann")
    for token in (ann.access_token, None):
        body = await gql(NODE, {"id": malformed}, token=token)
        assert body["data"] == {"node": None}, body
        [error] = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert error["path"] == ["node"]
