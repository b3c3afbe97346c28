"""Resolvers that end sessions: logout, logoutAll, revokeSession."""

from __future__ import annotations

from strawberry import UNSET, Info

from usergraph.context import Context
from usergraph.schema.errors import ErrorCode, PublicError
from usergraph.schema.inputs import LogoutInput, RevokeSessionInput
from usergraph.schema.payloads import LogoutPayload, RevokeSessionPayload, user_errors
from usergraph.schema.relay import session_pk
from usergraph.services import sessions as session_service
from usergraph.services.errors import Rejected


async def logout(info: Info[Context, None], input: LogoutInput | None = UNSET) -> LogoutPayload:
    ctx = info.context
    refresh_token = (input.refresh_token if input else None) or ctx.refresh_token_cookie()
    ctx.clear_refresh_token_cookie()
    try:
        if refresh_token:
            revoked = await session_service.logout_by_refresh_token(
                db=ctx.db, refresh_token=refresh_token
            )
        elif ctx.claims is not None:
            # A signed token is enough to end its own session, even if the session is gone.
            revoked = await session_service.logout_session(
                db=ctx.db, user_id=ctx.claims.user_id, session_id=ctx.claims.session_id
            )
        else:
            raise PublicError(
                ErrorCode.UNAUTHENTICATED, "Give a refresh token or a valid access token."
            )
    except Rejected as exc:
        return LogoutPayload(user_errors=user_errors(exc))
    ctx.loaders.forget_sessions()
    ctx.forget_viewer()
    return LogoutPayload(revoked_sessions=revoked)


async def logout_all(info: Info[Context, None]) -> LogoutPayload:
    ctx = info.context
    viewer = await ctx.viewer()
    assert viewer is not None  # the field requires sign-in
    revoked = await session_service.logout_all(db=ctx.db, user_id=viewer.user.id)
    ctx.clear_refresh_token_cookie()
    ctx.loaders.forget_sessions()
    ctx.forget_viewer()
    return LogoutPayload(revoked_sessions=revoked)


async def revoke_session(
    info: Info[Context, None], input: RevokeSessionInput
) -> RevokeSessionPayload:
    ctx = info.context
    viewer = await ctx.viewer()
    assert viewer is not None
    try:
        revoked = await session_service.revoke_session(
            db=ctx.db,
            actor_id=viewer.user.id,
            actor_is_admin=viewer.is_admin,
            session_id=session_pk(input.id),
        )
    except Rejected as exc:
        return RevokeSessionPayload(user_errors=user_errors(exc))
    ctx.loaders.forget_sessions()
    if revoked.id == viewer.session_id:
        ctx.forget_viewer()
    return RevokeSessionPayload(session=revoked)  # type: ignore[arg-type]
