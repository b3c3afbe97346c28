"""Selection lookahead: whether a field's query reaches a nested field, through fragments."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from usergraph.schema.lookahead import selects


def field(name: str, *selections: Any) -> SelectedField:
    return SelectedField(name=name, directives={}, arguments={}, selections=list(selections))


def info(*selections: Any) -> Any:
    return SimpleNamespace(selected_fields=[field("users", *selections)])


ROLES = field("roles", field("name"))


@pytest.mark.parametrize(
    "selection",
    [
        field("edges", field("node", field("id"), ROLES)),
        field("edges", InlineFragment(None, [field("node", ROLES)], {})),
        FragmentSpread("F", "UserConnection", {}, [field("edges", field("node", ROLES))]),
        field("edges", field("node", FragmentSpread("U", "User", {}, [ROLES]))),
        field("edges", field("node", InlineFragment("User", [ROLES], {}))),
    ],
    ids=["plain", "inline-fragment", "named-fragment", "fragment-on-node", "typed-inline"],
)
def test_a_nested_field_is_found(selection: Any) -> None:
    assert selects(info(selection), "edges", "node", "roles")


@pytest.mark.parametrize(
    "selection",
    [
        field("edges", field("node", field("id"), field("username"))),
        field("edges", field("cursor")),
        field("roles"),  # at the wrong level
        field("totalCount"),
    ],
    ids=["other-fields", "no-node", "wrong-level", "count-only"],
)
def test_an_absent_field_is_not_found(selection: Any) -> None:
    assert not selects(info(selection), "edges", "node", "roles")
