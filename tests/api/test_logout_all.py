"""Mutation.logoutAll over HTTP."""

from __future__ import annotations

from tests.client import GraphQL
from tests.helpers import assert_only_error, error_codes, me, refresh_codes, session_count, tampered

LOGOUT_ALL = "mutation { logoutAll { revokedSessions userErrors { field message code } } }"


async def test_logout_all_ends_every_session_of_the_viewer(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    others = [await gql.login("ann"), await gql.login("ann")]
    assert await session_count(gql, ann.access_token) == 3

    data = await gql.ok(LOGOUT_ALL, token=others[0]["accessToken"])
    assert data["logoutAll"] == {"revokedSessions": 3, "userErrors": []}

    access_tokens = [ann.access_token, *(o["accessToken"] for o in others)]
    refresh_tokens = [ann.refresh_token, *(o["refreshToken"] for o in others)]
    for token in access_tokens:
        assert await me(gql, token) is None
    for token in refresh_tokens:
        assert await refresh_codes(gql, token) == ["INVALID_REFRESH_TOKEN"]


async def test_logout_all_counts_only_open_sessions(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    laptop = await gql.login("ann")
    phone = await gql.login("ann")
    data = await gql.ok("mutation { logout { revokedSessions } }", token=laptop["accessToken"])
    assert data["logout"]["revokedSessions"] == 1

    data = await gql.ok(LOGOUT_ALL, token=ann.access_token)
    assert data["logoutAll"] == {"revokedSessions": 2, "userErrors": []}
    assert await me(gql, phone["accessToken"]) is None


async def test_logout_all_with_a_single_session(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    data = await gql.ok(LOGOUT_ALL, token=ann.access_token)
    assert data["logoutAll"] == {"revokedSessions": 1, "userErrors": []}
    assert await me(gql, ann.access_token) is None


async def test_logout_all_leaves_other_users_alone(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    bob_phone = await gql.login("bob")
    await gql.login("ann")

    data = await gql.ok(LOGOUT_ALL, token=ann.access_token)
    assert data["logoutAll"]["revokedSessions"] == 2

    assert await me(gql, bob.access_token) == {"id": bob.id, "username": "bob"}
    assert await me(gql, bob_phone["accessToken"]) == {"id": bob.id, "username": "bob"}
    assert await session_count(gql, bob.access_token) == 2
    assert await refresh_codes(gql, bob.refresh_token) == []


async def test_logout_all_anonymous(gql: GraphQL) -> None:
    body = await gql(LOGOUT_ALL)
    assert_only_error(body, "UNAUTHENTICATED", ["logoutAll"])


async def test_logout_all_with_a_tampered_token(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    body = await gql(LOGOUT_ALL, token=tampered(ann.access_token))
    assert error_codes(body) == ["UNAUTHENTICATED"]
    assert await me(gql, ann.access_token) == {"id": ann.id, "username": "ann"}


async def test_logout_all_twice(gql: GraphQL) -> None:
    # The first call ends the caller's own session too, so its token no longer signs in.
    ann = await gql.register("ann")
    assert (await gql.ok(LOGOUT_ALL, token=ann.access_token))["logoutAll"]["revokedSessions"] == 1
    body = await gql(LOGOUT_ALL, token=ann.access_token)
    assert error_codes(body) == ["UNAUTHENTICATED"]


async def test_logout_all_then_login_again(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    await gql.ok(LOGOUT_ALL, token=ann.access_token)
    payload = await gql.login("ann")
    assert payload["userErrors"] == []
    assert await session_count(gql, payload["accessToken"]) == 1
