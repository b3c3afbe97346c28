"""Resolvers for second factors: TOTP enrollment and removal, recovery codes, login's second
step, and an administrator's reset."""

from __future__ import annotations

from typing import TYPE_CHECKING

import strawberry

from usergraph.resolvers.answers import answers, signed_in_viewer
from usergraph.resolvers.auth import signed_in
from usergraph.schema.inputs import (
    ConfirmTotpEnrollmentInput,
    DisableTotpInput,
    RegenerateRecoveryCodesInput,
    ResetSecondFactorsInput,
    StartTotpEnrollmentInput,
    VerifySecondFactorInput,
)
from usergraph.schema.payloads import (
    AuthPayload,
    ConfirmTotpEnrollmentPayload,
    DisableTotpPayload,
    RegenerateRecoveryCodesPayload,
    StartTotpEnrollmentPayload,
    UserPayload,
)
from usergraph.schema.relay import user_pk
from usergraph.services import challenges, second_factors

if TYPE_CHECKING:
    from usergraph.context import Context


@answers(StartTotpEnrollmentPayload)
async def start_totp_enrollment(
    info: strawberry.Info[Context, None], input: StartTotpEnrollmentInput
) -> StartTotpEnrollmentPayload:
    runtime = info.context.runtime
    viewer = await signed_in_viewer(info)
    enrollment = await second_factors.start_enrollment(
        db=runtime.db,
        passwords=runtime.passwords,
        throttle=runtime.throttle,
        policy=runtime.factors,
        user_id=viewer.user.id,
        password=input.password,
    )
    return StartTotpEnrollmentPayload(
        secret=enrollment.secret,
        otpauth_uri=enrollment.otpauth_uri,
        qr_code_svg=enrollment.qr_code_svg,
    )


@answers(ConfirmTotpEnrollmentPayload)
async def confirm_totp_enrollment(
    info: strawberry.Info[Context, None], input: ConfirmTotpEnrollmentInput
) -> ConfirmTotpEnrollmentPayload:
    ctx, runtime = info.context, info.context.runtime
    viewer = await signed_in_viewer(info)
    user, codes = await second_factors.confirm_enrollment(
        db=runtime.db,
        outbox=runtime.outbox,
        throttle=runtime.throttle,
        policy=runtime.factors,
        user_id=viewer.user.id,
        code=input.code,
    )
    ctx.loaders.second_factors_by_user_id.clear(user.id)
    return ConfirmTotpEnrollmentPayload(recovery_codes=codes, user=user)  # type: ignore[arg-type]


@answers(DisableTotpPayload)
async def disable_totp(
    info: strawberry.Info[Context, None], input: DisableTotpInput
) -> DisableTotpPayload:
    ctx, runtime = info.context, info.context.runtime
    viewer = await signed_in_viewer(info)
    user = await second_factors.disable(
        db=runtime.db,
        passwords=runtime.passwords,
        throttle=runtime.throttle,
        outbox=runtime.outbox,
        policy=runtime.factors,
        user_id=viewer.user.id,
        password=input.password,
        code=input.code,
    )
    ctx.loaders.second_factors_by_user_id.clear(user.id)
    return DisableTotpPayload(user=user)  # type: ignore[arg-type]


@answers(RegenerateRecoveryCodesPayload)
async def regenerate_recovery_codes(
    info: strawberry.Info[Context, None], input: RegenerateRecoveryCodesInput
) -> RegenerateRecoveryCodesPayload:
    ctx, runtime = info.context, info.context.runtime
    viewer = await signed_in_viewer(info)
    codes = await second_factors.regenerate_recovery_codes(
        db=runtime.db,
        passwords=runtime.passwords,
        throttle=runtime.throttle,
        outbox=runtime.outbox,
        policy=runtime.factors,
        user_id=viewer.user.id,
        password=input.password,
        code=input.code,
    )
    ctx.loaders.second_factors_by_user_id.clear(viewer.user.id)
    return RegenerateRecoveryCodesPayload(recovery_codes=codes)


@answers(AuthPayload)
async def verify_second_factor(
    info: strawberry.Info[Context, None], input: VerifySecondFactorInput
) -> AuthPayload:
    ctx, runtime = info.context, info.context.runtime
    result = await challenges.verify(
        db=runtime.db,
        policy=runtime.policy,
        factors=runtime.factors,
        throttle=runtime.throttle,
        outbox=runtime.outbox,
        challenge_token=input.challenge_token,
        code=input.code,
        client=ctx.client,
        require_verified=runtime.email.verification_required,
    )
    ctx.loaders.second_factors_by_user_id.clear(result.user.id)
    return signed_in(ctx, result)


@answers(UserPayload)
async def reset_second_factors(
    info: strawberry.Info[Context, None], input: ResetSecondFactorsInput
) -> UserPayload:
    ctx, runtime = info.context, info.context.runtime
    viewer = await signed_in_viewer(info)
    user = await second_factors.reset(
        db=runtime.db, outbox=runtime.outbox, actor=viewer, user_id=user_pk(input.user_id)
    )
    ctx.loaders.second_factors_by_user_id.clear(user.id)
    return UserPayload(user=user)  # type: ignore[arg-type]
