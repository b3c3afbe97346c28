"""Input types and the enums clients pass in.

Input classes are named `...Input` in Python, so none shares a name with a db or service type;
`name=` keeps the SDL's names where they differ (UserFilter, UserOrder).
"""

from __future__ import annotations

import enum
from typing import TypeVar

import strawberry

T = TypeVar("T")


def unset_as_none(value: T | None) -> T | None:
    """None for an optional field or argument the client left out (UNSET) or sent as null."""
    return None if value is strawberry.UNSET else value


@strawberry.enum
class UserOrderField(enum.Enum):
    CREATED_AT = "created_at"
    USERNAME = "username"


@strawberry.enum
class OrderDirection(enum.Enum):
    ASC = "asc"
    DESC = "desc"


@strawberry.input(name="UserFilter")
class UserFilterInput:
    search: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Case-insensitive match on username, display name or email.",
    )
    role: str | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET


@strawberry.input(name="UserOrder")
class UserOrderInput:
    field: UserOrderField
    direction: OrderDirection


@strawberry.input
class RegisterInput:
    email: str
    username: str
    password: str
    display_name: str | None = strawberry.UNSET


@strawberry.input
class LoginInput:
    login: str = strawberry.field(description="Email or username.")
    password: str


@strawberry.input(
    description=(
        "refreshToken may be omitted when the server runs in cookie mode and the cookie is present."
    )
)
class RefreshInput:
    refresh_token: str | None = strawberry.UNSET


@strawberry.input
class LogoutInput:
    refresh_token: str | None = strawberry.UNSET


@strawberry.input
class ChangePasswordInput:
    current_password: str
    new_password: str


@strawberry.input
class UpdateProfileInput:
    display_name: str | None = strawberry.field(
        default=strawberry.UNSET, description="Omit to keep; null or empty to clear."
    )
    username: str | None = strawberry.field(default=strawberry.UNSET, description="Omit to keep.")


@strawberry.input
class RevokeSessionInput:
    id: strawberry.ID


@strawberry.input
class SetUserRolesInput:
    user_id: strawberry.ID
    roles: list[str]


@strawberry.input
class SetUserActiveInput:
    user_id: strawberry.ID
    active: bool


@strawberry.input
class RequestEmailVerificationInput:
    email: str | None = strawberry.UNSET


@strawberry.input
class VerifyEmailInput:
    token: str


@strawberry.input
class RequestPasswordResetInput:
    email: str


@strawberry.input
class ResetPasswordInput:
    token: str
    new_password: str


@strawberry.input
class RequestEmailChangeInput:
    new_email: str
    password: str


@strawberry.input
class ConfirmEmailChangeInput:
    token: str


@strawberry.input
class StartTotpEnrollmentInput:
    password: str


@strawberry.input
class ConfirmTotpEnrollmentInput:
    code: str


@strawberry.input(description="`code` is a current TOTP code or an unused recovery code.")
class DisableTotpInput:
    password: str
    code: str


@strawberry.input
class RegenerateRecoveryCodesInput:
    password: str
    code: str


@strawberry.input
class VerifySecondFactorInput:
    challenge_token: str
    code: str


@strawberry.input
class ResetSecondFactorsInput:
    user_id: strawberry.ID
