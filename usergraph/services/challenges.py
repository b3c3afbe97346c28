"""Login's second step: the challenge a right password earns an account with TOTP on, and
verifySecondFactor, which trades it and a code for a session.

A challenge is 256 random bits (only its SHA-256 is stored), lives 5 minutes, is bound to its
user, works once, and is spent after 5 codes tried. Each try is counted on the challenge before
the code is checked (a compare-and-set), so concurrent tries cannot exceed the limit; each also
counts against the account's lockout and, when wrong, against the client's ip like a failed
login.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.auth.throttle import Rule, Throttle
from usergraph.auth.tokens import MAX_CHALLENGE_TOKEN_LENGTH, hash_token, new_challenge_token
from usergraph.db import second_factors as factor_queries
from usergraph.db import users as user_queries
from usergraph.db.engine import Database
from usergraph.db.models import User, utcnow
from usergraph.mail.outbox import Outbox
from usergraph.services import second_factors
from usergraph.services.audit import log_security_event
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.second_factors import Method, SecondFactorPolicy
from usergraph.services.sessions import (
    ONE_TIME_PASSWORD,
    PASSWORD,
    ClientInfo,
    SessionPolicy,
    SignedIn,
    account_disabled,
    open_session,
)
from usergraph.services.throttling import ip_key, refuse_unless_allowed

INVALID_CHALLENGE = "This sign-in has expired or is not valid; sign in again."


@dataclass(frozen=True, slots=True)
class SecondFactorRequired:
    """What login answers instead of tokens when the account has a second factor."""

    token: str
    expires_at: datetime
    methods: tuple[Method, ...]


def invalid_challenge() -> Rejected:
    return Rejected.one(ProblemCode.INVALID_CHALLENGE, INVALID_CHALLENGE, "input", "challengeToken")


async def issue(
    s: AsyncSession, *, policy: SecondFactorPolicy, user: User, now: datetime
) -> SecondFactorRequired:
    """A new challenge for user, in the caller's transaction."""
    await factor_queries.delete_dead_challenges(s, user_id=user.id, now=now)
    token = new_challenge_token()
    expires_at = now + policy.challenge_ttl
    await factor_queries.add_challenge(
        s, user_id=user.id, token_hash=hash_token(token), now=now, expires_at=expires_at
    )
    codes_left = (await factor_queries.recovery_codes_left(s, [user.id])).get(user.id, 0)
    methods = (Method.TOTP, Method.RECOVERY_CODE) if codes_left else (Method.TOTP,)
    return SecondFactorRequired(
        token=token, expires_at=expires_at.replace(microsecond=0), methods=methods
    )


async def verify(
    *,
    db: Database,
    policy: SessionPolicy,
    factors: SecondFactorPolicy,
    throttle: Throttle,
    outbox: Outbox,
    challenge_token: str,
    code: str,
    client: ClientInfo,
    require_verified: bool = False,
) -> SignedIn:
    """Open the session a challenge stands for, with a right TOTP or recovery code."""
    ip = ip_key(client.ip_address)
    refuse_unless_allowed(await throttle.check(Rule.LOGIN_IP, ip), Rule.LOGIN_IP)
    try:
        user, challenge_id = await _count_try(
            db=db, factors=factors, throttle=throttle, challenge_token=challenge_token,
            require_verified=require_verified,
        )  # fmt: skip
        signed_in, method = await _open(
            db=db, policy=policy, factors=factors, outbox=outbox, user=user,
            challenge_id=challenge_id, code=code, client=client,
        )  # fmt: skip
    except Rejected as exc:
        if exc.problems[0].code in (ProblemCode.INVALID_CODE, ProblemCode.INVALID_CHALLENGE):
            await throttle.hit(Rule.LOGIN_IP, ip)
        raise
    await second_factors.clear_code_guesses(throttle, user)
    log_security_event(
        "login_succeeded", user_id=user.id, session_id=signed_in.session_id, method=method.value
    )
    if method is Method.RECOVERY_CODE:
        outbox.wake()
    return signed_in


async def _count_try(
    *,
    db: Database,
    factors: SecondFactorPolicy,
    throttle: Throttle,
    challenge_token: str,
    require_verified: bool,
) -> tuple[User, int]:
    """The challenge's user and id, once this try is counted on the challenge and the
    account; Rejected when the challenge is dead or the account locked or closed."""
    if not challenge_token or len(challenge_token) > MAX_CHALLENGE_TOKEN_LENGTH:
        raise invalid_challenge()
    async with db.read_sessionmaker() as s:
        challenge = await factor_queries.get_challenge(s, hash_token(challenge_token))
        user = await s.get(User, challenge.user_id) if challenge is not None else None
    if challenge is None or user is None:
        log_security_event("second_factor_failed", reason="challenge")
        raise invalid_challenge()
    if not user.is_active:
        raise account_disabled(user.id)
    if require_verified and user.email_verified_at is None:
        raise invalid_challenge()  # none is issued to such an account; it changed since
    await second_factors.refuse_if_locked(throttle, user, "input", "code")
    async with db.sessionmaker() as s, s.begin():
        counted = await factor_queries.count_attempt(
            s, challenge_id=challenge.id, max_attempts=factors.max_challenge_attempts,
            now=utcnow(),
        )  # fmt: skip
    if not counted:
        log_security_event("second_factor_failed", reason="challenge", user_id=user.id)
        raise invalid_challenge()
    return user, challenge.id


async def _open(
    *,
    db: Database,
    policy: SessionPolicy,
    factors: SecondFactorPolicy,
    outbox: Outbox,
    user: User,
    challenge_id: int,
    code: str,
    client: ClientInfo,
) -> tuple[SignedIn, Method]:
    async with db.sessionmaker() as s, s.begin():
        factor = await factor_queries.get_totp(s, user.id)
        method = None
        if factor is not None and factor.enabled_at is not None:
            method = await second_factors.check_code(s, policy=factors, factor=factor, code=code)
        if method is None:
            log_security_event("second_factor_failed", reason="code", user_id=user.id)
            raise second_factors.invalid_code("input", "code")
        now = utcnow()
        if not await factor_queries.use_challenge(s, challenge_id=challenge_id, now=now):
            raise invalid_challenge()  # a concurrent right code used it first
        current = await s.get(User, user.id, populate_existing=True)
        if current is None or not current.is_active:  # disabled meanwhile
            raise account_disabled(user.id)
        current.last_login_at = now
        left = None
        if method is Method.RECOVERY_CODE:
            left = (await factor_queries.recovery_codes_left(s, [user.id])).get(user.id, 0)
            await outbox.enqueue(
                s, kind="recovery_code_used", to_address=current.email,
                username=current.username, codes_left=left,
            )  # fmt: skip
        signed_in = await open_session(
            s, user=current, roles=await user_queries.role_names_of(s, current.id),
            policy=policy, client=client, now=now, auth_methods=(PASSWORD, ONE_TIME_PASSWORD),
        )  # fmt: skip
    if left is not None:  # logged once it is true: the transaction committed
        log_security_event(
            "recovery_code_used", level=logging.WARNING, user_id=user.id, codes_left=left
        )
    return signed_in, method
