"""Query.users over HTTP: admins only, keyset pagination, order, filter, and no N+1."""

from __future__ import annotations

from typing import Any

import pytest

from tests.client import Account, GraphQL, StatementCounter
from tests.helpers import assert_only_error

USERS = """query($first: Int, $after: String, $last: Int, $before: String,
                 $filter: UserFilter, $orderBy: UserOrder) {
  users(first: $first, after: $after, last: $last, before: $before,
        filter: $filter, orderBy: $orderBy) {
    totalCount
    edges { cursor node { id username } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""

NAMES = ["mia", "carl", "zoe", "bea", "otto", "lena", "dave"]
# gql.admin() registers "admin" first, then NAMES in this order: the CREATED_AT ASC order.
CREATED_ORDER = ["admin", *NAMES]

# Selected in the N+1 test: every nested relation that a page of users can load.
NESTED = """query($first: Int) { users(first: $first) {
  totalCount
  edges { node {
    id username email roles { name }
    sessions(first: 5) { totalCount edges { node { id current } } }
  } }
} }"""


async def users_page(gql: GraphQL, token: str, **variables: Any) -> dict[str, Any]:
    connection: dict[str, Any] = (await gql.ok(USERS, variables, token=token))["users"]
    return connection


def usernames(connection: dict[str, Any]) -> list[str]:
    return [edge["node"]["username"] for edge in connection["edges"]]


async def error_code(gql: GraphQL, token: str | None, **variables: Any) -> str:
    body = await gql(USERS, variables, token=token)
    assert body["data"] is None, body
    [error] = body["errors"]
    assert error["path"] == ["users"], error
    code: str = error["extensions"]["code"]
    return code


@pytest.fixture
async def admin(gql: GraphQL) -> Account:
    """An administrator and the users in NAMES (registered in that order)."""
    account = await gql.admin()
    for name in NAMES:
        await gql.register(name)
    return account


async def test_users_needs_sign_in(gql: GraphQL, admin: Account) -> None:
    assert await error_code(gql, None) == "UNAUTHENTICATED"


async def test_users_is_for_admins_only(gql: GraphQL, admin: Account) -> None:
    ann = await gql.register("ann")
    assert await error_code(gql, ann.access_token) == "FORBIDDEN"


async def test_users_default_order_is_oldest_first(gql: GraphQL, admin: Account) -> None:
    connection = await users_page(gql, admin.access_token)
    assert usernames(connection) == CREATED_ORDER
    assert connection["totalCount"] == len(CREATED_ORDER)
    assert connection["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": False,
        "startCursor": connection["edges"][0]["cursor"],
        "endCursor": connection["edges"][-1]["cursor"],
    }


async def test_users_first_after_walks_every_user_once(gql: GraphQL, admin: Account) -> None:
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        connection = await users_page(gql, admin.access_token, first=3, after=after)
        pages += 1
        page_info = connection["pageInfo"]
        assert len(connection["edges"]) <= 3
        assert page_info["hasPreviousPage"] is (after is not None)
        assert page_info["startCursor"] == connection["edges"][0]["cursor"]
        assert page_info["endCursor"] == connection["edges"][-1]["cursor"]
        assert connection["totalCount"] == len(CREATED_ORDER)
        seen += usernames(connection)
        if not page_info["hasNextPage"]:
            break
        assert len(connection["edges"]) == 3
        after = page_info["endCursor"]
    assert seen == CREATED_ORDER  # no duplicates, no gaps
    assert pages == 3


async def test_users_last_before_walks_backwards(gql: GraphQL, admin: Account) -> None:
    pages: list[list[str]] = []
    before = None
    while True:
        connection = await users_page(gql, admin.access_token, last=3, before=before)
        page_info = connection["pageInfo"]
        assert page_info["hasNextPage"] is (before is not None)
        assert page_info["startCursor"] == connection["edges"][0]["cursor"]
        assert page_info["endCursor"] == connection["edges"][-1]["cursor"]
        pages.append(usernames(connection))
        if not page_info["hasPreviousPage"]:
            break
        before = page_info["startCursor"]
    # Each page is in the connection's order; the pages come newest first.
    assert pages == [CREATED_ORDER[-3:], CREATED_ORDER[-6:-3], CREATED_ORDER[:-6]]


async def test_users_after_then_before_returns_to_the_same_page(
    gql: GraphQL, admin: Account
) -> None:
    first = await users_page(gql, admin.access_token, first=3)
    second = await users_page(
        gql, admin.access_token, first=3, after=first["pageInfo"]["endCursor"]
    )
    back = await users_page(
        gql, admin.access_token, last=3, before=second["pageInfo"]["startCursor"]
    )
    assert usernames(back) == usernames(first)
    assert back["pageInfo"]["hasPreviousPage"] is False
    assert back["pageInfo"]["hasNextPage"] is True


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ({"field": "USERNAME", "direction": "ASC"}, sorted(CREATED_ORDER)),
        ({"field": "USERNAME", "direction": "DESC"}, sorted(CREATED_ORDER, reverse=True)),
        ({"field": "CREATED_AT", "direction": "ASC"}, CREATED_ORDER),
        ({"field": "CREATED_AT", "direction": "DESC"}, CREATED_ORDER[::-1]),
    ],
    ids=["username-asc", "username-desc", "created-asc", "created-desc"],
)
async def test_users_order_by(
    gql: GraphQL, admin: Account, order: dict[str, str], expected: list[str]
) -> None:
    assert usernames(await users_page(gql, admin.access_token, orderBy=order)) == expected
    # Walking in pages of 2 gives the same order, forwards and backwards.
    forwards: list[str] = []
    after = None
    while True:
        page = await users_page(gql, admin.access_token, first=2, after=after, orderBy=order)
        forwards += usernames(page)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert forwards == expected
    backwards: list[str] = []
    before = None
    while True:
        page = await users_page(gql, admin.access_token, last=2, before=before, orderBy=order)
        backwards = usernames(page) + backwards
        if not page["pageInfo"]["hasPreviousPage"]:
            break
        before = page["pageInfo"]["startCursor"]
    assert backwards == expected


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("SMITH", ["robert", "alice"]),
        ("bob", ["bobby", "robert", "bob_by"]),
        ("EXAMPLE.ORG", ["alice"]),
        ("Al", ["alice"]),
        ("_", ["bob_by"]),
        ("%", []),
        ("nobody-matches", []),
    ],
)
async def test_users_filter_search_is_case_insensitive(
    gql: GraphQL, search: str, expected: list[str]
) -> None:
    admin = await gql.admin()
    await gql.register("robert", display_name="Bob Smith")
    await gql.register("alice", email="Alice@Example.ORG", display_name="Alice SMITHERS")
    await gql.register("bobby")
    await gql.register("bob_by", display_name="Underscore")
    connection = await users_page(gql, admin.access_token, filter={"search": search}, orderBy=None)
    assert sorted(usernames(connection)) == sorted(expected)
    assert connection["totalCount"] == len(expected)


async def test_users_filter_by_role(gql: GraphQL, admin: Account) -> None:
    admins = await users_page(gql, admin.access_token, filter={"role": "admin"})
    assert usernames(admins) == ["admin"]
    assert admins["totalCount"] == 1
    everyone = await users_page(gql, admin.access_token, filter={"role": "user"})
    assert usernames(everyone) == CREATED_ORDER
    nobody = await users_page(gql, admin.access_token, filter={"role": "wizard"})
    assert nobody["edges"] == []
    assert nobody["totalCount"] == 0


async def test_users_filter_by_is_active(gql: GraphQL, admin: Account) -> None:
    everyone = await users_page(gql, admin.access_token)
    ids = {edge["node"]["username"]: edge["node"]["id"] for edge in everyone["edges"]}
    for name in ("zoe", "otto"):
        data = await gql.ok(
            """mutation($input: SetUserActiveInput!) {
                 setUserActive(input: $input) { userErrors { code } } }""",
            {"input": {"userId": ids[name], "active": False}},
            token=admin.access_token,
        )
        assert data["setUserActive"]["userErrors"] == []
    inactive = await users_page(gql, admin.access_token, filter={"isActive": False})
    assert usernames(inactive) == ["zoe", "otto"]
    assert inactive["totalCount"] == 2
    active = await users_page(gql, admin.access_token, filter={"isActive": True})
    assert usernames(active) == [name for name in CREATED_ORDER if name not in ("zoe", "otto")]
    assert active["totalCount"] == len(CREATED_ORDER) - 2


async def test_users_filters_combine_and_page(gql: GraphQL, admin: Account) -> None:
    """totalCount counts the filtered users, not the page and not everyone."""
    await gql.register("lenny")
    await gql.register("lenora")
    search = {"search": "len"}
    first = await users_page(gql, admin.access_token, first=2, filter=search)
    assert usernames(first) == ["lena", "lenny"]
    assert first["totalCount"] == 3
    assert first["pageInfo"]["hasNextPage"] is True
    rest = await users_page(
        gql, admin.access_token, first=2, after=first["pageInfo"]["endCursor"], filter=search
    )
    assert usernames(rest) == ["lenora"]
    assert rest["totalCount"] == 3
    assert rest["pageInfo"]["hasNextPage"] is False


async def test_users_empty_page(gql: GraphQL, admin: Account) -> None:
    connection = await users_page(gql, admin.access_token, filter={"search": "qqq"})
    assert connection == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {
            "hasNextPage": False,
            "hasPreviousPage": False,
            "startCursor": None,
            "endCursor": None,
        },
    }


async def test_users_first_zero_tells_whether_there_are_users(gql: GraphQL, admin: Account) -> None:
    connection = await users_page(gql, admin.access_token, first=0)
    assert connection["edges"] == []
    assert connection["pageInfo"]["hasNextPage"] is True
    assert connection["totalCount"] == len(CREATED_ORDER)


async def test_users_first_100_is_allowed(gql: GraphQL, admin: Account) -> None:
    connection = await users_page(gql, admin.access_token, first=100)
    assert usernames(connection) == CREATED_ORDER


@pytest.mark.parametrize(
    "variables",
    [{"first": 2, "last": 2}, {"first": None}],
    ids=["first-and-last", "no-size"],
)
async def test_users_bad_page_size_is_bad_user_input(
    gql: GraphQL, admin: Account, variables: dict[str, Any]
) -> None:
    assert await error_code(gql, admin.access_token, **variables) == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    "variables",
    [{"first": 101}, {"first": -1}, {"last": 101}, {"last": -1}],
    ids=["first-101", "first-negative", "last-101", "last-negative"],
)
async def test_users_page_size_out_of_range_is_refused_before_execution(
    gql: GraphQL, admin: Account, variables: dict[str, Any]
) -> None:
    # Checked with the query cost (usergraph.guards.limits): no data and no path.
    body = await gql(USERS, variables, token=admin.access_token)
    assert body.get("data") is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "path" not in error


async def test_users_first_and_last_written_as_literals_is_bad_user_input(
    gql: GraphQL, admin: Account
) -> None:
    body = await gql("{ users(first: 2, last: 2) { totalCount } }", token=admin.access_token)
    assert_only_error(body, "BAD_USER_INPUT")


@pytest.mark.parametrize("argument", ["after", "before"])
@pytest.mark.parametrize(
    "cursor",
    ["garbage", "", "eyJub3QiOiAianNvbiBsaXN0In0", "W10", "WyJ1YyIsICJ4IiwgMV0", "A" * 600],
    ids=["garbage", "empty", "json-object", "empty-list", "bad-date", "too-long"],
)
async def test_users_garbage_cursor_is_bad_user_input(
    gql: GraphQL, admin: Account, argument: str, cursor: str
) -> None:
    variables: dict[str, Any] = {argument: cursor}
    if argument == "before":
        variables["last"] = 2
    if cursor == "":
        # An empty cursor is the same as none: not an error.
        await users_page(gql, admin.access_token, **variables)
        return
    assert await error_code(gql, admin.access_token, **variables) == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    ("made_with", "used_with"),
    [
        ({"field": "USERNAME", "direction": "ASC"}, {"field": "CREATED_AT", "direction": "ASC"}),
        ({"field": "CREATED_AT", "direction": "ASC"}, {"field": "USERNAME", "direction": "ASC"}),
    ],
    ids=["username-to-created", "created-to-username"],
)
async def test_users_cursor_from_another_order_is_bad_user_input(
    gql: GraphQL, admin: Account, made_with: dict[str, str], used_with: dict[str, str]
) -> None:
    page = await users_page(gql, admin.access_token, first=2, orderBy=made_with)
    cursor = page["pageInfo"]["endCursor"]
    for variables in ({"after": cursor}, {"last": 2, "before": cursor}):
        code = await error_code(gql, admin.access_token, orderBy=used_with, **variables)
        assert code == "BAD_USER_INPUT"


async def test_users_cursor_from_user_sessions_is_bad_user_input(
    gql: GraphQL, admin: Account
) -> None:
    data = await gql.ok("{ me { sessions { pageInfo { endCursor } } } }", token=admin.access_token)
    cursor = data["me"]["sessions"]["pageInfo"]["endCursor"]
    assert await error_code(gql, admin.access_token, after=cursor) == "BAD_USER_INPUT"


async def test_users_sql_statements_are_the_same_for_pages_of_5_50_and_100(
    gql: GraphQL, sql_counter: StatementCounter
) -> None:
    admin = await gql.admin()
    for number in range(105):
        await gql.register(f"member{number:03d}")  # registration opens one session each

    counts: dict[int, int] = {}
    for size in (5, 50, 100):
        sql_counter.reset()
        data = await gql.ok(NESTED, {"first": size}, token=admin.access_token)
        counts[size] = sql_counter.count
        edges = data["users"]["edges"]
        assert len(edges) == size
        assert data["users"]["totalCount"] == 106
        for edge in edges:
            node = edge["node"]
            assert node["email"] is not None
            assert {"name": "user"} in node["roles"]
            assert node["sessions"]["totalCount"] == 1
            assert len(node["sessions"]["edges"]) == 1
        assert edges[0]["node"]["sessions"]["edges"][0]["node"]["current"] is True  # the admin
    print(f"SQL statements by page size: {counts}")
    assert counts[5] == counts[50] == counts[100], (counts, sql_counter.statements)
    assert counts[100] <= 20, sql_counter.statements
