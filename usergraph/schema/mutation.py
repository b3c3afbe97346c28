"""The Mutation root: one input, one payload with userErrors."""

from __future__ import annotations

import strawberry

from usergraph.resolvers import auth, email, second_factors, sessions, users
from usergraph.schema.payloads import (
    AuthPayload,
    ChangePasswordPayload,
    ConfirmEmailChangePayload,
    ConfirmTotpEnrollmentPayload,
    DisableTotpPayload,
    LogoutPayload,
    RegenerateRecoveryCodesPayload,
    RequestEmailChangePayload,
    RequestEmailVerificationPayload,
    RequestPasswordResetPayload,
    ResetPasswordPayload,
    RevokeSessionPayload,
    StartTotpEnrollmentPayload,
    UpdateProfilePayload,
    UserPayload,
    VerifyEmailPayload,
)
from usergraph.schema.permissions import admins_only, signed_in


@strawberry.type
class Mutation:
    register: AuthPayload = strawberry.field(
        resolver=auth.register, description="Create an account and sign it in."
    )
    login: AuthPayload = strawberry.field(
        resolver=auth.login,
        description="Sign in with email or username and password; opens a session.",
    )
    refresh: AuthPayload = strawberry.field(
        resolver=auth.refresh,
        description="Trade a refresh token for a new access token and a new refresh token "
        "(rotation).",
    )
    logout: LogoutPayload = strawberry.field(
        resolver=sessions.logout,
        description="End one session: the given refresh token's, else the current access token's.",
    )
    logout_all: LogoutPayload = strawberry.field(
        resolver=sessions.logout_all,
        extensions=signed_in(),
        description="End every session of the viewer.",
    )
    change_password: ChangePasswordPayload = strawberry.field(
        resolver=auth.change_password,
        extensions=signed_in(),
        description="Change the viewer's password; every other session of the viewer ends.",
    )
    update_profile: UpdateProfilePayload = strawberry.field(
        resolver=users.update_profile,
        extensions=signed_in(),
        description="Change the viewer's own profile.",
    )
    revoke_session: RevokeSessionPayload = strawberry.field(
        resolver=sessions.revoke_session,
        extensions=signed_in(),
        description="End one of the viewer's sessions (an administrator may end anyone's).",
    )
    set_user_roles: UserPayload = strawberry.field(
        resolver=users.set_user_roles,
        extensions=admins_only(),
        description="Administrators: replace a user's roles.",
    )
    set_user_active: UserPayload = strawberry.field(
        resolver=users.set_user_active,
        extensions=admins_only(),
        description="Administrators: disable or enable an account; disabling ends its sessions.",
    )
    request_email_verification: RequestEmailVerificationPayload = strawberry.field(
        resolver=email.request_email_verification,
        description="Send the verification email again: to the viewer's address, or (signed "
        "out) to `email`.",
    )
    verify_email: VerifyEmailPayload = strawberry.field(
        resolver=email.verify_email,
        description="Prove the address with the token from the email. Needs no sign-in.",
    )
    request_password_reset: RequestPasswordResetPayload = strawberry.field(
        resolver=email.request_password_reset,
        description="Email a password-reset link. The answer is the same whether or not an "
        "account has the address.",
    )
    reset_password: ResetPasswordPayload = strawberry.field(
        resolver=email.reset_password,
        description="Set a new password with the token from the email. Every session of the "
        "account ends.",
    )
    request_email_change: RequestEmailChangePayload = strawberry.field(
        resolver=email.request_email_change,
        extensions=signed_in(),
        description="Start changing the viewer's email: a link goes to the new address, a "
        "notice to the old one.",
    )
    confirm_email_change: ConfirmEmailChangePayload = strawberry.field(
        resolver=email.confirm_email_change,
        description="Finish an email change with the token sent to the new address.",
    )
    start_totp_enrollment: StartTotpEnrollmentPayload = strawberry.field(
        resolver=second_factors.start_totp_enrollment,
        extensions=signed_in(),
        description="Begin TOTP enrollment: a new secret; nothing changes until "
        "confirmTotpEnrollment.",
    )
    confirm_totp_enrollment: ConfirmTotpEnrollmentPayload = strawberry.field(
        resolver=second_factors.confirm_totp_enrollment,
        extensions=signed_in(),
        description="Turn TOTP on with a current code; answers the recovery codes, shown this "
        "once.",
    )
    disable_totp: DisableTotpPayload = strawberry.field(
        resolver=second_factors.disable_totp,
        extensions=signed_in(),
        description="Turn TOTP off (password and a current code or a recovery code).",
    )
    regenerate_recovery_codes: RegenerateRecoveryCodesPayload = strawberry.field(
        resolver=second_factors.regenerate_recovery_codes,
        extensions=signed_in(),
        description="Replace the recovery codes; the old ones stop working.",
    )
    verify_second_factor: AuthPayload = strawberry.field(
        resolver=second_factors.verify_second_factor,
        description="The second step of a login whose account has a second factor: opens the "
        "session.",
    )
    reset_second_factors: UserPayload = strawberry.field(
        resolver=second_factors.reset_second_factors,
        extensions=admins_only(),
        description="Administrators: turn off a user's second factors (a user who lost them all).",
    )
