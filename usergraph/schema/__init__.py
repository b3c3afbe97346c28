"""The Schema and its extensions."""

from __future__ import annotations

import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import AddValidationRules, DisableIntrospection, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from usergraph.schema.extensions import is_internal, redact_values
from usergraph.schema.limits import QueryLimits, limit_extensions
from usergraph.schema.mutation import Mutation
from usergraph.schema.query import Query
from usergraph.schema.text import NoNulCharactersRule
from usergraph.schema.types import Session, User
from usergraph.settings import Settings

log = logging.getLogger("usergraph.errors")

# Parsed and validated documents kept (LRU, shared by every request of the process).
DOCUMENT_CACHE_SIZE = 256


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
    """Build the schema; settings decide the query limits, introspection and field suggestions.

    Without settings (schema export, snapshot tests): the default limits, introspection on.
    """
    limits = QueryLimits.from_settings(settings) if settings else QueryLimits()
    # Factories, not instances: an instance would be shared by concurrent requests. The limit
    # rules inside are made here, once, so ValidationCache hits (see usergraph.schema.limits).
    extensions: list[Any] = [
        *limit_extensions(limits, cache_size=DOCUMENT_CACHE_SIZE),
        lambda: AddValidationRules([NoNulCharactersRule]),
        lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE),
    ]
    if settings is not None and not settings.introspection_enabled:
        extensions.append(DisableIntrospection)
    return UsergraphSchema(
        query=Query,
        mutation=Mutation,
        types=[User, Session],
        extensions=extensions,
        config=StrawberryConfig(
            disable_field_suggestions=settings is not None
            and not settings.field_suggestions_enabled
        ),
    )
