"""Resolvers that end sessions: logout, logoutAll, revokeSession."""

from __future__ import annotations

from typing import TYPE_CHECKING

import strawberry
from strawberry import UNSET

from usergraph.resolvers.answers import answers, signed_in_viewer
from usergraph.schema.errors import unauthenticated
from usergraph.schema.inputs import LogoutInput, RevokeSessionInput
from usergraph.schema.payloads import LogoutPayload, RevokeSessionPayload
from usergraph.schema.relay import session_pk
from usergraph.services import sessions as session_service

if TYPE_CHECKING:
    from usergraph.context import Context


@answers(LogoutPayload)
async def logout(
    info: strawberry.Info[Context, None], input: LogoutInput | None = UNSET
) -> LogoutPayload:
    ctx, db = info.context, info.context.runtime.db
    refresh_token = ctx.refresh_token(input.refresh_token if input else None)
    ctx.clear_refresh_token_cookie()
    if refresh_token:
        revoked = await session_service.logout_by_refresh_token(db=db, refresh_token=refresh_token)
    elif ctx.claims is not None:
        # A signed token is enough to end its own session, even if the session is gone.
        revoked = await session_service.logout_session(
            db=db, user_id=ctx.claims.user_id, session_id=ctx.claims.session_id
        )
    else:
        raise unauthenticated("Give a refresh token or a valid access token.")
    ctx.loaders.forget_sessions()
    ctx.forget_viewer()
    return LogoutPayload(revoked_sessions=revoked)


@answers(LogoutPayload)
async def logout_all(info: strawberry.Info[Context, None]) -> LogoutPayload:
    ctx = info.context
    viewer = await signed_in_viewer(info)
    revoked = await session_service.logout_all(db=ctx.runtime.db, user_id=viewer.user.id)
    ctx.clear_refresh_token_cookie()
    ctx.loaders.forget_sessions()
    ctx.forget_viewer()
    return LogoutPayload(revoked_sessions=revoked)


@answers(RevokeSessionPayload)
async def revoke_session(
    info: strawberry.Info[Context, None], input: RevokeSessionInput
) -> RevokeSessionPayload:
    ctx = info.context
    viewer = await signed_in_viewer(info)
    revoked = await session_service.revoke_session(
        db=ctx.runtime.db, actor=viewer, session_id=session_pk(input.id)
    )
    ctx.loaders.forget_sessions()
    if revoked.id == viewer.session_id:
        ctx.forget_viewer()
    return RevokeSessionPayload(session=revoked)  # type: ignore[arg-type]
