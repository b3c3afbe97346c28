"""Mutation payloads: the result, or userErrors for expected failures."""

from __future__ import annotations

from datetime import datetime

import strawberry

from usergraph.schema.types import Session, User
from usergraph.services.challenges import SecondFactorRequired
from usergraph.services.errors import Problem, ProblemCode, Rejected
from usergraph.services.second_factors import Method
from usergraph.services.sessions import SignedIn

UserErrorCode = strawberry.enum(ProblemCode, name="UserErrorCode")
SecondFactorMethod = strawberry.enum(Method, name="SecondFactorMethod")


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
class SecondFactorChallenge:
    token: str = strawberry.field(
        description="Opaque, single use, short-lived (5 minutes); it dies after 5 wrong codes."
    )
    expires_at: datetime
    methods: list[SecondFactorMethod]  # type: ignore[valid-type]


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
    second_factor_challenge: SecondFactorChallenge | None = strawberry.field(
        default=None,
        description="Set, with no tokens, when the password was right but the account has a "
        "second factor: finish with verifySecondFactor. Null otherwise.",
    )

    @classmethod
    def second_step(cls, required: SecondFactorRequired) -> AuthPayload:
        return cls(
            second_factor_challenge=SecondFactorChallenge(
                token=required.token, expires_at=required.expires_at, methods=list(required.methods)
            )
        )

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


@strawberry.type
class StartTotpEnrollmentPayload:
    secret: str | None = strawberry.field(
        default=None, description="Base32 secret, for typing into an authenticator app by hand."
    )
    otpauth_uri: str | None = strawberry.field(
        default=None,
        description="otpauth://totp/... URI (issuer and account name inside), for QR codes and "
        "password managers.",
    )
    qr_code_svg: str | None = strawberry.field(
        default=None, description="The URI as an SVG QR code."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ConfirmTotpEnrollmentPayload:
    recovery_codes: list[str] | None = None
    user: User | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class DisableTotpPayload(UserResult):
    pass


@strawberry.type
class RegenerateRecoveryCodesPayload:
    recovery_codes: list[str] | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)
