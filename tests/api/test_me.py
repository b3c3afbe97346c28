"""Query.me over HTTP."""

from __future__ import annotations

from tests.client import GraphQL
from tests.helpers import tampered

ME = "{ me { id username email lastLoginAt roles { name } } }"


async def test_me_is_null_without_a_token(gql: GraphQL) -> None:
    assert await gql.ok(ME) == {"me": None}


async def test_me_is_null_with_a_tampered_token(gql: GraphQL) -> None:
    account = await gql.register("ann")
    assert await gql.ok(ME, token=tampered(account.access_token)) == {"me": None}


async def test_me_returns_the_signed_in_user_with_private_fields(gql: GraphQL) -> None:
    account = await gql.register("ann", email="Ann@Example.com")
    me = (await gql.ok(ME, token=account.access_token))["me"]
    assert me["id"] == account.id
    assert me["username"] == "ann"
    assert me["email"] == "Ann@example.com"
    assert me["lastLoginAt"] is not None
    assert me["roles"] == [{"name": "user"}]


async def test_me_is_null_once_the_session_is_logged_out(gql: GraphQL) -> None:
    account = await gql.register("ann")
    data = await gql.ok("mutation { logout { revokedSessions } }", token=account.access_token)
    assert data["logout"]["revokedSessions"] == 1
    assert await gql.ok(ME, token=account.access_token) == {"me": None}
