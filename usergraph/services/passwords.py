"""Passwords: checking the current one (counted like a login), and setting a new one by
change or by reset. Setting one retires every open reset and email-change link of the account:
the email-change notice tells a user who did not ask for it to change their password, and that
must stop the change."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.auth.passwords import PasswordHasher
from usergraph.auth.throttle import Rule, Throttle
from usergraph.db import second_factors as factor_queries
from usergraph.db import sessions as session_queries
from usergraph.db import users as user_queries
from usergraph.db.engine import Database
from usergraph.db.models import User, utcnow
from usergraph.services import email_tokens, validation
from usergraph.services.audit import log_security_event
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.throttling import account_key, account_locked, hashing
from usergraph.services.users import get_user_or_reject


def wrong_password(field: str) -> Rejected:
    return Rejected.one(
        ProblemCode.INVALID_CREDENTIALS, "The current password is wrong.", "input", field
    )


async def check_current_password(
    *,
    passwords: PasswordHasher,
    throttle: Throttle,
    user: User,
    password: str,
    field: str,
    event: str,
    clear: bool = True,
) -> None:
    """Raise unless password is the user's. Wrong ones count against the account like failed
    logins, so a stolen access token cannot guess at the hasher's speed.

    clear=False leaves this attempt counted even when the password is right: the caller checks
    a second factor next and clears the count only if that is right too."""
    if len(password) > validation.MAX_LOGIN_PASSWORD_LENGTH:
        raise wrong_password(field)
    verdict = await throttle.hit(Rule.LOGIN_ACCOUNT, account_key(user.id))
    if not verdict.allowed:
        log_security_event(event, reason="locked", user_id=user.id)
        raise account_locked(verdict.retry_after, "input", field)
    if not (await passwords.verify(password, user.password_hash)).ok:
        log_security_event(event, reason="credentials", user_id=user.id)
        raise wrong_password(field)
    if clear:
        await throttle.clear(Rule.LOGIN_ACCOUNT, account_key(user.id))


async def store_new_hash(
    s: AsyncSession, *, user: User, new_hash: str, keep_session_id: uuid.UUID | None
) -> tuple[User, int] | None:
    """Set the hash if the stored one is still the one checked; end the other sessions and
    retire the reset and email-change links. Return the user and how many sessions ended, or
    None when the password changed meanwhile."""
    now = utcnow()
    updated = await user_queries.update_user_if_hash_is(
        s,
        user_id=user.id,
        password_hash=user.password_hash,
        values={"password_hash": new_hash, "updated_at": now},
    )
    if updated is None:
        return None
    ended = await session_queries.revoke_sessions(
        s, now=now, reason="password_changed", user_id=user.id, keep_session_id=keep_session_id
    )
    for purpose in (email_tokens.RESET_PASSWORD, email_tokens.CHANGE_EMAIL):
        await email_tokens.retire(s, user_id=user.id, purpose=purpose)
    # A login's second step earned with the old password dies with it.
    await factor_queries.delete_challenges(s, user.id)
    return updated, ended


async def change_password(
    *,
    db: Database,
    passwords: PasswordHasher,
    throttle: Throttle,
    user_id: int,
    current_session_id: uuid.UUID | None,
    current_password: str,
    new_password: str,
) -> User:
    """Set a new password after checking the current one; end the user's other sessions."""
    async with db.read_sessionmaker() as s:
        user = await get_user_or_reject(s, user_id)
    validation.check_password(
        new_password, "input", "newPassword", email=user.email, username=user.username
    )
    with hashing(), passwords.place():
        await check_current_password(
            passwords=passwords,
            throttle=throttle,
            user=user,
            password=current_password,
            field="currentPassword",
            event="password_change_failed",
        )
        new_hash = await passwords.hash(new_password)
    async with db.sessionmaker() as s, s.begin():
        stored = await store_new_hash(
            s, user=user, new_hash=new_hash, keep_session_id=current_session_id
        )
        if stored is None:  # changed concurrently: the current password is no longer current
            raise wrong_password("currentPassword")
    updated, ended = stored
    log_security_event("password_changed", user_id=user_id, sessions_ended=ended)
    return updated
