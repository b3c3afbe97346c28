"""Mutation.updateProfile over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client import GraphQL
from tests.helpers import assert_only_error

UPDATE = """mutation($input: UpdateProfileInput!) { updateProfile(input: $input) {
  user { id username displayName email }
  userErrors { field message code }
} }"""
ME = "{ me { username displayName } }"


async def update(gql: GraphQL, token: str | None, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = (await gql.ok(UPDATE, {"input": fields}, token=token))[
        "updateProfile"
    ]
    return payload


async def test_update_profile_changes_display_name_and_username(gql: GraphQL) -> None:
    ann = await gql.register("ann", display_name="Ann")
    payload = await update(gql, ann.access_token, displayName="  Ann   Smith ", username="AnnS")
    assert payload == {
        "user": {
            "id": ann.id,
            "username": "anns",
            "displayName": "Ann Smith",
            "email": "ann@example.com",
        },
        "userErrors": [],
    }
    # The next request sees it, with the same access token, and the new username signs in.
    assert await gql.ok(ME, token=ann.access_token) == {
        "me": {"username": "anns", "displayName": "Ann Smith"}
    }
    assert (await gql.login("anns"))["userErrors"] == []
    assert [e["code"] for e in (await gql.login("ann"))["userErrors"]] == ["INVALID_CREDENTIALS"]


async def test_update_profile_keeps_what_is_left_out(gql: GraphQL) -> None:
    ann = await gql.register("ann", display_name="Ann")
    payload = await update(gql, ann.access_token, username="annie")
    assert payload["user"]["displayName"] == "Ann"
    payload = await update(gql, ann.access_token, displayName="Annie")
    assert payload["user"]["username"] == "annie"
    payload = await update(gql, ann.access_token)
    assert payload["user"] == {
        "id": ann.id,
        "username": "annie",
        "displayName": "Annie",
        "email": "ann@example.com",
    }
    assert payload["userErrors"] == []


@pytest.mark.parametrize("cleared", [None, "", "   "])
async def test_update_profile_clears_the_display_name(gql: GraphQL, cleared: str | None) -> None:
    ann = await gql.register("ann", display_name="Ann")
    payload = await update(gql, ann.access_token, displayName=cleared)
    assert payload["userErrors"] == []
    assert payload["user"]["displayName"] is None
    assert (await gql.ok(ME, token=ann.access_token))["me"]["displayName"] is None


async def test_update_profile_to_the_same_username_is_fine(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    payload = await update(gql, ann.access_token, username="ANN")
    assert payload["userErrors"] == []
    assert payload["user"]["username"] == "ann"


@pytest.mark.parametrize("username", ["a", "1abc", "has space", "ends_", "x" * 31, "émile", ""])
async def test_update_profile_invalid_username(gql: GraphQL, username: str) -> None:
    ann = await gql.register("ann")
    payload = await update(gql, ann.access_token, username=username)
    assert payload["user"] is None
    [error] = payload["userErrors"]
    assert error["code"] == "INVALID_USERNAME"
    assert error["field"] == ["input", "username"]
    assert error["message"]
    assert (await gql.ok(ME, token=ann.access_token))["me"]["username"] == "ann"


@pytest.mark.parametrize("taken", ["bob", "BOB", " bob "])
async def test_update_profile_username_taken(gql: GraphQL, taken: str) -> None:
    ann = await gql.register("ann", display_name="Ann")
    await gql.register("bob")
    payload = await update(gql, ann.access_token, username=taken, displayName="Changed")
    assert payload["user"] is None
    assert payload["userErrors"] == [
        {
            "field": ["input", "username"],
            "message": "This username is taken.",
            "code": "USERNAME_TAKEN",
        }
    ]
    # Nothing of a rejected update is kept.
    assert await gql.ok(ME, token=ann.access_token) == {
        "me": {"username": "ann", "displayName": "Ann"}
    }


@pytest.mark.parametrize("display_name", ["x" * 101, "bell\x07"])
async def test_update_profile_invalid_display_name(gql: GraphQL, display_name: str) -> None:
    ann = await gql.register("ann", display_name="Ann")
    payload = await update(gql, ann.access_token, displayName=display_name)
    assert payload["user"] is None
    [error] = payload["userErrors"]
    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == ["input", "displayName"]
    assert (await gql.ok(ME, token=ann.access_token))["me"]["displayName"] == "Ann"


async def test_a_nul_character_is_refused_before_anything_runs(gql: GraphQL) -> None:
    ann = await gql.register("ann", display_name="Ann")
    response = await gql.post(
        UPDATE, {"input": {"displayName": "null\x00byte"}}, token=ann.access_token
    )
    # As a NUL in a literal: refused before execution (no data), the same code.
    assert response.status_code == 200
    body = response.json()
    assert "data" not in body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
    assert (await gql.ok(ME, token=ann.access_token))["me"]["displayName"] == "Ann"


async def test_update_profile_reports_every_problem_at_once(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    payload = await update(gql, ann.access_token, displayName="x" * 101, username="!")
    assert payload["user"] is None
    assert sorted((e["code"], tuple(e["field"])) for e in payload["userErrors"]) == [
        ("INVALID_INPUT", ("input", "displayName")),
        ("INVALID_USERNAME", ("input", "username")),
    ]


async def test_update_profile_display_name_of_100_characters_is_fine(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    payload = await update(gql, ann.access_token, displayName="x" * 100)
    assert payload["userErrors"] == []
    assert payload["user"]["displayName"] == "x" * 100


async def test_update_profile_needs_sign_in(gql: GraphQL) -> None:
    body = await gql(UPDATE, {"input": {"displayName": "Anon"}})
    assert_only_error(body, "UNAUTHENTICATED", ["updateProfile"])


async def test_update_profile_refuses_a_logged_out_token(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    await gql.ok("mutation { logout { revokedSessions } }", token=ann.access_token)
    body = await gql(UPDATE, {"input": {"displayName": "Ghost"}}, token=ann.access_token)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
