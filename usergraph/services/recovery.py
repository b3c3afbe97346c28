"""Getting back in and keeping the address true: email verification, password reset, email
change.

Requests that start from an address (verification signed out, reset) answer the same and write
the same rows whether or not an account has it; they are throttled per address and per ip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from usergraph.auth.passwords import PasswordHasher
from usergraph.auth.throttle import Rule, Throttle
from usergraph.db import users as user_queries
from usergraph.db.engine import Database
from usergraph.db.models import User, utcnow
from usergraph.mail.outbox import Outbox
from usergraph.services import email_tokens, validation
from usergraph.services.audit import log_security_event
from usergraph.services.email_tokens import CHANGE_EMAIL, RESET_PASSWORD, VERIFY_EMAIL, EmailPolicy
from usergraph.services.errors import Problem, ProblemCode, Rejected
from usergraph.services.passwords import check_current_password, store_new_hash
from usergraph.services.throttling import (
    account_key,
    count_ip_attempt,
    hashing,
    refuse_unless_allowed,
)
from usergraph.services.users import EMAIL_TAKEN, get_user_or_reject

ALREADY_VERIFIED = "This email address is already verified."


async def _count_request(throttle: Throttle, *, email_key: str, ip_address: str | None) -> None:
    """One more email asked for: per client ip, then per address (RATE_LIMITED past either)."""
    await count_ip_attempt(throttle, Rule.EMAIL_IP, ip_address)
    refuse_unless_allowed(await throttle.hit(Rule.EMAIL_ADDRESS, email_key), Rule.EMAIL_ADDRESS)


async def send_verification(
    *,
    db: Database,
    outbox: Outbox,
    policy: EmailPolicy,
    throttle: Throttle,
    user_id: int | None,
    email: str | None,
    ip_address: str | None,
) -> None:
    """Send a verification link: to the signed-in user's address (user_id), or to `email`."""
    if user_id is not None:
        async with db.read_sessionmaker() as s:
            user = await get_user_or_reject(s, user_id)
        if user.email_verified_at is not None:
            raise Rejected.one(ProblemCode.EMAIL_ALREADY_VERIFIED, ALREADY_VERIFIED)
        await _count_request(throttle, email_key=user.email_key, ip_address=ip_address)
        async with db.sessionmaker() as s, s.begin():
            await email_tokens.issue(
                s, outbox=outbox, policy=policy, purpose=VERIFY_EMAIL, user=user,
                to_address=user.email,
            )  # fmt: skip
        log_security_event("verify_email_requested", user_id=user.id)
        outbox.wake()
        return
    if not email:
        raise Rejected.one(ProblemCode.INVALID_INPUT, "Give the email address.", "input", "email")
    await _from_address(
        db=db, outbox=outbox, policy=policy, throttle=throttle, purpose=VERIFY_EMAIL,
        email=email, ip_address=ip_address,
        wanted=lambda user: user.is_active and user.email_verified_at is None,
    )  # fmt: skip


async def request_password_reset(
    *,
    db: Database,
    outbox: Outbox,
    policy: EmailPolicy,
    throttle: Throttle,
    email: str,
    ip_address: str | None,
) -> None:
    """Send a reset link if an active account has the address; the same answer either way."""
    await _from_address(
        db=db, outbox=outbox, policy=policy, throttle=throttle, purpose=RESET_PASSWORD,
        email=email, ip_address=ip_address, wanted=lambda user: user.is_active,
    )  # fmt: skip


async def _from_address(
    *,
    db: Database,
    outbox: Outbox,
    policy: EmailPolicy,
    throttle: Throttle,
    purpose: str,
    email: str,
    ip_address: str | None,
    wanted: Callable[[User], bool],
) -> None:
    address = validation.clean_email(email, "input", "email")
    key = validation.email_key(address)
    await _count_request(throttle, email_key=key, ip_address=ip_address)
    async with db.sessionmaker() as s, s.begin():
        user = await user_queries.get_user_by_login(s, key)
        target = user if user is not None and wanted(user) else None
        await email_tokens.issue(
            s, outbox=outbox, policy=policy, purpose=purpose, user=target,
            to_address=target.email if target is not None else address,
        )  # fmt: skip
    log_security_event(f"{purpose}_requested", user_id=target.id if target else None)
    outbox.wake()


async def verify_email(*, db: Database, token: str) -> User:
    """Mark the address verified with the token sent to it; return the user."""
    async with db.sessionmaker() as s, s.begin():
        row, user = await email_tokens.redeem(s, token=token, purpose=VERIFY_EMAIL)
        if not email_tokens.sent_to_current_address(row, user):  # it changed since
            raise email_tokens.invalid_token()
        if user.email_verified_at is None:
            user.email_verified_at = utcnow()
    log_security_event("email_verified", user_id=user.id)
    return user


async def reset_password(
    *,
    db: Database,
    passwords: PasswordHasher,
    outbox: Outbox,
    throttle: Throttle,
    token: str,
    new_password: str,
) -> User:
    """Set a new password with a reset token; end every session; verify the address (the mail
    was received); clear the lockout; send a notice. Does not sign in."""
    async with db.read_sessionmaker() as s:  # a look first: hashing takes long
        row, user = await email_tokens.check(s, token=token, purpose=RESET_PASSWORD)
    validation.check_password(
        new_password, "input", "newPassword", email=user.email, username=user.username
    )
    with hashing(), passwords.place():
        new_hash = await passwords.hash(new_password)
    async with db.sessionmaker() as s, s.begin():
        row, user = await email_tokens.redeem(s, token=token, purpose=RESET_PASSWORD)
        stored = await store_new_hash(s, user=user, new_hash=new_hash, keep_session_id=None)
        if stored is None:  # the password changed meanwhile, and that retired this link
            raise email_tokens.invalid_token()
        user, ended = stored
        if user.email_verified_at is None and email_tokens.sent_to_current_address(row, user):
            user.email_verified_at = utcnow()
        await outbox.enqueue(
            s, kind="password_changed", to_address=user.email, username=user.username
        )
    await throttle.clear(Rule.LOGIN_ACCOUNT, account_key(user.id))
    log_security_event("password_reset", user_id=user.id, sessions_ended=ended)
    outbox.wake()
    return user


async def request_email_change(
    *,
    db: Database,
    passwords: PasswordHasher,
    outbox: Outbox,
    policy: EmailPolicy,
    throttle: Throttle,
    user_id: int,
    new_email: str,
    password: str,
    ip_address: str | None,
) -> None:
    """Send a confirmation link to the new address and a notice to the current one."""
    async with db.read_sessionmaker() as s:
        user = await get_user_or_reject(s, user_id)
    address = validation.clean_email(new_email, "input", "newEmail")
    key = validation.email_key(address)
    if key == user.email_key:
        raise Rejected.one(
            ProblemCode.INVALID_INPUT, "This is already your address.", "input", "newEmail"
        )
    with hashing(), passwords.place():
        await check_current_password(
            passwords=passwords, throttle=throttle, user=user, password=password,
            field="password", event="email_change_failed",
        )  # fmt: skip
    await _count_request(throttle, email_key=key, ip_address=ip_address)
    async with db.sessionmaker() as s, s.begin():
        if await user_queries.email_key_taken(s, key):
            raise Rejected([_taken("newEmail")])
        await email_tokens.issue(
            s, outbox=outbox, policy=policy, purpose=CHANGE_EMAIL, user=user, to_address=address
        )
        await outbox.enqueue(
            s, kind="email_change_requested", to_address=user.email, username=user.username,
            new_email=address,
        )  # fmt: skip
    log_security_event("email_change_requested", user_id=user.id)
    outbox.wake()


def _taken(field: str) -> Problem:
    return Problem(EMAIL_TAKEN.code, EMAIL_TAKEN.message, ("input", field))


async def confirm_email_change(*, db: Database, outbox: Outbox, token: str) -> User:
    """Switch to the address the token was sent to (verified by it); tell the old address."""
    async with db.sessionmaker() as s, s.begin():
        row, user = await email_tokens.redeem(s, token=token, purpose=CHANGE_EMAIL)
        key = validation.email_key(row.email)
        if await user_queries.email_key_taken(s, key):
            raise Rejected([_taken("token")])
        old_address = user.email
        now = utcnow()
        user.email, user.email_key, user.email_verified_at, user.updated_at = (
            row.email, key, now, now,
        )  # fmt: skip
        try:
            async with s.begin_nested():
                await s.flush()
        except IntegrityError:  # taken by a registration that committed meanwhile
            raise Rejected([_taken("token")]) from None
        # Links sent to the old address stop working: whoever reads it no longer owns the
        # account's mail.
        for purpose in (VERIFY_EMAIL, RESET_PASSWORD):
            await email_tokens.retire(s, user_id=user.id, purpose=purpose)
        await outbox.enqueue(
            s, kind="email_changed", to_address=old_address, username=user.username,
            new_email=row.email,
        )  # fmt: skip
    log_security_event("email_changed", level=logging.INFO, user_id=user.id)
    outbox.wake()
    return user
