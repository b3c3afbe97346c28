"""Query limits over HTTP: depth, aliases, directives, tokens and cost refuse a document before
it runs, with QUERY_TOO_COMPLEX and the limit that was hit; each is configurable."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import strawberry.schema.schema
from graphql import get_introspection_query

from tests.client import GraphQL, serving


def refusal(body: dict[str, Any]) -> dict[str, Any]:
    """The extensions of the one error of a response refused before execution."""
    assert body.get("data") is None, body
    [error] = body["errors"]
    assert "path" not in error or error["path"] is None
    extensions: dict[str, Any] = error["extensions"]
    return extensions


def too_complex(limit: str, maximum: int, **actual: int) -> dict[str, Any]:
    return {"code": "QUERY_TOO_COMPLEX", "limit": limit, "maximum": maximum, **actual}


def nested(levels: int, leaf: str = "id", first: int = 2) -> str:
    """`me`, then `levels` times through sessions.edges.node.user: 4 levels each."""
    hop = f"sessions(first: {first}) {{ edges {{ node {{ user {{ "
    return "{ me { " + hop * levels + leaf + " }" * (4 * levels) + " } }"


# Depth: `{ me { id } }` is 1 deep.
DEPTH_10 = nested(2, leaf="sessions(first: 2) { totalCount }")
DEPTH_11 = nested(2, leaf="sessions(first: 2) { edges { cursor } }")


# --- depth -----------------------------------------------------------------------------------


async def test_depth_at_the_limit_runs(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    data = await gql.ok(DEPTH_10, token=ann.access_token)
    [edge] = data["me"]["sessions"]["edges"]
    assert edge["node"]["user"]["sessions"]["edges"][0]["node"]["user"]["sessions"] == {
        "totalCount": 1
    }


async def test_depth_over_the_limit_is_refused(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    body = await gql(DEPTH_11, token=ann.access_token)
    assert refusal(body) == too_complex("depth", 10)


async def test_depth_is_configurable(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, max_query_depth=3) as gql:
        assert await gql.ok("{ me { sessions { edges { id: cursor } } } }") == {"me": None}
        body = await gql("{ me { sessions { edges { node { id } } } } }")
        assert refusal(body) == too_complex("depth", 3)


@pytest.mark.parametrize(
    "document",
    [
        "{ me { ...S } } fragment S on User { sessions { edges { node { id } } } }",
        "{ me { ... on User { sessions { edges { node { id } } } } } }",
        "{ me { ...A } } fragment A on User { ... on User { ...B } } "
        "fragment B on User { sessions { edges { node { id } } } }",
        "{ node(id: 1) { ... on User { sessions { edges { node { id } } } } } }",
    ],
    ids=["named", "inline", "fragments-in-fragments", "under-an-interface"],
)
async def test_fragments_count_where_they_are_spread(
    database_url: str, tmp_path: Path, document: str
) -> None:
    async with serving(database_url, tmp_path, max_query_depth=3) as gql:
        assert refusal(await gql(document)) == too_complex("depth", 3)


async def test_nesting_too_deep_to_parse_is_a_depth_refusal(gql: GraphQL) -> None:
    # Few enough tokens, but past what the parser's recursion can read.
    document = "{ " + "me { " * 600 + "id" + " }" * 600 + " }"  # 1804 tokens
    assert refusal(await gql(document)) == too_complex("depth", 10)


async def test_fragment_cycles_are_refused_without_looping(gql: GraphQL) -> None:
    for document in [
        "{ me { ...A } } fragment A on User { ...A }",
        "{ me { ...A } } fragment A on User { sessions { edges { node { user { ...B } } } } } "
        "fragment B on User { id ...A }",
    ]:
        body = await gql(document)
        assert body.get("data") is None
        codes = {error["extensions"]["code"] for error in body["errors"]}
        assert "GRAPHQL_VALIDATION_FAILED" in codes, body


async def test_graphiql_introspection_passes_in_development(gql: GraphQL) -> None:
    # What GraphiQL sends, with every option on; ofType goes 9 levels deep in TypeRef.
    query = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
        one_of=True,
    )
    data = await gql.ok(query)
    assert data["__schema"]["queryType"]["name"] == "Query"
    deep_type = '{ __type(name: "User") { fields { type { ' + "ofType { " * 12 + "name"
    assert await gql.ok(deep_type + " }" * 16)


# --- aliases and directives ------------------------------------------------------------------


def aliases(count: int) -> str:
    return "{ " + " ".join(f"a{i}: __typename" for i in range(count)) + " }"


def directives(count: int) -> str:
    return "{ " + " ".join("__typename @include(if: true)" for _ in range(count)) + " }"


async def test_aliases_up_to_the_limit_run(gql: GraphQL) -> None:
    data = await gql.ok(aliases(15))
    assert len(data) == 15


async def test_aliases_over_the_limit_are_refused(gql: GraphQL) -> None:
    assert refusal(await gql(aliases(16))) == too_complex("aliases", 15, actual=16)


async def test_aliases_count_in_fragments_too(gql: GraphQL) -> None:
    document = "{ a: me { ...F } } fragment F on User { " + aliases(15)[2:]
    assert refusal(await gql(document)) == too_complex("aliases", 15, actual=16)


async def test_directives_up_to_the_limit_run(gql: GraphQL) -> None:
    assert await gql.ok(directives(50)) == {"__typename": "Query"}


async def test_directives_over_the_limit_are_refused(gql: GraphQL) -> None:
    assert refusal(await gql(directives(51))) == too_complex("directives", 50, actual=51)


async def test_aliases_and_directives_are_configurable(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, max_query_aliases=2, max_query_directives=1) as gql:
        await gql.ok(aliases(2))
        await gql.ok(directives(1))
        assert refusal(await gql(aliases(3))) == too_complex("aliases", 2, actual=3)
        assert refusal(await gql(directives(2))) == too_complex("directives", 1, actual=2)


# --- tokens ----------------------------------------------------------------------------------


def typenames(tokens: int) -> str:
    """A document of exactly this many tokens."""
    return "{ " + "__typename " * (tokens - 2) + "}"


def fragments(count: int) -> str:
    """A valid document of 2 + 9 * count tokens (distinct fragments: cheap to validate)."""
    spreads = " ".join(f"...F{i}" for i in range(count))
    definitions = " ".join(f"fragment F{i} on Query {{ __typename }}" for i in range(count))
    return f"{{ {spreads} }} {definitions}"


async def test_tokens_up_to_the_limit_run(gql: GraphQL) -> None:
    assert await gql.ok(fragments(222)) == {"__typename": "Query"}  # 2000 tokens


async def test_tokens_over_the_limit_are_refused_not_a_parse_failure(gql: GraphQL) -> None:
    extensions = refusal(await gql(typenames(2001)))
    assert extensions == too_complex("tokens", 2000)


async def test_tokens_are_configurable_and_comments_count(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, max_query_tokens=12) as gql:
        assert await gql.ok("{ me { id " + "id " * 6 + "} }") == {"me": None}
        assert refusal(await gql("{ me { id " + "id " * 7 + "} }")) == too_complex("tokens", 12)
        padded = "# padding\n" * 13 + "{ me { id } }"
        assert refusal(await gql(padded)) == too_complex("tokens", 12)


async def test_syntax_errors_are_still_parse_failures(gql: GraphQL) -> None:
    [error] = (await gql("{ me { id ")).get("errors", [])
    assert error["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


# --- cost ------------------------------------------------------------------------------------

# me + sessions + n * (edges + node + user + sessions + n * totalCount) = 2 + n * (4 + n)
SESSIONS_OF_SESSIONS = """query($n: Int) { me { sessions(first: $n) { edges { node { user {
    sessions(first: $n) { totalCount } } } } } } }"""


async def test_cost_under_the_limit_runs(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    data = await gql.ok(SESSIONS_OF_SESSIONS, {"n": 96}, token=ann.access_token)  # 9602
    assert len(data["me"]["sessions"]["edges"]) == 1


async def test_cost_over_the_limit_is_refused(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    body = await gql(SESSIONS_OF_SESSIONS, {"n": 100}, token=ann.access_token)
    assert refusal(body) == too_complex("cost", 10_000, actual=2 + 100 * 104)


async def test_cost_is_configurable(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, max_query_cost=100) as gql:
        assert await gql.ok("{ me { sessions(first: 98) { totalCount } } }") == {"me": None}
        body = await gql("{ me { sessions(first: 99) { totalCount } } }")
        assert refusal(body) == too_complex("cost", 100, actual=101)
        # The default page size (20) counts when first is not given.
        body = await gql("{ me { sessions { edges { node { id current createdAt } } } } }")
        assert refusal(body) == too_complex("cost", 100, actual=2 + 20 * 5)


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        ("{ me { id } users(first: 101) { totalCount } }", None),
        ("query($n: Int) { me { id sessions(first: $n) { totalCount } } }", {"n": 101}),
        ("{ me { sessions(first: -1) { totalCount } } }", None),
    ],
    ids=["literal", "variable", "negative"],
)
async def test_page_size_out_of_range_is_refused_before_execution(
    gql: GraphQL, document: str, variables: dict[str, Any] | None
) -> None:
    ann = await gql.register("ann")
    body = await gql(document, variables, token=ann.access_token)
    extensions = refusal(body)  # no data at all: `me` did not run either
    assert extensions == {"code": "BAD_USER_INPUT"}
    assert body["errors"][0]["message"].endswith("must be between 0 and 100.")


# --- the reviewer's attacks ------------------------------------------------------------------


async def test_deep_sessions_user_query_is_refused_fast(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    compact = nested(10, first=100).replace(" ", "")
    assert len(compact) < 450  # took 48 s before the limits
    started = time.perf_counter()
    body = await gql(compact, token=ann.access_token)
    assert time.perf_counter() - started < 5
    assert refusal(body)["code"] == "QUERY_TOO_COMPLEX"


async def test_two_hundred_thousand_aliases_are_refused_fast(gql: GraphQL) -> None:
    document = "{me{" + "a:id " * 200_000 + "}}"  # about 1 MB; took 33 s before the limits
    started = time.perf_counter()
    body = await gql(document)
    assert time.perf_counter() - started < 5
    assert refusal(body)["code"] == "QUERY_TOO_COMPLEX"


# --- caching ---------------------------------------------------------------------------------


async def test_validation_runs_once_for_a_repeated_document(
    gql: GraphQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ValidationCache still hits with the limit rules in place (strawberry #4635)."""
    calls: list[object] = []
    validate: Callable[..., Any] = strawberry.schema.schema.validate

    def counting_validate(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return validate(*args, **kwargs)

    monkeypatch.setattr(strawberry.schema.schema, "validate", counting_validate)
    ann = await gql.register("ann")  # validates the register mutation once
    calls.clear()
    # The cache is keyed on the schema too, and each test's app builds its own: nothing of
    # this document is cached yet.
    document = "query($n: Int) { me { sessions(first: $n) { totalCount } } }"
    for _ in range(5):
        await gql.ok(document, {"n": 3}, token=ann.access_token)
    # Cost depends on the variables, so it is checked on every request: the same cached
    # validation with other variables is refused.
    assert refusal(await gql(document, {"n": 101}, token=ann.access_token))["code"] == (
        "BAD_USER_INPUT"
    )
    assert len(calls) == 1
    await gql.ok("{ me { id } }", token=ann.access_token)
    await gql.ok("{ me { username } }", token=ann.access_token)
    assert len(calls) == 3


# --- field suggestions -----------------------------------------------------------------------


async def test_field_suggestions_follow_the_setting(
    gql: GraphQL, database_url: str, tmp_path: Path
) -> None:
    [error] = (await gql("{ me { usernam } }"))["errors"]
    assert "Did you mean" in error["message"]
    async with serving(database_url, tmp_path, field_suggestions=False) as quiet:
        [error] = (await quiet("{ me { usernam } }"))["errors"]
    assert "Did you mean" not in error["message"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
