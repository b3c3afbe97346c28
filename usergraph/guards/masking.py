"""Error codes for every GraphQL error, and logging and masking of internal faults.

Applied to the final result of each request (GraphQLApp.process_result), so it also sees
errors that Strawberry creates after the schema extensions have run. An internal fault's full
trace goes to the log line whose request id (usergraph.logs) the client sees in
extensions.requestId; the client sees only "Internal server error".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError
from graphql.validation.rules import overlapping_fields_can_be_merged
from graphql.validation.validate import ValidationAbortedError

from usergraph.auth.throttle import StorageUnavailable
from usergraph.db.engine import unreachable
from usergraph.guards.limits import too_complex
from usergraph.logs import outages
from usergraph.schema.errors import ErrorCode

log = logging.getLogger("usergraph.errors")

INTERNAL_MESSAGE = "Internal server error"
# What a client is told to wait when the database or Redis cannot be reached.
UNAVAILABLE_RETRY_AFTER = 5
# graphql-core's own budget for validating one document (overlapping fields' comparisons).
VALIDATION_BUDGET = overlapping_fields_can_be_merged.MAX_COMPLEXITY_BUDGET


# graphql-core quotes the offending input value in coercion errors ("..., found: {'password':
# 'hunter2'}", "String cannot represent a non string value: ..."); a value may be a password
# or a token, so it is cut from what the client and the log see.
_QUOTED_VALUE = (
    re.compile(r"[,.]? ?[Ff]ound: .*\Z", re.DOTALL),
    re.compile(r"(cannot represent [^:]*): .*\Z", re.DOTALL),
)


# graphql-core's messages for variable values that do not fit their declared type; other
# "Variable ..." messages ("is never used", "is not defined") are about the document itself.
_VARIABLE_VALUE = re.compile(
    r"""Variable ["']\$\w+["'] (has invalid value|got invalid value|of (required|non-null) type)"""
)


def redact_values(message: str) -> str:
    """message without the input values graphql-core quotes in it."""
    message = _QUOTED_VALUE[0].sub(".", message)
    return _QUOTED_VALUE[1].sub(r"\1.", message)


def dependency_down(error: GraphQLError) -> str | None:
    """ "database" or "redis" when error is a dependency that cannot be reached; else None."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return None
    if isinstance(original, StorageUnavailable):
        return "redis"
    return "database" if unreachable(original) else None


def is_internal(error: GraphQLError) -> bool:
    """An exception escaped a resolver: not a GraphQL error meant for the client."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def coded_errors(
    errors: Sequence[GraphQLError], request_id: str | None, *, expose_internal: bool = False
) -> list[GraphQLError]:
    """Log each error (an internal fault with its trace; a dependency that is down once per
    outage), then give each its code."""
    for error in errors:
        down = dependency_down(error)
        if down is not None:
            assert error.original_error is not None
            outages.report(down, error.original_error)
        elif is_internal(error):
            log.error(
                "internal error path=%s",
                ".".join(str(p) for p in error.path or ()),
                exc_info=error.original_error,
            )
        else:
            log.debug("request error: %s", redact_values(error.message))
    return [with_code(error, request_id, expose_internal=expose_internal) for error in errors]


def with_code(
    error: GraphQLError, request_id: str | None, *, expose_internal: bool = False
) -> GraphQLError:
    """Return error with extensions.code; internal faults become a masked error.

    Parse, validation and variable errors are the client's to fix and keep their message.
    expose_internal (development) shows the exception's own message instead of the mask. A
    dependency that cannot be reached is SERVICE_UNAVAILABLE with retryAfter.
    """
    down = dependency_down(error)
    if down is not None:
        return GraphQLError(
            f"The service is unavailable ({down} unreachable); try again in "
            f"{UNAVAILABLE_RETRY_AFTER} seconds.",
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={
                "code": ErrorCode.SERVICE_UNAVAILABLE.value,
                "retryAfter": UNAVAILABLE_RETRY_AFTER,
                "requestId": request_id,
            },
        )
    if is_internal(error):
        return GraphQLError(
            f"{INTERNAL_MESSAGE}: {error.message}" if expose_internal else INTERNAL_MESSAGE,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": ErrorCode.INTERNAL_SERVER_ERROR.value, "requestId": request_id},
        )
    if error.extensions and "code" in error.extensions:
        return error
    if isinstance(error, ValidationAbortedError):
        # graphql-core gave up validating (its budget for comparing overlapping fields or for
        # shared fragments ran out): the document asks too much work, as our limits say.
        return too_complex("validation", VALIDATION_BUDGET, "too much work to validate")
    error.message = redact_values(error.message)
    extensions: dict[str, Any] = dict(error.extensions or {})
    extensions["code"] = _code_of(error).value
    error.extensions = extensions
    return error


def _code_of(error: GraphQLError) -> ErrorCode:
    if isinstance(error, GraphQLSyntaxError):
        return ErrorCode.GRAPHQL_PARSE_FAILED
    if error.path is None and _VARIABLE_VALUE.match(error.message):
        return ErrorCode.BAD_USER_INPUT
    if error.path is None:
        return ErrorCode.GRAPHQL_VALIDATION_FAILED
    return ErrorCode.BAD_USER_INPUT
