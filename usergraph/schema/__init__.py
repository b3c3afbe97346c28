"""The Schema and its extensions."""

from __future__ import annotations

import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import DisableIntrospection, ParserCache, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from usergraph.schema.extensions import is_internal, redact_values
from usergraph.schema.mutation import Mutation
from usergraph.schema.query import Query
from usergraph.schema.types import Session, User
from usergraph.settings import Settings

log = logging.getLogger("usergraph.errors")


class UsergraphSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Runs before GraphQLApp.process_result masks them: the full trace goes to the log
        # line, whose request id (usergraph.logs) the client sees in extensions.requestId.
        for error in errors:
            if is_internal(error):
                log.error(
                    "internal error path=%s",
                    ".".join(str(p) for p in error.path or ()),
                    exc_info=error.original_error,
                )
            else:
                log.debug("request error: %s", redact_values(error.message))


def build_schema(settings: Settings | None = None) -> UsergraphSchema:
    """Build the schema; settings decide introspection and field suggestions."""
    introspection = settings.introspection_enabled if settings else True
    extensions: list[Any] = [
        lambda: ParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    return UsergraphSchema(
        query=Query,
        mutation=Mutation,
        types=[User, Session],
        extensions=extensions,
        config=StrawberryConfig(
            disable_field_suggestions=bool(settings and settings.is_production)
        ),
    )
