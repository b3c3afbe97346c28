"""The Schema: the Query and Mutation roots and the types they reach.

The guards that check a document before it runs (usergraph.guards) are handed in as
extensions by the app, which sits above both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import strawberry
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


def build_schema(
    settings: Settings | None = None, *, extensions: Sequence[Any] = ()
) -> UsergraphSchema:
    """Build the schema; settings decide introspection and field suggestions.

    Without settings (schema export, snapshot tests): introspection on, no extensions.
    """
    all_extensions = list(extensions)
    if settings is not None and not settings.introspection_enabled:
        all_extensions.append(DisableIntrospection)
    return UsergraphSchema(
        query=Query,
        mutation=Mutation,
        types=[User, Session],
        extensions=all_extensions,
        config=StrawberryConfig(
            disable_field_suggestions=settings is not None
            and not settings.field_suggestions_enabled
        ),
    )
