"""Mutation payloads: the result, or userErrors for expected failures."""

from __future__ import annotations

from datetime import datetime

import strawberry

from usergraph.schema.types import Session, User
from usergraph.services.errors import Problem, ProblemCode, Rejected
from usergraph.services.sessions import SignedIn

UserErrorCode = strawberry.enum(ProblemCode, name="UserErrorCode")


@strawberry.type
class UserError:
    field: list[str] = strawberry.field(
        description=(
            'Path to the input field at fault, e.g. ["input", "email"]; empty when no one field is.'
        )
    )
    message: str
    code: UserErrorCode  # type: ignore[valid-type]
    retry_after: int | None = strawberry.field(
        default=None,
        description="Seconds until trying again can succeed (ACCOUNT_LOCKED); else null.",
    )

    @classmethod
    def from_problem(cls, problem: Problem) -> UserError:
        return cls(
            field=list(problem.field),
            message=problem.message,
            code=problem.code,
            retry_after=problem.retry_after,
        )


def user_errors(rejected: Rejected) -> list[UserError]:
    return [UserError.from_problem(problem) for problem in rejected.problems]


# Bases of payloads alike in shape; each payload stays a type of its own, as the contract
# names it (the bases are reached by no field, so the schema does not show them).
@strawberry.type
class UserErrorsOnly:
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UserResult:
    user: User | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class AuthPayload:
    access_token: str | None = strawberry.field(
        default=None,
        description="Short-lived JWT, sent as `Authorization: Bearer <token>`.",
    )
    refresh_token: str | None = strawberry.field(
        default=None, description="Long-lived, single-use, opaque; rotated by every refresh."
    )
    token_type: str | None = None
    access_token_expires_at: datetime | None = None
    refresh_token_expires_at: datetime | None = None
    user: User | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)

    @classmethod
    def signed_in(cls, result: SignedIn) -> AuthPayload:
        return cls(
            access_token=result.access.token,
            refresh_token=result.refresh_token,
            token_type="Bearer",
            access_token_expires_at=result.access.expires_at,
            refresh_token_expires_at=result.refresh_expires_at,
            user=result.user,  # type: ignore[arg-type]
        )


@strawberry.type
class LogoutPayload:
    revoked_sessions: int = 0
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ChangePasswordPayload(UserResult):
    pass


@strawberry.type
class UpdateProfilePayload(UserResult):
    pass


@strawberry.type
class RevokeSessionPayload:
    session: Session | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UserPayload(UserResult):
    pass


@strawberry.type
class RequestEmailVerificationPayload(UserErrorsOnly):
    pass


@strawberry.type
class VerifyEmailPayload(UserResult):
    pass


@strawberry.type
class RequestPasswordResetPayload(UserErrorsOnly):
    pass


@strawberry.type
class ResetPasswordPayload(UserResult):
    pass


@strawberry.type
class RequestEmailChangePayload(UserErrorsOnly):
    pass


@strawberry.type
class ConfirmEmailChangePayload(UserResult):
    pass
