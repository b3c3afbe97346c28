"""The Schema: the Query and Mutation roots and the types they reach.

The guards that check a document before it runs (usergraph.guards) are handed in as
extensions by the app, which sits above both.

With USERGRAPH_FEDERATION the same roots and types make an Apollo Federation 2 subgraph
instead: `User @key(fields: "id")`, `_service { sdl }` and `_entities`, whose users resolve
through the request's loaders with the same field permissions. Both kinds share the User
type, so its @key is put on only while a subgraph is built (entities are found then) and
while a subgraph prints its SDL: a plain schema and a subgraph can live in one process.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import strawberry
import strawberry.federation
import strawberry.federation.schema as federation_schema
from graphql import GraphQLError
from strawberry.extensions import DisableIntrospection
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from usergraph.schema.execution import FastExecutor
from usergraph.schema.mutation import Mutation
from usergraph.schema.query import Query
from usergraph.schema.types import Session, User
from usergraph.settings import Settings


class UsergraphSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Strawberry would log every error here; ours are logged where they are masked
        # (usergraph.guards.masking), once, with the request id the client sees.
        return None


class FederatedSchema(strawberry.federation.Schema):
    def __init__(self, **kwargs: Any) -> None:
        with _user_key():
            super().__init__(**kwargs)

    def as_str(self) -> str:
        with _user_key():
            return super().as_str()

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        return None  # as UsergraphSchema's


_KEY_LOCK = threading.RLock()


@contextlib.contextmanager
def _user_key() -> Iterator[None]:
    """User's @key(fields: "id") on the shared User definition, for what happens inside."""
    from strawberry.federation.schema_directives import Key

    definition = User.__strawberry_definition__  # type: ignore[attr-defined]
    with _KEY_LOCK:
        plain = list(definition.directives or ())
        definition.directives = [*plain, Key(fields="id", resolvable=True)]  # type: ignore[arg-type]
        try:
            yield
        finally:
            definition.directives = plain


def _print_subgraph(schema: Any, **kwargs: Any) -> str:
    # Strawberry's `_service { sdl }` prints through this module-level function: a subgraph
    # prints with its @key on.
    if isinstance(schema, FederatedSchema):
        with _user_key():
            return _print_schema(schema, **kwargs)
    return _print_schema(schema, **kwargs)


_print_schema = federation_schema.print_schema  # type: ignore[attr-defined]
federation_schema.print_schema = _print_subgraph  # type: ignore[attr-defined]


def build_schema(
    settings: Settings | None = None, *, extensions: Sequence[Any] = ()
) -> strawberry.Schema:
    """Build the schema; settings decide introspection, field suggestions and federation.

    Without settings (schema export, snapshot tests): the plain schema, introspection on, no
    extensions.
    """
    federation = settings is not None and settings.federation
    all_extensions = list(extensions)
    if settings is not None and not settings.introspection_enabled:
        all_extensions.append(DisableIntrospection)
    schema_class = FederatedSchema if federation else UsergraphSchema
    fast = settings is None or settings.fast_execution
    return schema_class(
        query=Query,
        mutation=Mutation,
        types=[User, Session],
        extensions=all_extensions,
        execution_context_class=FastExecutor if fast else None,
        config=StrawberryConfig(
            disable_field_suggestions=settings is not None
            and not settings.field_suggestions_enabled
        ),
    )
