"""Domain errors raised by the services; one decorator (resolvers/answers.py) turns them
into GraphQL.

    ServiceError
     ├── Rejected            expected failure of a mutation -> payload.userErrors
     │                       (one or more Problems, each with a ProblemCode, the schema's
     │                       UserErrorCode, and an input field path)
     └── Throttled           too many requests from this client, or the password hasher is
                             saturated -> a RATE_LIMITED GraphQL error with retryAfter

Request-level failures are not the services' business: sign-in and roles are checked by the
permissions declared on the schema's fields, and malformed arguments (global ids, cursors, page
sizes) by schema/relay.py, each raising a GraphQL error with its extensions.code.

Messages never contain secrets, hashes, tokens, or whether an email is registered.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class ProblemCode(enum.Enum):
    """Why a mutation was rejected (the schema's UserErrorCode)."""

    INVALID_EMAIL = "INVALID_EMAIL"
    EMAIL_TAKEN = "EMAIL_TAKEN"
    INVALID_USERNAME = "INVALID_USERNAME"
    USERNAME_TAKEN = "USERNAME_TAKEN"
    WEAK_PASSWORD = "WEAK_PASSWORD"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    ACCOUNT_LOCKED = "ACCOUNT_LOCKED"
    ACCOUNT_DISABLED = "ACCOUNT_DISABLED"
    INVALID_REFRESH_TOKEN = "INVALID_REFRESH_TOKEN"
    REFRESH_TOKEN_REUSED = "REFRESH_TOKEN_REUSED"
    NOT_FOUND = "NOT_FOUND"
    INVALID_INPUT = "INVALID_INPUT"
    EMAIL_NOT_VERIFIED = "EMAIL_NOT_VERIFIED"
    EMAIL_ALREADY_VERIFIED = "EMAIL_ALREADY_VERIFIED"
    INVALID_TOKEN = "INVALID_TOKEN"
    EXPIRED_TOKEN = "EXPIRED_TOKEN"
    INVALID_CODE = "INVALID_CODE"
    INVALID_CHALLENGE = "INVALID_CHALLENGE"
    TOTP_ALREADY_ENABLED = "TOTP_ALREADY_ENABLED"
    TOTP_NOT_ENABLED = "TOTP_NOT_ENABLED"


@dataclass(frozen=True, slots=True)
class Problem:
    code: ProblemCode
    message: str
    # Path to the input field at fault, e.g. ("input", "email"); empty when no one field is.
    field: tuple[str, ...] = field(default_factory=tuple)
    # Seconds until trying again can succeed (ACCOUNT_LOCKED); None when waiting won't help.
    retry_after: int | None = None


class ServiceError(Exception):
    pass


class Rejected(ServiceError):
    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(problem.message for problem in problems))
        self.problems = tuple(problems)

    @classmethod
    def one(cls, code: ProblemCode, message: str, *field: str) -> Rejected:
        return cls([Problem(code=code, message=message, field=field)])


class Throttled(ServiceError):
    """The request is refused before any work; the client may retry after retry_after seconds."""

    def __init__(self, retry_after: int, reason: str) -> None:
        super().__init__(f"Too many requests ({reason}); retry after {retry_after} seconds.")
        self.retry_after = retry_after
        self.reason = reason


class Problems:
    """Collects the problems of several checks, so a client learns all of them at once."""

    def __init__(self) -> None:
        self.found: list[Problem] = []

    def check(self, clean: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Return clean(*args, **kwargs), or None after noting why it was rejected."""
        try:
            return clean(*args, **kwargs)
        except Rejected as exc:
            self.found += exc.problems
            return None

    def raise_any(self) -> None:
        if self.found:
            raise Rejected(self.found)
