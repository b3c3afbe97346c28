"""Signing in: register, login, refresh (rotation with reuse detection), password change."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.auth.passwords import HasherBusy, PasswordHasher
from usergraph.auth.throttle import Rule, Throttle, Verdict
from usergraph.auth.tokens import MAX_REFRESH_TOKEN_LENGTH, hash_refresh_token
from usergraph.db import sessions as session_queries
from usergraph.db import users as user_queries
from usergraph.db.engine import Database
from usergraph.db.models import User, utcnow
from usergraph.services import validation
from usergraph.services.audit import login_digest, record
from usergraph.services.errors import Code, Problem, Rejected, Throttled
from usergraph.services.sessions import (
    ClientInfo,
    SessionPolicy,
    SignedIn,
    open_session,
    rotate_refresh_token,
)
from usergraph.services.users import DEFAULT_ROLE, clean_new_account, insert_user

# Longer inputs are refused before any hashing, so one request cannot buy unbounded work.
MAX_LOGIN_PASSWORD_LENGTH = 1024

INVALID_CREDENTIALS = "Wrong login or password."
# When every hashing slot and the queue are taken: come back in about a hash's time.
BUSY_RETRY_AFTER = 1


@contextmanager
def _hashing() -> Iterator[None]:
    """A saturated hasher refuses the request (RATE_LIMITED) instead of queueing it."""
    try:
        yield
    except HasherBusy:
        record("hasher_busy", level=logging.WARNING)
        raise Throttled(BUSY_RETRY_AFTER, "busy") from None


def _ip(client: ClientInfo) -> str:
    return client.ip_address or "unknown"


def _refuse_unless_allowed(verdict: Verdict, rule: Rule) -> None:
    if not verdict.allowed:
        record("rate_limited", level=logging.WARNING, rule=rule.value)
        raise Throttled(verdict.retry_after, rule.value)


async def _count(throttle: Throttle, rule: Rule, client: ClientInfo) -> None:
    """Count one attempt against the client's ip; raise Throttled if its window is full."""
    _refuse_unless_allowed(await throttle.hit(rule, _ip(client)), rule)


async def register(
    *,
    db: Database,
    passwords: PasswordHasher,
    policy: SessionPolicy,
    throttle: Throttle,
    email: str,
    username: str,
    password: str,
    display_name: str | None,
    client: ClientInfo,
) -> SignedIn:
    """Create an account with the default role and sign it in.

    Every attempt with well-formed input counts against the client's ip, taken or not: an
    EMAIL_TAKEN answer is information, and each attempt costs a hash.
    """
    email, username, display_name = clean_new_account(
        email=email, username=username, password=password, display_name=display_name
    )
    with _hashing(), passwords.place():  # a request refused as busy is not counted
        await _count(throttle, Rule.REGISTER_IP, client)
        password_hash = await passwords.hash(password)
    async with db.sessionmaker() as s, s.begin():
        user = await insert_user(
            s,
            email=email,
            username=username,
            password_hash=password_hash,
            display_name=display_name,
            roles=[DEFAULT_ROLE],
        )
        now = utcnow()
        user.last_login_at = now
        signed_in = await open_session(
            s, user=user, roles=[DEFAULT_ROLE], policy=policy, client=client, now=now
        )
    record("registered", user_id=user.id, session_id=signed_in.session_id)
    return signed_in


async def login(
    *,
    db: Database,
    passwords: PasswordHasher,
    policy: SessionPolicy,
    throttle: Throttle,
    login: str,
    password: str,
    client: ClientInfo,
) -> SignedIn:
    """Check the credentials and open a session. Unknown logins cost as much as wrong passwords.

    Failed logins count against the account (by login name, so unknown names lock alike and
    reveal nothing) and against the client's ip. The account's attempt is counted before the
    hash is checked, so concurrent guesses cannot overshoot its limit; a success clears it.
    """
    # Only failures count against the ip (below); here its window is only checked.
    _refuse_unless_allowed(await throttle.check(Rule.LOGIN_IP, _ip(client)), Rule.LOGIN_IP)
    account = login.strip().lower()
    try:
        if len(password) > MAX_LOGIN_PASSWORD_LENGTH or len(login) > validation.MAX_LOGIN_LENGTH:
            raise Rejected.one(Code.INVALID_CREDENTIALS, INVALID_CREDENTIALS)
        with _hashing(), passwords.place():  # a request refused as busy is not counted
            verdict = await throttle.hit(Rule.LOGIN_ACCOUNT, account)
            if not verdict.allowed:
                record("login_failed", reason="locked", login=login_digest(account))
                raise _locked(verdict.retry_after)
            signed_in = await _sign_in(
                db=db,
                passwords=passwords,
                policy=policy,
                login=login,
                password=password,
                client=client,
            )
    except Rejected as exc:
        await throttle.hit(Rule.LOGIN_IP, _ip(client))
        if exc.problems[0].code is Code.ACCOUNT_LOCKED:
            raise
        after = await throttle.check(Rule.LOGIN_ACCOUNT, account)
        if not after.allowed:
            record(
                "account_locked",
                level=logging.WARNING,
                login=login_digest(account),
                retry_after=after.retry_after,
            )
        raise
    await throttle.clear(Rule.LOGIN_ACCOUNT, account)
    record("login_succeeded", user_id=signed_in.user.id, session_id=signed_in.session_id)
    return signed_in


def _locked(retry_after: int, *field: str) -> Rejected:
    return Rejected(
        [
            Problem(
                code=Code.ACCOUNT_LOCKED,
                message=(
                    "Too many failed sign-ins for this account; "
                    f"try again in {retry_after} seconds."
                ),
                field=field,
                retry_after=retry_after,
            )
        ]
    )


async def _sign_in(
    *,
    db: Database,
    passwords: PasswordHasher,
    policy: SessionPolicy,
    login: str,
    password: str,
    client: ClientInfo,
) -> SignedIn:
    # The hash is checked outside any transaction (it takes long); the write then requires the
    # stored hash to be the one we checked. If it changed meanwhile (a concurrent login
    # upgraded it, or the password changed), check once more against the new one.
    for _ in range(2):
        user, new_hash = await _check_credentials(
            db=db, passwords=passwords, login=login, password=password
        )
        async with db.sessionmaker() as s, s.begin():
            now = utcnow()
            values: dict[str, object] = {"last_login_at": now}
            if new_hash:
                values["password_hash"] = new_hash
            result = await s.execute(
                update(User)
                .where(User.id == user.id, User.password_hash == user.password_hash)
                .values(**values)
                .returning(User)
            )
            current = result.scalar_one_or_none()
            if current is None:
                continue
            if not current.is_active:
                record("login_failed", reason="disabled", user_id=user.id)
                raise Rejected.one(Code.ACCOUNT_DISABLED, "This account is disabled.")
            roles = await _role_names(s, current.id)
            return await open_session(
                s, user=current, roles=roles, policy=policy, client=client, now=now
            )
    raise Rejected.one(Code.INVALID_CREDENTIALS, INVALID_CREDENTIALS)


async def _check_credentials(
    *, db: Database, passwords: PasswordHasher, login: str, password: str
) -> tuple[User, str | None]:
    """Return the active user the credentials belong to and an upgraded hash, if any."""
    async with db.read_sessionmaker() as s:
        user = await user_queries.get_user_by_login(s, login)
    if user is None:
        await passwords.verify_dummy(password)
        record("login_failed", reason="credentials", login=login_digest(login))
        raise Rejected.one(Code.INVALID_CREDENTIALS, INVALID_CREDENTIALS)
    verified = await passwords.verify(password, user.password_hash)
    if not verified.ok:
        record("login_failed", reason="credentials", user_id=user.id)
        raise Rejected.one(Code.INVALID_CREDENTIALS, INVALID_CREDENTIALS)
    if not user.is_active:
        record("login_failed", reason="disabled", user_id=user.id)
        raise Rejected.one(Code.ACCOUNT_DISABLED, "This account is disabled.")
    return user, verified.new_hash


async def _role_names(s: AsyncSession, user_id: int) -> list[str]:
    roles = await user_queries.roles_by_user_ids(s, [user_id])
    return [role.name for role in roles.get(user_id, [])]


def _invalid_refresh_token(message: str = "This refresh token is not valid.") -> Rejected:
    return Rejected.one(Code.INVALID_REFRESH_TOKEN, message, "input", "refreshToken")


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
    await _count(throttle, Rule.REFRESH_IP, client)
    if not refresh_token or len(refresh_token) > MAX_REFRESH_TOKEN_LENGTH:
        raise _invalid_refresh_token()
    token_hash = hash_refresh_token(refresh_token)
    reused_session: uuid.UUID | None = None
    reused_user: int | None = None
    async with db.sessionmaker() as s, s.begin():
        now = utcnow()
        found = await session_queries.get_refresh_token(s, token_hash)
        if found is None:
            raise _invalid_refresh_token()
        token, user_session = found
        if token.used_at is not None:
            if now - token.used_at <= policy.reuse_grace:
                raise _invalid_refresh_token("This refresh token was already used.")
            # Committed below, even though the request fails.
            await session_queries.revoke_sessions(
                s, now=now, reason="refresh_token_reused", session_ids=[user_session.id]
            )
            reused_session = user_session.id
            reused_user = user_session.user_id
        else:
            if not user_session.is_open(now) or token.expires_at <= now:
                raise _invalid_refresh_token()
            user = await s.get(User, user_session.user_id)
            if user is None or not user.is_active:
                raise _invalid_refresh_token()
            if not await session_queries.claim_refresh_token(s, token_id=token.id, now=now):
                raise _invalid_refresh_token("This refresh token was already used.")
            signed_in = await rotate_refresh_token(
                s,
                user=user,
                roles=await _role_names(s, user.id),
                user_session=user_session,
                policy=policy,
                client=client,
                now=now,
            )
    if reused_session is not None:
        record(
            "refresh_token_reused",
            level=logging.WARNING,
            user_id=reused_user,
            session_id=reused_session,
            session_revoked=True,
        )
        raise Rejected.one(
            Code.REFRESH_TOKEN_REUSED,
            "This refresh token was used before; the session has been ended. Sign in again.",
            "input",
            "refreshToken",
        )
    return signed_in


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
        user = await s.get(User, user_id)
    if user is None:
        raise Rejected.one(Code.NOT_FOUND, "No such user.")
    wrong = Rejected.one(
        Code.INVALID_CREDENTIALS, "The current password is wrong.", "input", "currentPassword"
    )
    if len(current_password) > MAX_LOGIN_PASSWORD_LENGTH:
        raise wrong
    validation.check_password(
        new_password, "input", "newPassword", email=user.email, username=user.username
    )
    with _hashing(), passwords.place():
        verdict = await throttle.hit(Rule.LOGIN_ACCOUNT, user.username)
        if not verdict.allowed:
            record("password_change_failed", reason="locked", user_id=user_id)
            raise _locked(verdict.retry_after, "input", "currentPassword")
        if not (await passwords.verify(current_password, user.password_hash)).ok:
            record("password_change_failed", reason="credentials", user_id=user_id)
            raise wrong
        await throttle.clear(Rule.LOGIN_ACCOUNT, user.username)
        new_hash = await passwords.hash(new_password)
    async with db.sessionmaker() as s, s.begin():
        now = utcnow()
        result = await s.execute(
            update(User)
            .where(User.id == user_id, User.password_hash == user.password_hash)
            .values(password_hash=new_hash, updated_at=now)
            .returning(User)
        )
        updated = result.scalar_one_or_none()
        if updated is None:  # changed concurrently: the current password is no longer current
            raise wrong
        ended = await session_queries.revoke_sessions(
            s,
            now=now,
            reason="password_changed",
            user_id=user_id,
            keep_session_id=current_session_id,
        )
    record("password_changed", user_id=user_id, sessions_ended=ended)
    return updated
