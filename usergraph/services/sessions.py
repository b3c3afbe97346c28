"""Sessions: opening one at sign-in, rotating its refresh token (refresh), ending them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.auth.throttle import Rule, Throttle
from usergraph.auth.tokens import (
    MAX_REFRESH_TOKEN_LENGTH,
    IssuedToken,
    TokenCodec,
    hash_token,
    new_refresh_token,
)
from usergraph.db import sessions as session_queries
from usergraph.db import users as user_queries
from usergraph.db.engine import Database
from usergraph.db.models import User, UserSession, utcnow
from usergraph.services.access import Actor
from usergraph.services.audit import log_security_event
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.throttling import count_ip_attempt

MAX_USER_AGENT_LENGTH = 512
# RFC 8176 authentication method references, as access tokens carry them in `amr`.
PASSWORD, ONE_TIME_PASSWORD = "pwd", "otp"
INVALID_REFRESH_TOKEN = "This refresh token is not valid."
ACCOUNT_DISABLED = "This account is disabled."
ALREADY_USED = "This refresh token was already used."


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    tokens: TokenCodec
    refresh_ttl: timedelta
    reuse_grace: timedelta


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip_address: str | None = None
    user_agent: str | None = None


def _stored_user_agent(client: ClientInfo) -> str | None:
    """The client's user agent as a session keeps it: at most MAX_USER_AGENT_LENGTH."""
    return (client.user_agent or "")[:MAX_USER_AGENT_LENGTH] or None


def account_disabled(user_id: int) -> Rejected:
    """The refusal of a disabled account's sign-in (login or its second step), logged."""
    log_security_event("login_failed", reason="disabled", user_id=user_id)
    return Rejected.one(ProblemCode.ACCOUNT_DISABLED, ACCOUNT_DISABLED)


def invalid_refresh_token(message: str = INVALID_REFRESH_TOKEN) -> Rejected:
    return Rejected.one(ProblemCode.INVALID_REFRESH_TOKEN, message, "input", "refreshToken")


@dataclass(frozen=True, slots=True)
class SignedIn:
    """What a successful register, login or refresh hands back; refresh_token is shown once."""

    user: User
    session_id: uuid.UUID
    roles: tuple[str, ...]
    access: IssuedToken
    refresh_token: str
    refresh_expires_at: datetime


async def _issue(
    s: AsyncSession,
    *,
    user: User,
    roles: Sequence[str],
    user_session: UserSession,
    policy: SessionPolicy,
    now: datetime,
) -> SignedIn:
    refresh_token = new_refresh_token()
    expires_at = now + policy.refresh_ttl
    user_session.expires_at = expires_at
    user_session.last_used_at = now
    await session_queries.add_refresh_token(
        s,
        session_id=user_session.id,
        token_hash=hash_token(refresh_token),
        expires_at=expires_at,
    )
    access = policy.tokens.issue_access_token(
        user_id=user.id,
        session_id=user_session.id,
        roles=roles,
        now=now,
        auth_methods=user_session.amr,
        auth_time=user_session.authenticated_at,
    )
    return SignedIn(
        user=user,
        session_id=user_session.id,
        roles=tuple(roles),
        access=access,
        refresh_token=refresh_token,
        refresh_expires_at=expires_at,
    )


async def open_session(
    s: AsyncSession,
    *,
    user: User,
    roles: Sequence[str],
    policy: SessionPolicy,
    client: ClientInfo,
    now: datetime,
    auth_methods: Sequence[str] = (PASSWORD,),
) -> SignedIn:
    """Start a session for user inside the caller's transaction and return its first tokens.

    auth_methods: how the user proved who they are (RFC 8176 `amr` values), now."""
    user_session = UserSession(
        id=uuid.uuid4(),
        user_id=user.id,
        created_at=now,
        last_used_at=now,
        expires_at=now + policy.refresh_ttl,
        ip_address=client.ip_address,
        user_agent=_stored_user_agent(client),
        auth_methods=" ".join(auth_methods),
        authenticated_at=now,
    )
    s.add(user_session)
    await s.flush()
    return await _issue(
        s, user=user, roles=roles, user_session=user_session, policy=policy, now=now
    )


async def rotate_refresh_token(
    s: AsyncSession,
    *,
    user: User,
    roles: Sequence[str],
    user_session: UserSession,
    policy: SessionPolicy,
    client: ClientInfo,
    now: datetime,
) -> SignedIn:
    """Give an existing session a new token pair (the old refresh token is already claimed)."""
    if client.ip_address:
        user_session.ip_address = client.ip_address
    user_session.user_agent = _stored_user_agent(client) or user_session.user_agent
    return await _issue(
        s, user=user, roles=roles, user_session=user_session, policy=policy, now=now
    )


async def refresh(
    *,
    db: Database,
    policy: SessionPolicy,
    throttle: Throttle,
    refresh_token: str,
    client: ClientInfo,
) -> SignedIn:
    """Trade a refresh token for a new token pair in the same session.

    A token used a second time within the grace window (a client retrying, two tabs racing) is
    only refused; after the window it is treated as stolen and its whole session ends.
    """
    await count_ip_attempt(throttle, Rule.REFRESH_IP, client.ip_address)
    if not refresh_token or len(refresh_token) > MAX_REFRESH_TOKEN_LENGTH:
        raise invalid_refresh_token()
    token_hash = hash_token(refresh_token)
    reused: UserSession | None = None
    async with db.sessionmaker() as s, s.begin():
        now = utcnow()
        found = await session_queries.get_refresh_token(s, token_hash)
        if found is None:
            raise invalid_refresh_token()
        token, user_session = found
        if token.used_at is not None:
            if now - token.used_at <= policy.reuse_grace:
                raise invalid_refresh_token(ALREADY_USED)
            # Committed below, even though the request fails.
            await session_queries.revoke_sessions(
                s, now=now, reason="refresh_token_reused", session_ids=[user_session.id]
            )
            reused = user_session
        else:
            if not user_session.is_open(now) or token.expires_at <= now:
                raise invalid_refresh_token()
            user = await s.get(User, user_session.user_id)
            if user is None or not user.is_active:
                raise invalid_refresh_token()
            if not await session_queries.claim_refresh_token(s, token_id=token.id, now=now):
                raise invalid_refresh_token(ALREADY_USED)
            signed_in = await rotate_refresh_token(
                s,
                user=user,
                roles=await user_queries.role_names_of(s, user.id),
                user_session=user_session,
                policy=policy,
                client=client,
                now=now,
            )
    if reused is not None:
        log_security_event(
            "refresh_token_reused",
            level=logging.WARNING,
            user_id=reused.user_id,
            session_id=reused.id,
            session_revoked=True,
        )
        raise Rejected.one(
            ProblemCode.REFRESH_TOKEN_REUSED,
            "This refresh token was used before; the session has been ended. Sign in again.",
            "input",
            "refreshToken",
        )
    return signed_in


async def logout_by_refresh_token(*, db: Database, refresh_token: str) -> int:
    """End the session that refresh_token belongs to; return 1, or 0 if it had already ended."""
    async with db.sessionmaker() as s, s.begin():
        found = await session_queries.get_refresh_token(s, hash_token(refresh_token))
        if found is None:
            raise invalid_refresh_token()
        return await session_queries.revoke_sessions(
            s, now=utcnow(), reason="logout", session_ids=[found[1].id]
        )


async def logout_session(*, db: Database, user_id: int, session_id: uuid.UUID) -> int:
    """End one session of user; return 1, or 0 if it had already ended."""
    async with db.sessionmaker() as s, s.begin():
        return await session_queries.revoke_sessions(
            s, now=utcnow(), reason="logout", user_id=user_id, session_ids=[session_id]
        )


async def logout_all(*, db: Database, user_id: int) -> int:
    """End every open session of user; return how many were open."""
    async with db.sessionmaker() as s, s.begin():
        return await session_queries.revoke_sessions(
            s, now=utcnow(), reason="logout_all", user_id=user_id
        )


async def revoke_session(*, db: Database, actor: Actor, session_id: uuid.UUID) -> UserSession:
    """End a session of the actor's (any session, for administrators); return it."""
    async with db.sessionmaker() as s, s.begin():
        user_session = await s.get(UserSession, session_id)
        if user_session is None or not actor.may_act_for(user_session.user_id):
            # The same answer for someone else's session as for none: ids reveal nothing.
            raise Rejected.one(ProblemCode.NOT_FOUND, "No such session.", "input", "id")
        now = utcnow()
        if user_session.revoked_at is None:
            user_session.revoked_at = now
            user_session.revoked_reason = "revoked"
        return user_session
