"""Resolvers for the email flows: verification, password reset, email change."""

from __future__ import annotations

from typing import TYPE_CHECKING

import strawberry
from strawberry import UNSET

from usergraph.resolvers.answers import answers, signed_in_viewer
from usergraph.schema.inputs import (
    ConfirmEmailChangeInput,
    RequestEmailChangeInput,
    RequestEmailVerificationInput,
    RequestPasswordResetInput,
    ResetPasswordInput,
    VerifyEmailInput,
    unset_as_none,
)
from usergraph.schema.payloads import (
    ConfirmEmailChangePayload,
    RequestEmailChangePayload,
    RequestEmailVerificationPayload,
    RequestPasswordResetPayload,
    ResetPasswordPayload,
    VerifyEmailPayload,
)
from usergraph.services import recovery

if TYPE_CHECKING:
    from usergraph.context import Context


@answers(RequestEmailVerificationPayload)
async def request_email_verification(
    info: strawberry.Info[Context, None], input: RequestEmailVerificationInput | None = UNSET
) -> RequestEmailVerificationPayload:
    ctx, runtime = info.context, info.context.runtime
    viewer = await ctx.viewer()
    await recovery.send_verification(
        db=runtime.db,
        outbox=runtime.outbox,
        policy=runtime.email,
        throttle=runtime.throttle,
        user_id=viewer.user.id if viewer else None,
        email=unset_as_none(input.email) if input else None,
        ip_address=ctx.client.ip_address,
    )
    return RequestEmailVerificationPayload()


@answers(VerifyEmailPayload)
async def verify_email(
    info: strawberry.Info[Context, None], input: VerifyEmailInput
) -> VerifyEmailPayload:
    user = await recovery.verify_email(db=info.context.runtime.db, token=input.token)
    info.context.loaders.prime_user(user)
    return VerifyEmailPayload(user=user)  # type: ignore[arg-type]


@answers(RequestPasswordResetPayload)
async def request_password_reset(
    info: strawberry.Info[Context, None], input: RequestPasswordResetInput
) -> RequestPasswordResetPayload:
    ctx, runtime = info.context, info.context.runtime
    await recovery.request_password_reset(
        db=runtime.db,
        outbox=runtime.outbox,
        policy=runtime.email,
        throttle=runtime.throttle,
        email=input.email,
        ip_address=ctx.client.ip_address,
    )
    return RequestPasswordResetPayload()


@answers(ResetPasswordPayload)
async def reset_password(
    info: strawberry.Info[Context, None], input: ResetPasswordInput
) -> ResetPasswordPayload:
    ctx, runtime = info.context, info.context.runtime
    user = await recovery.reset_password(
        db=runtime.db,
        passwords=runtime.passwords,
        outbox=runtime.outbox,
        throttle=runtime.throttle,
        token=input.token,
        new_password=input.new_password,
    )
    ctx.loaders.forget_sessions()
    ctx.loaders.prime_user(user)
    return ResetPasswordPayload(user=user)  # type: ignore[arg-type]


@answers(RequestEmailChangePayload)
async def request_email_change(
    info: strawberry.Info[Context, None], input: RequestEmailChangeInput
) -> RequestEmailChangePayload:
    ctx, runtime = info.context, info.context.runtime
    viewer = await signed_in_viewer(info)
    await recovery.request_email_change(
        db=runtime.db,
        passwords=runtime.passwords,
        outbox=runtime.outbox,
        policy=runtime.email,
        throttle=runtime.throttle,
        user_id=viewer.user.id,
        new_email=input.new_email,
        password=input.password,
        ip_address=ctx.client.ip_address,
    )
    return RequestEmailChangePayload()


@answers(ConfirmEmailChangePayload)
async def confirm_email_change(
    info: strawberry.Info[Context, None], input: ConfirmEmailChangeInput
) -> ConfirmEmailChangePayload:
    runtime = info.context.runtime
    user = await recovery.confirm_email_change(
        db=runtime.db, outbox=runtime.outbox, token=input.token
    )
    info.context.loaders.prime_user(user)
    return ConfirmEmailChangePayload(user=user)  # type: ignore[arg-type]
