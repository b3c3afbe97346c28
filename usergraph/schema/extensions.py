"""Schema extensions: error codes, masking of internal faults, request ids on errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from usergraph.schema.errors import ErrorCode

INTERNAL_MESSAGE = "Internal server error"


def is_internal(error: GraphQLError) -> bool:
    """An exception escaped a resolver: not a GraphQL error meant for the client."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


class ErrorCodes(SchemaExtension):
    """Give every error an extensions.code; mask internal faults behind the request id.

    Parse, validation and variable errors are the client's to fix and keep their message;
    only exceptions that escaped a resolver are replaced (and logged in full, see the schema).
    """

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is None or not errors:
            return
        request_id = getattr(self.execution_context.context, "request_id", None)
        result.errors = [self._with_code(error, request_id) for error in errors]

    def _with_code(self, error: GraphQLError, request_id: str | None) -> GraphQLError:
        if is_internal(error):
            return GraphQLError(
                INTERNAL_MESSAGE,
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                path=error.path,
                extensions={"code": ErrorCode.INTERNAL_SERVER_ERROR.value, "requestId": request_id},
            )
        if error.extensions and "code" in error.extensions:
            return error
        extensions: dict[str, Any] = dict(error.extensions or {})
        extensions["code"] = self._code_of(error).value
        error.extensions = extensions
        return error

    def _code_of(self, error: GraphQLError) -> ErrorCode:
        if self.execution_context.graphql_document is None:
            return ErrorCode.GRAPHQL_PARSE_FAILED
        if error.path is None and error.message.startswith("Variable "):
            return ErrorCode.BAD_USER_INPUT
        if error.path is None:
            return ErrorCode.GRAPHQL_VALIDATION_FAILED
        return ErrorCode.BAD_USER_INPUT
