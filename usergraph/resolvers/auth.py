"""Resolvers for signing in and out: register, login, refresh, changePassword."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from strawberry import Info

from usergraph.context import Context
from usergraph.schema.errors import rate_limited
from usergraph.schema.inputs import (
    ChangePasswordInput,
    LoginInput,
    RefreshInput,
    RegisterInput,
    given,
)
from usergraph.schema.payloads import AuthPayload, ChangePasswordPayload, user_errors
from usergraph.services import auth as auth_service
from usergraph.services.errors import Code, Rejected, Throttled
from usergraph.services.sessions import SignedIn

P = ParamSpec("P")
R = TypeVar("R")


def _throttled_is_rate_limited(resolver: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A throttled request fails as a whole: a RATE_LIMITED error with extensions.retryAfter."""

    @functools.wraps(resolver)
    async def resolve(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await resolver(*args, **kwargs)
        except Throttled as exc:
            raise rate_limited(exc.retry_after) from None

    return resolve


def _signed_in(ctx: Context, result: SignedIn) -> AuthPayload:
    # The rest of this request sees the new session's user as the viewer, so the payload's
    # user shows its own email and lastLoginAt.
    ctx.sign_in(result.user, result.session_id, result.roles)
    ctx.set_refresh_token_cookie(result.refresh_token, result.refresh_expires_at)
    return AuthPayload.signed_in(result)


@_throttled_is_rate_limited
async def register(info: Info[Context, None], input: RegisterInput) -> AuthPayload:
    ctx = info.context
    try:
        result = await auth_service.register(
            db=ctx.db,
            passwords=ctx.passwords,
            policy=ctx.policy,
            throttle=ctx.throttle,
            email=input.email,
            username=input.username,
            password=input.password,
            display_name=given(input.display_name),
            client=ctx.client,
        )
    except Rejected as exc:
        return AuthPayload(user_errors=user_errors(exc))
    return _signed_in(ctx, result)


@_throttled_is_rate_limited
async def login(info: Info[Context, None], input: LoginInput) -> AuthPayload:
    ctx = info.context
    try:
        result = await auth_service.login(
            db=ctx.db,
            passwords=ctx.passwords,
            policy=ctx.policy,
            throttle=ctx.throttle,
            login=input.login,
            password=input.password,
            client=ctx.client,
        )
    except Rejected as exc:
        return AuthPayload(user_errors=user_errors(exc))
    return _signed_in(ctx, result)


@_throttled_is_rate_limited
async def refresh(info: Info[Context, None], input: RefreshInput) -> AuthPayload:
    ctx = info.context
    refresh_token = input.refresh_token or ctx.refresh_token_cookie()
    if not refresh_token:
        missing = Rejected.one(
            Code.INVALID_INPUT, "Give the refresh token.", "input", "refreshToken"
        )
        return AuthPayload(user_errors=user_errors(missing))
    try:
        result = await auth_service.refresh(
            db=ctx.db,
            policy=ctx.policy,
            throttle=ctx.throttle,
            refresh_token=refresh_token,
            client=ctx.client,
        )
    except Rejected as exc:
        if not input.refresh_token:  # the cookie's token is dead: stop sending it
            ctx.clear_refresh_token_cookie()
        return AuthPayload(user_errors=user_errors(exc))
    return _signed_in(ctx, result)


@_throttled_is_rate_limited
async def change_password(
    info: Info[Context, None], input: ChangePasswordInput
) -> ChangePasswordPayload:
    ctx = info.context
    viewer = await ctx.viewer()
    assert viewer is not None  # the field requires sign-in
    try:
        updated = await auth_service.change_password(
            db=ctx.db,
            passwords=ctx.passwords,
            throttle=ctx.throttle,
            user_id=viewer.user.id,
            current_session_id=viewer.session_id,
            current_password=input.current_password,
            new_password=input.new_password,
        )
    except Rejected as exc:
        return ChangePasswordPayload(user_errors=user_errors(exc))
    ctx.loaders.forget_sessions()
    ctx.loaders.prime_user(updated)
    return ChangePasswordPayload(user=updated)  # type: ignore[arg-type]
