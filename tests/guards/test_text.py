"""Text no database takes: NUL characters in string literals are refused before execution."""

from __future__ import annotations

import pytest

from tests.client import GraphQL
from tests.helpers import error_codes


@pytest.mark.parametrize(
    "query",
    [
        r'{ user(username: "ann\u0000") { id } }',
        r'mutation { login(input: {login: "\u0000", password: "x"}) { accessToken } }',
    ],
    ids=["escape", "in-a-mutation"],
)
async def test_nul_in_a_string_literal_is_bad_user_input(gql: GraphQL, query: str) -> None:
    body = await gql(query)
    assert "data" not in body  # refused before execution: no data entry at all
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "NUL" in body["errors"][0]["message"]


async def test_other_control_characters_are_plain_text(gql: GraphQL) -> None:
    account = await gql.register("ann")
    data = await gql.ok(r'{ user(username: "nobody\t\u0001") { id } }', token=account.access_token)
    assert data["user"] is None  # no such user; asked without error
