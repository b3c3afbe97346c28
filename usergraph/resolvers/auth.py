"""Resolvers for signing in: register, login, refresh, changePassword (login's second step is
in second_factors.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import strawberry

from usergraph.resolvers.answers import answers, signed_in_viewer
from usergraph.schema.inputs import (
    ChangePasswordInput,
    LoginInput,
    RefreshInput,
    RegisterInput,
    unset_as_none,
)
from usergraph.schema.payloads import AuthPayload, ChangePasswordPayload
from usergraph.services import auth as auth_service
from usergraph.services import passwords as password_service
from usergraph.services import sessions as session_service
from usergraph.services.challenges import SecondFactorRequired
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.sessions import SignedIn

if TYPE_CHECKING:
    from usergraph.context import Context


def signed_in(ctx: Context, result: SignedIn) -> AuthPayload:
    # The rest of this request sees the new session's user as the viewer, so the payload's
    # user shows its own email and lastLoginAt.
    ctx.sign_in(result.user, result.session_id, result.roles)
    ctx.set_refresh_token_cookie(result.refresh_token, result.refresh_expires_at)
    return AuthPayload.signed_in(result)


@answers(AuthPayload)
async def register(info: strawberry.Info[Context, None], input: RegisterInput) -> AuthPayload:
    ctx, runtime = info.context, info.context.runtime
    result = await auth_service.register(
        db=runtime.db,
        passwords=runtime.passwords,
        policy=runtime.policy,
        throttle=runtime.throttle,
        outbox=runtime.outbox,
        email_policy=runtime.email,
        email=input.email,
        username=input.username,
        password=input.password,
        display_name=unset_as_none(input.display_name),
        client=ctx.client,
    )
    if result is None:  # the address must be verified first: no tokens, no user
        return AuthPayload()
    return signed_in(ctx, result)


@answers(AuthPayload)
async def login(info: strawberry.Info[Context, None], input: LoginInput) -> AuthPayload:
    ctx, runtime = info.context, info.context.runtime
    result = await auth_service.login(
        db=runtime.db,
        passwords=runtime.passwords,
        policy=runtime.policy,
        factors=runtime.factors,
        throttle=runtime.throttle,
        login=input.login,
        password=input.password,
        client=ctx.client,
        require_verified=runtime.email.verification_required,
    )
    if isinstance(result, SecondFactorRequired):  # no tokens until verifySecondFactor
        return AuthPayload.second_step(result)
    return signed_in(ctx, result)


@answers(AuthPayload)
async def refresh(info: strawberry.Info[Context, None], input: RefreshInput) -> AuthPayload:
    ctx, runtime = info.context, info.context.runtime
    refresh_token = ctx.refresh_token(input.refresh_token)
    if not refresh_token:
        raise Rejected.one(
            ProblemCode.INVALID_INPUT, "Give the refresh token.", "input", "refreshToken"
        )
    try:
        result = await session_service.refresh(
            db=runtime.db,
            policy=runtime.policy,
            throttle=runtime.throttle,
            refresh_token=refresh_token,
            client=ctx.client,
        )
    except Rejected:
        if not input.refresh_token:  # the cookie's token is dead: stop sending it
            ctx.clear_refresh_token_cookie()
        raise
    return signed_in(ctx, result)


@answers(ChangePasswordPayload)
async def change_password(
    info: strawberry.Info[Context, None], input: ChangePasswordInput
) -> ChangePasswordPayload:
    ctx, runtime = info.context, info.context.runtime
    viewer = await signed_in_viewer(info)
    updated = await password_service.change_password(
        db=runtime.db,
        passwords=runtime.passwords,
        throttle=runtime.throttle,
        user_id=viewer.user.id,
        current_session_id=viewer.session_id,
        current_password=input.current_password,
        new_password=input.new_password,
    )
    ctx.loaders.forget_sessions()
    ctx.loaders.prime_user(updated)
    return ChangePasswordPayload(user=updated)  # type: ignore[arg-type]
