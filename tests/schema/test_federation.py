"""The Apollo Federation 2 subgraph (USERGRAPH_FEDERATION=true), in process.

`_service { sdl }` announces Federation 2 and `User @key(fields: "id")`; `_entities` resolves
users by global id through the request's loaders, with the field permissions of `user` (email
of others null, sessions of others FORBIDDEN); ids that are no user's resolve to null; many
representations share one batch. Building a subgraph leaves the plain schema (schema.graphql)
as it was. tests/system/test_federation.py composes the subgraph behind a real gateway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.client import GraphQL, StatementCounter, serving
from tests.environment import make_settings
from tests.helpers import tampered
from tests.schema.test_schema import SNAPSHOT
from usergraph import cli
from usergraph.schema import build_schema
from usergraph.schema.relay import to_global_id
from usergraph.settings import Settings

ENTITIES = """query($representations: [_Any!]!) {
  _entities(representations: $representations) {
    __typename
    ... on User { id username email }
  }
}"""
ENTITY_SESSIONS = """query($representations: [_Any!]!) {
  _entities(representations: $representations) {
    ... on User { username sessions { totalCount } }
  }
}"""
SERVICE_SDL = "{ _service { sdl } }"
FEDERATION_LINK = '@link(url: "https://specs.apollo.dev/federation/v2'
USER_KEY = 'type User implements Node @key(fields: "id"'


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The app of this module's gql and sql_counter serves the subgraph."""
    return make_settings(database_url, tmp_path, federation=True)


def federated_settings(tmp_path: Path) -> Settings:
    return make_settings(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", tmp_path, federation=True)


def refs(*ids: str) -> dict[str, Any]:
    return {"representations": [{"__typename": "User", "id": id} for id in ids]}


def service_sdl(schema: Any) -> str:
    result = schema.execute_sync(SERVICE_SDL)
    assert result.errors is None, result.errors
    sdl: str = result.data["_service"]["sdl"]
    return sdl


# --- _service { sdl } -----------------------------------------------------------------------


async def test_service_sdl_is_a_federation_2_subgraph_with_user_keyed_by_id(gql: GraphQL) -> None:
    sdl = (await gql.ok(SERVICE_SDL))["_service"]["sdl"]
    assert FEDERATION_LINK in sdl
    assert '"@key"' in sdl  # imported by the @link
    assert USER_KEY in sdl
    # The rest of the API is there as in the plain schema.
    assert "me: User" in sdl
    assert "register(input: RegisterInput!): AuthPayload!" in sdl


async def test_subgraph_still_serves_the_plain_api(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    data = await gql.ok("{ me { id username email } }", token=ann.access_token)
    assert data["me"] == {"id": ann.id, "username": "ann", "email": ann.email}


async def test_the_plain_schema_is_no_subgraph(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path) as plain:  # federation off: the default
        for query in (SERVICE_SDL, ENTITIES):
            response = await plain.post(query, refs(to_global_id("User", 1)))
            body = response.json()
            assert body.get("data") is None, body
            messages = [error["message"] for error in body["errors"]]
            assert any("Cannot query field" in message for message in messages), messages


# --- _entities ------------------------------------------------------------------------------


async def test_entities_resolve_users_by_global_id_in_order(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    data = await gql.ok(ENTITIES, refs(bob.id, ann.id, bob.id), token=ann.access_token)
    assert data["_entities"] == [
        {"__typename": "User", "id": bob.id, "username": "bob", "email": None},
        {"__typename": "User", "id": ann.id, "username": "ann", "email": ann.email},
        {"__typename": "User", "id": bob.id, "username": "bob", "email": None},
    ]


async def test_entities_email_is_visible_to_an_admin(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    data = await gql.ok(ENTITIES, refs(ann.id), token=admin.access_token)
    assert data["_entities"] == [
        {"__typename": "User", "id": ann.id, "username": "ann", "email": ann.email}
    ]


async def test_entities_without_a_valid_token_show_no_email(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    for token in (None, tampered(ann.access_token)):
        data = await gql.ok(ENTITIES, refs(ann.id), token=token)
        assert data["_entities"] == [
            {"__typename": "User", "id": ann.id, "username": "ann", "email": None}
        ]


async def test_entities_sessions_of_another_user_are_forbidden(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    body = await gql(ENTITY_SESSIONS, refs(ann.id, bob.id), token=ann.access_token)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN", error
    assert error["path"] == ["_entities", 1, "sessions"]
    # sessions is non-null, so bob's entry becomes null; ann's own sessions are hers to see.
    assert body["data"] == {"_entities": [{"username": "ann", "sessions": {"totalCount": 1}}, None]}


async def test_entities_sessions_are_visible_to_an_admin(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    data = await gql.ok(ENTITY_SESSIONS, refs(ann.id), token=admin.access_token)
    assert data["_entities"] == [{"username": "ann", "sessions": {"totalCount": 1}}]


async def test_entities_sessions_without_a_token_are_refused(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    body = await gql(ENTITY_SESSIONS, refs(ann.id))
    [error] = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN", error  # as `node`'s: self_or_admin()
    assert error["path"] == ["_entities", 0, "sessions"]
    assert body["data"] == {"_entities": [None]}


@pytest.mark.parametrize(
    "bad_id",
    [
        pytest.param(to_global_id("User", 999_999), id="no-such-user"),
        pytest.param(to_global_id("Session", "00000000-0000-0000-0000-000000000000"), id="session"),
        pytest.param(to_global_id("User", "abc"), id="not-a-number"),
        pytest.param(to_global_id("User", "²"), id="superscript-digit"),
        pytest.param("not base64 at all!", id="malformed"),
        pytest.param("", id="empty"),
        pytest.param("x" * 500, id="too-long"),
    ],
)
async def test_entities_of_ids_that_are_no_users_are_null(gql: GraphQL, bad_id: str) -> None:
    ann = await gql.register("ann")
    body = await gql(ENTITIES, refs(bad_id, ann.id), token=ann.access_token)
    assert "errors" not in body, body
    assert body["data"]["_entities"] == [
        None,
        {"__typename": "User", "id": ann.id, "username": "ann", "email": ann.email},
    ]


async def test_entities_in_one_request_share_one_batch(
    gql: GraphQL, sql_counter: StatementCounter
) -> None:
    viewer = await gql.register("viewer")
    members = [await gql.register(f"member{number:02d}") for number in range(40)]
    counts: dict[int, int] = {}
    for size in (1, 5, 40):
        ids = [member.id for member in members[:size]]
        sql_counter.reset()
        data = await gql.ok(ENTITIES, refs(*ids), token=viewer.access_token)
        counts[size] = sql_counter.count
        assert [entity["id"] for entity in data["_entities"]] == ids
        assert all(entity["email"] is None for entity in data["_entities"])
    print(f"SQL statements by number of representations: {counts}")
    assert counts[1] == counts[5] == counts[40], (counts, sql_counter.statements)


async def test_entities_cost_counts_every_representation(gql: GraphQL) -> None:
    # Per representation: username 1 + sessions 1 + 100 * (edges, node, id, createdAt) = 402,
    # so 30 representations cost over 12,000 against the default maximum of 10,000.
    ann = await gql.register("ann")
    query = """query($representations: [_Any!]!) {
      _entities(representations: $representations) {
        ... on User { username sessions(first: 100) { edges { node { id createdAt } } } }
      }
    }"""
    body = await gql(query, refs(*[ann.id] * 30), token=ann.access_token)
    assert body.get("data") is None, body.get("data", {}).get("_entities", [])[:1]
    [error] = body["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX", error
    assert error["extensions"]["actual"] > 10_000


# --- the plain schema stays as it was -------------------------------------------------------


def test_plain_schema_after_a_subgraph_is_the_snapshot(tmp_path: Path) -> None:
    federated = build_schema(federated_settings(tmp_path))
    assert USER_KEY in service_sdl(federated)
    printed = cli.printed_schema()
    assert printed == SNAPSHOT.read_text()
    assert "@key" not in printed
    assert "_entities" not in printed and "_service" not in printed


def test_subgraph_after_the_plain_schema_has_its_key_and_the_plain_stays(tmp_path: Path) -> None:
    assert cli.printed_schema() == SNAPSHOT.read_text()
    federated = build_schema(federated_settings(tmp_path))
    assert USER_KEY in service_sdl(federated)
    assert cli.printed_schema() == SNAPSHOT.read_text()


def test_a_plain_schema_built_before_a_subgraph_still_prints_the_snapshot(
    tmp_path: Path,
) -> None:
    plain = build_schema()
    build_schema(federated_settings(tmp_path))
    assert cli.printed_schema(plain) == SNAPSHOT.read_text()


def test_a_subgraph_keeps_its_key_when_a_plain_schema_is_built_after(tmp_path: Path) -> None:
    federated = build_schema(federated_settings(tmp_path))
    build_schema()
    assert USER_KEY in service_sdl(federated)
