"""query_cost on its own: documents and variables in, a number (or BAD_USER_INPUT) out."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import GraphQLError, GraphQLSchema, parse

from usergraph.guards.cost import query_cost
from usergraph.schema import build_schema
from usergraph.schema.relay import MAX_PAGE_SIZE


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema()._schema


def cost(
    schema: GraphQLSchema,
    document: str,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
) -> int:
    return query_cost(schema, parse(document), variables, operation_name)


def test_every_field_counts_one(schema: GraphQLSchema) -> None:
    assert cost(schema, "{ me { id username } }") == 3
    assert cost(schema, "{ __typename }") == 1


def test_a_connection_multiplies_its_children(schema: GraphQLSchema) -> None:
    # users + 50 * (edges + node + id)
    assert cost(schema, "{ users(first: 50) { edges { node { id } } } }") == 1 + 50 * 3
    assert cost(schema, "{ users(last: 7) { totalCount } }") == 1 + 7


def test_the_default_page_size_applies_when_none_is_given(schema: GraphQLSchema) -> None:
    # Query.users and User.sessions both default to first: 20.
    assert cost(schema, "{ users { totalCount } }") == 1 + 20
    assert cost(schema, "{ me { sessions { totalCount } } }") == 1 + 1 + 20


def test_nested_connections_multiply(schema: GraphQLSchema) -> None:
    document = """{ users(first: 10) { edges { node {
        sessions(first: 5) { edges { node { id } } }
    } } } }"""
    # users + 10 * (edges + node + sessions + 5 * (edges + node + id))
    assert cost(schema, document) == 1 + 10 * (3 + 5 * 3)


def test_an_empty_page_still_counts_its_children_once(schema: GraphQLSchema) -> None:
    assert cost(schema, "{ users(first: 0) { totalCount pageInfo { hasNextPage } } }") == 1 + 3


def test_first_and_last_together_count_the_larger(schema: GraphQLSchema) -> None:
    # The resolver refuses the pair; the estimate only must not be lower than either.
    assert cost(schema, "{ users(first: 3, last: 9) { totalCount } }") == 1 + 9


def test_named_fragments_count_where_spread(schema: GraphQLSchema) -> None:
    document = """
        { users(first: 10) { edges { node { ...UserBits } } } me { ...UserBits } }
        fragment UserBits on User { id sessions(first: 4) { totalCount } }
    """
    fragment = 1 + 1 + 4  # id + sessions + 4 * totalCount
    assert cost(schema, document) == (1 + 10 * (1 + 1 + fragment)) + (1 + fragment)


def test_fragments_spreading_fragments(schema: GraphQLSchema) -> None:
    document = """
        { users(first: 2) { edges { node { ...A ...A } } } }
        fragment A on User { ...B id }
        fragment B on User { sessions(first: 3) { ...C } }
        fragment C on SessionConnection { edges { node { id } } }
    """
    b = 1 + 3 * 3
    a = b + 1
    assert cost(schema, document) == 1 + 2 * (1 + 1 + 2 * a)


def test_inline_fragments(schema: GraphQLSchema) -> None:
    document = """query($id: ID!) { node(id: $id) {
        id
        ... on User { sessions(first: 5) { totalCount } }
        ... on Session { user { username } }
        ... { __typename }
    } }"""
    # node + id + (sessions + 5) + (user + username) + __typename: both branches count.
    assert cost(schema, document, {"id": "x"}) == 1 + 1 + (1 + 5) + 2 + 1


def test_variables_give_page_sizes(schema: GraphQLSchema) -> None:
    document = "query($n: Int) { users(first: $n) { totalCount } }"
    assert cost(schema, document, {"n": 40}) == 1 + 40
    assert cost(schema, document, {"n": 40.0}) == 1 + 40  # JSON numbers may carry a .0
    # Not sent, or null: the field's default. Not an Int: left to variable coercion.
    assert cost(schema, document, {}) == 1 + 20
    assert cost(schema, document, {"n": None}) == 1 + 20
    assert cost(schema, document, {"n": "ten"}) == 1 + 20


def test_variable_defaults_apply_when_the_variable_is_not_sent(schema: GraphQLSchema) -> None:
    document = "query($n: Int = 30) { users(first: $n) { totalCount } }"
    assert cost(schema, document) == 1 + 30
    assert cost(schema, document, {"n": 2}) == 1 + 2


def test_skip_and_include(schema: GraphQLSchema) -> None:
    document = """query($yes: Boolean!, $no: Boolean!) { users(first: 10) {
        totalCount @skip(if: true)
        edges @include(if: $no) { node { id } }
        pageInfo @include(if: $yes) { hasNextPage }
        ... @skip(if: $yes) { totalCount }
    } }"""
    assert cost(schema, document, {"yes": True, "no": False}) == 1 + 10 * 2
    # A condition that is not known counts, to be safe.
    assert cost(schema, document, {}) == 1 + 10 * (3 + 2 + 1)


def test_operation_name_picks_the_operation(schema: GraphQLSchema) -> None:
    document = """
        query Small { me { id } }
        query Big { users(first: 100) { totalCount } }
    """
    assert cost(schema, document, operation_name="Small") == 2
    assert cost(schema, document, operation_name="Big") == 1 + 100
    # Ambiguous or unknown: nothing would run (execution reports it).
    assert cost(schema, document) == 0
    assert cost(schema, document, operation_name="Missing") == 0


def test_mutations_count_too(schema: GraphQLSchema) -> None:
    document = """mutation($input: LoginInput!) { login(input: $input) {
        user { sessions(first: 10) { totalCount } }
    } }"""
    assert cost(schema, document, {"input": {}}) == 1 + 1 + 1 + 10


def test_introspection_counts_without_multipliers(schema: GraphQLSchema) -> None:
    assert cost(schema, "{ __schema { types { name fields { name } } } }") == 5


def test_fragment_cycles_do_not_loop(schema: GraphQLSchema) -> None:
    # Invalid (validation reports the cycle); the cost must still come back.
    document = """
        { me { ...A } }
        fragment A on User { id ...B }
        fragment B on User { username ...A }
    """
    assert cost(schema, document) >= 2


def test_many_fragment_spreads_cost_each_fragment_once(schema: GraphQLSchema) -> None:
    # Each fragment spreads the next twice: 2**40 paths, but each fragment is costed once.
    fragments = "".join(f"fragment F{i} on User {{ ...F{i + 1} ...F{i + 1} }}\n" for i in range(40))
    document = "{ me { ...F0 } }\n" + fragments + "fragment F40 on User { id }"
    assert cost(schema, document) == 1 + 2**40


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        ("{ users(first: 101) { totalCount } }", None),
        ("{ users(last: 101) { totalCount } }", None),
        ("{ users(first: -1) { totalCount } }", None),
        ("query($n: Int) { users(first: $n) { totalCount } }", {"n": 1000}),
        ("query($n: Int = 500) { users(first: $n) { totalCount } }", None),
        ("{ me { ...S } } fragment S on User { sessions(first: 200) { totalCount } }", None),
    ],
    ids=["first-101", "last-101", "negative", "variable", "variable-default", "in-fragment"],
)
def test_page_size_out_of_range_is_bad_user_input(
    schema: GraphQLSchema, document: str, variables: dict[str, Any] | None
) -> None:
    with pytest.raises(GraphQLError) as raised:
        cost(schema, document, variables)
    assert raised.value.extensions == {"code": "BAD_USER_INPUT"}
    assert raised.value.message.endswith(f"must be between 0 and {MAX_PAGE_SIZE}.")


def test_a_skipped_field_is_not_checked(schema: GraphQLSchema) -> None:
    assert cost(schema, "{ users(first: 500) @skip(if: true) { totalCount } }") == 0
