"""Changing a password: the current one checked, the new one set, other sessions ended."""

from __future__ import annotations

import uuid

from usergraph.auth.passwords import PasswordHasher
from usergraph.auth.throttle import Rule, Throttle
from usergraph.db import sessions as session_queries
from usergraph.db import users as user_queries
from usergraph.db.engine import Database
from usergraph.db.models import User, utcnow
from usergraph.services import validation
from usergraph.services.audit import log_security_event
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.throttling import account_locked, hashing
from usergraph.services.users import get_user_or_reject


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
    """Set a new password after checking the current one; end the user's other sessions.

    Wrong current passwords count against the account like failed logins (by username), so a
    stolen access token cannot be used to guess the password at the hasher's speed.
    """
    async with db.read_sessionmaker() as s:
        user = await get_user_or_reject(s, user_id)
    wrong = Rejected.one(
        ProblemCode.INVALID_CREDENTIALS,
        "The current password is wrong.",
        "input",
        "currentPassword",
    )
    if len(current_password) > validation.MAX_LOGIN_PASSWORD_LENGTH:
        raise wrong
    validation.check_password(
        new_password, "input", "newPassword", email=user.email, username=user.username
    )
    with hashing(), passwords.place():
        verdict = await throttle.hit(Rule.LOGIN_ACCOUNT, user.username)
        if not verdict.allowed:
            log_security_event("password_change_failed", reason="locked", user_id=user_id)
            raise account_locked(verdict.retry_after, "input", "currentPassword")
        if not (await passwords.verify(current_password, user.password_hash)).ok:
            log_security_event("password_change_failed", reason="credentials", user_id=user_id)
            raise wrong
        await throttle.clear(Rule.LOGIN_ACCOUNT, user.username)
        new_hash = await passwords.hash(new_password)
    async with db.sessionmaker() as s, s.begin():
        now = utcnow()
        updated = await user_queries.update_user_if_hash_is(
            s,
            user_id=user_id,
            password_hash=user.password_hash,
            values={"password_hash": new_hash, "updated_at": now},
        )
        if updated is None:  # changed concurrently: the current password is no longer current
            raise wrong
        ended = await session_queries.revoke_sessions(
            s,
            now=now,
            reason="password_changed",
            user_id=user_id,
            keep_session_id=current_session_id,
        )
    log_security_event("password_changed", user_id=user_id, sessions_ended=ended)
    return updated
