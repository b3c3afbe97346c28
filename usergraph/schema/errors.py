"""Top-level GraphQL errors: every one carries extensions.code from ErrorCode."""

from __future__ import annotations

import enum
from typing import Any

from graphql import GraphQLError


class ErrorCode(enum.StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
    RATE_LIMITED = "RATE_LIMITED"
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    # A dependency (database, Redis) cannot be reached; extensions.retryAfter in seconds.
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    # The HTTP request itself is malformed (body, parameters, method, media types); the
    # status code (400, 405, 406, 415) says which. Set by usergraph.http, not by resolvers.
    BAD_REQUEST = "BAD_REQUEST"
    # Persisted queries (usergraph.guards.documents): a hash this server does not know (the
    # client sends the query with it), persisted queries turned off, and a document that is not
    # in the trusted documents.
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
    DOCUMENT_NOT_TRUSTED = "DOCUMENT_NOT_TRUSTED"


class PublicError(GraphQLError):
    """An error meant for the client: never masked."""

    def __init__(self, code: ErrorCode, message: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": code.value, **extensions})


SIGN_IN_MESSAGE = "Sign in to do this."


def unauthenticated(message: str = SIGN_IN_MESSAGE) -> PublicError:
    return PublicError(ErrorCode.UNAUTHENTICATED, message)


def bad_user_input(message: str) -> PublicError:
    return PublicError(ErrorCode.BAD_USER_INPUT, message)


def rate_limited(retry_after: int) -> PublicError:
    return PublicError(
        ErrorCode.RATE_LIMITED,
        f"Too many requests; try again in {retry_after} seconds.",
        retryAfter=retry_after,
    )
