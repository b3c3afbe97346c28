"""The Schema: the Query and Mutation roots and the types they reach.

The guards that check a document before it runs (usergraph.guards) are handed in as
extensions by the app, which sits above both.

With USERGRAPH_FEDERATION the same roots and types make an Apollo Federation 2 subgraph
instead: `User @key(fields: "id")`, `_service { sdl }` and `_entities`, whose users resolve
through the request's loaders with the same field permissions. The @key sits on the User
type's definition while a subgraph is built and is taken off for the plain schema; a process
serves one or the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import strawberry
import strawberry.federation
from graphql import GraphQLError
from strawberry.extensions import DisableIntrospection
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

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
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        return None  # as UsergraphSchema's


def build_schema(
    settings: Settings | None = None, *, extensions: Sequence[Any] = ()
) -> strawberry.Schema:
    """Build the schema; settings decide introspection, field suggestions and federation.

    Without settings (schema export, snapshot tests): the plain schema, introspection on, no
    extensions.
    """
    federation = settings is not None and settings.federation
    _user_key(on=federation)
    all_extensions = list(extensions)
    if settings is not None and not settings.introspection_enabled:
        all_extensions.append(DisableIntrospection)
    schema_class = FederatedSchema if federation else UsergraphSchema
    return schema_class(
        query=Query,
        mutation=Mutation,
        types=[User, Session],
        extensions=all_extensions,
        config=StrawberryConfig(
            disable_field_suggestions=settings is not None
            and not settings.field_suggestions_enabled
        ),
    )


def _user_key(*, on: bool) -> None:
    """Put User's @key(fields: "id") on (subgraph) or take it off (plain schema)."""
    from strawberry.federation.schema_directives import Key

    definition = User.__strawberry_definition__  # type: ignore[attr-defined]
    directives = [d for d in definition.directives or () if not isinstance(d, Key)]
    if on:
        directives.append(Key(fields="id", resolvable=True))  # type: ignore[arg-type]
    definition.directives = directives
