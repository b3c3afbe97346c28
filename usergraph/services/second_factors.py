"""Second factors: TOTP enrollment, turning it off, recovery codes, and checking a code.

A code is a current TOTP code (its time step taken once per user, in the database, so a code
never works twice on any worker) or an unused recovery code (used up by working). Wrong codes
count against the account's lockout under two keys: the account's, which the login lockout
uses, and one of its own that only a right code clears, so a right password cannot reset the
count of code guesses. Turning TOTP on or off, new recovery codes, a used recovery code and an
administrator's reset each write a security-log event and send a notice to the account.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.auth import totp
from usergraph.auth.data_keys import DataCipher, UndecryptableValue
from usergraph.auth.passwords import PasswordHasher
from usergraph.auth.throttle import Rule, Throttle
from usergraph.auth.tokens import hash_token
from usergraph.db import second_factors as factor_queries
from usergraph.db.engine import Database
from usergraph.db.models import TotpFactor, User, utcnow
from usergraph.mail.outbox import Outbox
from usergraph.services.access import Actor
from usergraph.services.audit import log_security_event
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.passwords import check_current_password
from usergraph.services.throttling import account_key, account_locked, hashing
from usergraph.services.users import get_user_or_reject

INVALID_CODE = "This code is not valid: wrong, already used, or not a code."
T = TypeVar("T")


class Method(enum.Enum):
    """How a second step was proved (the schema's SecondFactorMethod)."""

    TOTP = "TOTP"
    RECOVERY_CODE = "RECOVERY_CODE"


@dataclass(frozen=True, slots=True)
class SecondFactorPolicy:
    cipher: DataCipher
    issuer: str = "usergraph"
    challenge_ttl: timedelta = timedelta(minutes=5)
    max_challenge_attempts: int = 5
    # The time TOTP steps are counted from (tests move it).
    clock: Callable[[], float] = field(default=time.time)


@dataclass(frozen=True, slots=True)
class Enrollment:
    secret: str
    otpauth_uri: str
    qr_code_svg: str


def invalid_code(*field: str) -> Rejected:
    return Rejected.one(ProblemCode.INVALID_CODE, INVALID_CODE, *field)


def totp_not_enabled(*field: str) -> Rejected:
    return Rejected.one(ProblemCode.TOTP_NOT_ENABLED, "TOTP is not on for this account.", *field)


def totp_already_enabled() -> Rejected:
    return Rejected.one(ProblemCode.TOTP_ALREADY_ENABLED, "TOTP is already on for this account.")


def code_guess_key(user_id: int) -> str:
    """The lockout key that only wrong second-factor codes count against (see the module)."""
    return f"second-factor:{user_id}"


async def refuse_if_locked(throttle: Throttle, user: User, *field: str) -> None:
    """Count this code attempt against the account, refusing it (ACCOUNT_LOCKED) when the
    account's window is full; a right code clears the count (clear_code_guesses)."""
    for key in (account_key(user.id), code_guess_key(user.id)):
        await _count_under(throttle, key, user, *field)


async def _count_under(throttle: Throttle, key: str, user: User, *field: str) -> None:
    verdict = await throttle.hit(Rule.LOGIN_ACCOUNT, key)
    if not verdict.allowed:
        log_security_event("second_factor_failed", reason="locked", user_id=user.id)
        raise account_locked(verdict.retry_after, *field)


async def clear_code_guesses(throttle: Throttle, user: User) -> None:
    for key in (account_key(user.id), code_guess_key(user.id)):
        await throttle.clear(Rule.LOGIN_ACCOUNT, key)


async def check_code(
    s: AsyncSession, *, policy: SecondFactorPolicy, factor: TotpFactor, code: str
) -> Method | None:
    """Which factor `code` proves (taking its TOTP step or using up its recovery code, in s's
    transaction), or None when it proves none."""
    if totp.looks_like_totp(code):
        try:
            secret = policy.cipher.decrypt(factor.secret_ciphertext)
        except UndecryptableValue:
            # A data key was dropped too early (or the row was tampered with): no TOTP code can
            # match, a recovery code still can; the operator must restore the key.
            log_security_event(
                "totp_secret_undecryptable", level=logging.ERROR, user_id=factor.user_id
            )
            return None
        step = totp.matching_step(secret, code, unix_time=policy.clock())
        if step is not None and await factor_queries.take_step(
            s, user_id=factor.user_id, step=step
        ):
            return Method.TOTP
        return None
    key = totp.recovery_code_key(code)
    if key is not None and await factor_queries.use_recovery_code(
        s, user_id=factor.user_id, code_hash=hash_token(key), now=utcnow()
    ):
        return Method.RECOVERY_CODE
    return None


async def start_enrollment(
    *,
    db: Database,
    passwords: PasswordHasher,
    throttle: Throttle,
    policy: SecondFactorPolicy,
    user_id: int,
    password: str,
) -> Enrollment:
    """A new secret, pending until confirmed; it replaces a pending one."""
    async with db.read_sessionmaker() as s:
        user = await get_user_or_reject(s, user_id)
        if await factor_queries.totp_enabled(s, user_id):
            raise totp_already_enabled()
    with hashing(), passwords.place():
        await check_current_password(
            passwords=passwords, throttle=throttle, user=user, password=password,
            field="password", event="totp_enrollment_failed",
        )  # fmt: skip
    secret = totp.new_secret()
    async with db.sessionmaker() as s, s.begin():
        stored = await factor_queries.replace_pending_totp(
            s, user_id=user_id, secret_ciphertext=policy.cipher.encrypt(secret), now=utcnow()
        )
        if not stored:  # turned on meanwhile, by another request
            raise totp_already_enabled()
    log_security_event("totp_enrollment_started", user_id=user_id)
    uri = totp.otpauth_uri(secret, account_name=user.username, issuer=policy.issuer)
    return Enrollment(secret=secret, otpauth_uri=uri, qr_code_svg=totp.qr_code_svg(uri))


async def _new_recovery_codes(s: AsyncSession, user_id: int) -> list[str]:
    codes = totp.new_recovery_codes()
    await factor_queries.replace_recovery_codes(
        s,
        user_id=user_id,
        code_hashes=[hash_token(totp.recovery_code_key(code) or "") for code in codes],
        now=utcnow(),
    )
    return codes


async def confirm_enrollment(
    *,
    db: Database,
    outbox: Outbox,
    throttle: Throttle,
    policy: SecondFactorPolicy,
    user_id: int,
    code: str,
) -> tuple[User, list[str]]:
    """Turn TOTP on with a current code of the pending secret; return the recovery codes.

    Tries count against the account like any code (a stolen access token must not guess the
    code of an enrollment its owner left unfinished)."""
    async with db.read_sessionmaker() as s:
        user = await get_user_or_reject(s, user_id)
    await refuse_if_locked(throttle, user, "input", "code")
    async with db.sessionmaker() as s, s.begin():
        user = await get_user_or_reject(s, user_id)
        factor = await factor_queries.get_totp(s, user_id)
        if factor is None:
            raise Rejected.one(
                ProblemCode.TOTP_NOT_ENABLED, "Start TOTP enrollment first.", "input", "code"
            )
        if factor.enabled_at is not None:
            raise totp_already_enabled()
        if (
            not totp.looks_like_totp(code)
            or await check_code(s, policy=policy, factor=factor, code=code) is not Method.TOTP
        ):
            raise invalid_code("input", "code")
        if not await factor_queries.enable_totp(s, user_id=user_id, now=utcnow()):
            raise totp_already_enabled()
        codes = await _new_recovery_codes(s, user_id)
        await outbox.enqueue(s, kind="totp_enabled", to_address=user.email, username=user.username)
    await clear_code_guesses(throttle, user)
    log_security_event("totp_enabled", user_id=user_id)
    outbox.wake()
    return user, codes


async def _password_for_change(
    *,
    db: Database,
    passwords: PasswordHasher,
    throttle: Throttle,
    user_id: int,
    password: str,
    event: str,
) -> User:
    """The user, once TOTP is on and the password right; the attempt stays counted against
    the account until a right code clears it (_prove, clear_code_guesses)."""
    async with db.read_sessionmaker() as s:
        user = await get_user_or_reject(s, user_id)
        if not await factor_queries.totp_enabled(s, user_id):
            raise totp_not_enabled()
    # One attempt, counted once under each key: the password's check counts it for the account.
    await _count_under(throttle, code_guess_key(user.id), user, "input", "code")
    with hashing(), passwords.place():
        await check_current_password(
            passwords=passwords, throttle=throttle, user=user, password=password,
            field="password", event=event, clear=False,
        )  # fmt: skip
    return user


async def _prove(
    s: AsyncSession, *, policy: SecondFactorPolicy, user_id: int, code: str, event: str
) -> Method:
    """The factor a code proves, in s's transaction; INVALID_CODE when none."""
    factor = await factor_queries.get_totp(s, user_id)
    if factor is None or factor.enabled_at is None:  # turned off meanwhile
        raise totp_not_enabled()
    method = await check_code(s, policy=policy, factor=factor, code=code)
    if method is None:
        log_security_event(event, reason="code", user_id=user_id)
        raise invalid_code("input", "code")
    return method


async def _change_with_code(
    *,
    db: Database,
    passwords: PasswordHasher,
    throttle: Throttle,
    outbox: Outbox,
    policy: SecondFactorPolicy,
    user_id: int,
    password: str,
    code: str,
    done: str,
    refused: str,
    write: Callable[[AsyncSession], Awaitable[T]],
) -> tuple[User, T]:
    """A change to the factors that needs the password and a current code: check both, run
    write in the transaction that proves the code, send the notice `done` (also its security
    event; failures log `refused`)."""
    user = await _password_for_change(
        db=db, passwords=passwords, throttle=throttle, user_id=user_id, password=password,
        event=refused,
    )  # fmt: skip
    async with db.sessionmaker() as s, s.begin():
        method = await _prove(s, policy=policy, user_id=user_id, code=code, event=refused)
        result = await write(s)
        await outbox.enqueue(
            s, kind=done, to_address=user.email, username=user.username,
            recovery_code_used=method is Method.RECOVERY_CODE,
        )  # fmt: skip
    await clear_code_guesses(throttle, user)
    log_security_event(done, user_id=user_id, method=method.value)
    outbox.wake()
    return user, result


async def disable(
    *,
    db: Database,
    passwords: PasswordHasher,
    throttle: Throttle,
    outbox: Outbox,
    policy: SecondFactorPolicy,
    user_id: int,
    password: str,
    code: str,
) -> User:
    """Turn TOTP off (the password and a current TOTP or recovery code)."""
    user, _ = await _change_with_code(
        db=db, passwords=passwords, throttle=throttle, outbox=outbox, policy=policy,
        user_id=user_id, password=password, code=code, done="totp_disabled",
        refused="totp_disable_failed", write=lambda s: factor_queries.delete_factors(s, user_id),
    )  # fmt: skip
    return user


async def regenerate_recovery_codes(
    *,
    db: Database,
    passwords: PasswordHasher,
    throttle: Throttle,
    outbox: Outbox,
    policy: SecondFactorPolicy,
    user_id: int,
    password: str,
    code: str,
) -> list[str]:
    """New recovery codes (the password and a current code); the old ones stop working."""
    _, codes = await _change_with_code(
        db=db, passwords=passwords, throttle=throttle, outbox=outbox, policy=policy,
        user_id=user_id, password=password, code=code, done="recovery_codes_regenerated",
        refused="recovery_codes_regeneration_failed",
        write=lambda s: _new_recovery_codes(s, user_id),
    )  # fmt: skip
    return codes


async def reset(*, db: Database, outbox: Outbox, actor: Actor, user_id: int) -> User:
    """Administrators: turn off a user's second factors (one who lost them all)."""
    async with db.sessionmaker() as s, s.begin():
        user = await get_user_or_reject(s, user_id, field=("input", "userId"))
        if not await factor_queries.delete_factors(s, user_id):
            raise totp_not_enabled("input", "userId")
        await outbox.enqueue(
            s, kind="second_factors_reset", to_address=user.email, username=user.username
        )
    log_security_event(
        "second_factors_reset", level=logging.WARNING, user_id=user_id, actor_id=actor.user_id
    )
    outbox.wake()
    return user
