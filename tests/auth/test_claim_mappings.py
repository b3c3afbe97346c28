"""Optional claims for Hasura and for PostgREST/PostGraphile-style row security."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.client import serving
from tests.environment import TEST_SIGNING_KEY
from usergraph.auth.tokens import HASURA_CLAIMS, ClaimMappings


def decoded(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, TEST_SIGNING_KEY, algorithms=["HS256"], audience="usergraph", issuer="usergraph"
    )
    return claims


def test_no_mapping_adds_nothing() -> None:
    assert ClaimMappings().claims(7, ["admin", "user"]) == {}


@pytest.mark.parametrize(
    ("roles", "default", "allowed", "role"),
    [
        (["user"], "user", ["user"], "user"),
        (["user", "admin"], "user", ["admin", "user"], "admin"),
        (["editor", "user"], "editor", ["user", "editor"], "user"),
        (["admin", "editor", "user"], "editor", ["admin", "user", "editor"], "admin"),
    ],
)
def test_roles_are_ranked_strongest_first(
    roles: list[str], default: str, allowed: list[str], role: str
) -> None:
    mappings = ClaimMappings(hasura=True, role=True, role_prefix="app_")
    claims = mappings.claims(7, roles)
    assert claims[HASURA_CLAIMS] == {
        "x-hasura-user-id": "7",
        "x-hasura-default-role": default,
        "x-hasura-allowed-roles": allowed,
    }
    assert claims["role"] == f"app_{role}"


def test_an_account_without_roles_gets_no_role_claims() -> None:
    assert ClaimMappings(hasura=True, role=True).claims(7, []) == {}


async def test_tokens_carry_the_mappings_an_operator_turns_on(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(
        database_url, tmp_path, jwt_hasura_claims=True, jwt_role_claim=True, jwt_role_prefix="ug_"
    ) as gql:
        ann = await gql.register(f"ann{uuid.uuid4().hex[:8]}")
        claims = decoded(ann.access_token)
        assert claims[HASURA_CLAIMS]["x-hasura-user-id"] == claims["sub"]
        assert claims[HASURA_CLAIMS]["x-hasura-allowed-roles"] == ["user"]
        assert claims["role"] == "ug_user"
        # A refresh reads the roles again: an administrator's next token says so.
        admin = await gql.admin(f"root{uuid.uuid4().hex[:8]}")
        refreshed = await gql.ok(
            """mutation($t: String!) { refresh(input: {refreshToken: $t}) { accessToken } }""",
            {"t": admin.refresh_token},
        )
        claims = decoded(refreshed["refresh"]["accessToken"])
        assert claims["role"] == "ug_admin"
        assert claims[HASURA_CLAIMS]["x-hasura-default-role"] == "user"
        assert claims[HASURA_CLAIMS]["x-hasura-allowed-roles"] == ["admin", "user"]


async def test_tokens_carry_no_mapping_by_default(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path) as gql:
        claims = decoded((await gql.register(f"ann{uuid.uuid4().hex[:8]}")).access_token)
    assert HASURA_CLAIMS not in claims and "role" not in claims
    assert claims["roles"] == ["user"]
