"""Signing in: registration and login. Refresh rotation lives in sessions.py, password
changes in passwords.py.

Email verification (EmailPolicy.verification): `optional` sends a verification link at
registration and signs in as usual; `required` sends it but signs in only once the address is
verified, and then answers a registration the same whether or not the address was taken (the
owner of a taken address gets a notice instead); `off` sends nothing.
"""

from __future__ import annotations

import logging

from usergraph.auth.passwords import PasswordHasher
from usergraph.auth.throttle import Rule, Throttle
from usergraph.db import second_factors as factor_queries
from usergraph.db import users as user_queries
from usergraph.db.engine import Database
from usergraph.db.models import DEFAULT_ROLE, User, utcnow
from usergraph.mail.outbox import Outbox
from usergraph.services import challenges, email_tokens, validation
from usergraph.services.audit import log_security_event, login_digest
from usergraph.services.challenges import SecondFactorRequired
from usergraph.services.email_tokens import EmailPolicy
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.second_factors import SecondFactorPolicy
from usergraph.services.sessions import (
    ClientInfo,
    SessionPolicy,
    SignedIn,
    account_disabled,
    open_session,
)
from usergraph.services.throttling import (
    account_key,
    account_locked,
    count_ip_attempt,
    hashing,
    ip_key,
    refuse_unless_allowed,
    unknown_login_key,
)
from usergraph.services.users import EMAIL_TAKEN, clean_new_account, insert_user

INVALID_CREDENTIALS = "Wrong login or password."


async def register(
    *,
    db: Database,
    passwords: PasswordHasher,
    policy: SessionPolicy,
    throttle: Throttle,
    outbox: Outbox,
    email_policy: EmailPolicy,
    email: str,
    username: str,
    password: str,
    display_name: str | None,
    client: ClientInfo,
) -> SignedIn | None:
    """Create an account with the default role and sign it in; None (no sign-in) when the
    address must be verified first.

    Every attempt with well-formed input counts against the client's ip, taken or not: an
    EMAIL_TAKEN answer is information, and each attempt costs a hash.
    """
    required = email_policy.verification_required
    email, username, display_name = clean_new_account(
        email=email, username=username, password=password, display_name=display_name
    )
    with hashing(), passwords.place():  # a request refused as busy is not counted
        await count_ip_attempt(throttle, Rule.REGISTER_IP, client.ip_address)
        password_hash = await passwords.hash(password)
    try:
        async with db.sessionmaker() as s, s.begin():
            user = await insert_user(
                s,
                email=email,
                username=username,
                password_hash=password_hash,
                display_name=display_name,
                roles=[DEFAULT_ROLE],
            )
            if email_policy.verification != "off":
                await email_tokens.issue(
                    s, outbox=outbox, policy=email_policy, purpose=email_tokens.VERIFY_EMAIL,
                    user=user, to_address=user.email,
                )  # fmt: skip
            signed_in = None
            if not required:
                now = utcnow()
                user.last_login_at = now
                signed_in = await open_session(
                    s, user=user, roles=[DEFAULT_ROLE], policy=policy, client=client, now=now
                )
    except Rejected as exc:
        if not required or EMAIL_TAKEN not in exc.problems:
            raise
        await _taken_address(db=db, outbox=outbox, email=email, rejected=exc)
        return None
    outbox.wake()
    log_security_event(
        "registered", user_id=user.id, session_id=signed_in.session_id if signed_in else None
    )
    return signed_in


async def _taken_address(*, db: Database, outbox: Outbox, email: str, rejected: Rejected) -> None:
    """Required verification: a taken address is not said to be taken. Its owner gets a
    notice; the caller answers as for a new account (or with the other problems only)."""
    others = [problem for problem in rejected.problems if problem != EMAIL_TAKEN]
    if others:
        raise Rejected(others)
    async with db.sessionmaker() as s, s.begin():
        owner = await user_queries.get_user_by_login(s, validation.email_key(email))
        if owner is not None:
            await outbox.enqueue(
                s, kind="account_exists", to_address=owner.email, username=owner.username
            )
    outbox.wake()
    log_security_event("register_address_taken", user_id=owner.id if owner else None)


async def login(
    *,
    db: Database,
    passwords: PasswordHasher,
    policy: SessionPolicy,
    factors: SecondFactorPolicy,
    throttle: Throttle,
    login: str,
    password: str,
    client: ClientInfo,
    require_verified: bool = False,
) -> SignedIn | SecondFactorRequired:
    """Check the credentials and open a session, or (the account has a second factor) answer
    the challenge that verifySecondFactor finishes. Unknown logins cost as much as wrong
    passwords.

    Failed logins count against the account, whichever of its names was used (a name no
    account has counts under itself, and locks and answers alike), and against the client's
    ip. The account's attempt is counted before the hash is checked, so concurrent guesses
    cannot overshoot its limit; a success clears it, a challenge does not (its code is still to
    come).
    """
    ip = ip_key(client.ip_address)
    # Only failures count against the ip (below); here its window is only checked.
    refuse_unless_allowed(await throttle.check(Rule.LOGIN_IP, ip), Rule.LOGIN_IP)
    account = validation.login_key(login)
    lockout = unknown_login_key(account)  # the account's key once the name is looked up
    try:
        if (
            len(password) > validation.MAX_LOGIN_PASSWORD_LENGTH
            or len(login) > validation.MAX_LOGIN_LENGTH
        ):
            raise Rejected.one(ProblemCode.INVALID_CREDENTIALS, INVALID_CREDENTIALS)
        with hashing(), passwords.place():  # a request refused as busy is not counted
            async with db.read_sessionmaker() as s:
                found = await user_queries.get_user_by_login(s, account)
            lockout = account_key(found.id) if found else unknown_login_key(account)
            verdict = await throttle.hit(Rule.LOGIN_ACCOUNT, lockout)
            if not verdict.allowed:
                log_security_event("login_failed", reason="locked", login=login_digest(account))
                raise account_locked(verdict.retry_after)
            signed_in = await _sign_in(
                db=db,
                passwords=passwords,
                policy=policy,
                factors=factors,
                account=account,
                found=found,
                password=password,
                client=client,
                require_verified=require_verified,
            )
    except Rejected as exc:
        if exc.problems[0].code is ProblemCode.EMAIL_NOT_VERIFIED:
            # The password was right: not a guess, so nothing counts against the account.
            await throttle.clear(Rule.LOGIN_ACCOUNT, lockout)
            raise
        await throttle.hit(Rule.LOGIN_IP, ip)
        if exc.problems[0].code is ProblemCode.ACCOUNT_LOCKED:
            raise
        after = await throttle.check(Rule.LOGIN_ACCOUNT, lockout)
        if not after.allowed:
            log_security_event(
                "account_locked",
                level=logging.WARNING,
                login=login_digest(account),
                retry_after=after.retry_after,
            )
        raise
    if isinstance(signed_in, SecondFactorRequired):
        log_security_event("login_second_factor_required", login=login_digest(account))
        return signed_in
    await throttle.clear(Rule.LOGIN_ACCOUNT, lockout)
    log_security_event(
        "login_succeeded", user_id=signed_in.user.id, session_id=signed_in.session_id
    )
    return signed_in


async def _sign_in(
    *,
    db: Database,
    passwords: PasswordHasher,
    policy: SessionPolicy,
    factors: SecondFactorPolicy,
    account: str,
    found: User | None,
    password: str,
    client: ClientInfo,
    require_verified: bool,
) -> SignedIn | SecondFactorRequired:
    # The hash is checked outside any transaction (it takes long); the write then requires the
    # stored hash to be the one we checked. If it changed meanwhile (a concurrent login
    # upgraded it, or the password changed), check once more against the new one.
    for attempt in range(2):
        if attempt:  # the hash changed meanwhile: the account as it is now
            async with db.read_sessionmaker() as s:
                found = await user_queries.get_user_by_login(s, account)
        user, new_hash = await _check_credentials(
            passwords=passwords, user=found, account=account, password=password
        )
        if require_verified and user.email_verified_at is None:
            log_security_event("login_failed", reason="unverified", user_id=user.id)
            raise Rejected.one(
                ProblemCode.EMAIL_NOT_VERIFIED,
                "Verify your email address first: follow the link we sent you.",
            )
        async with db.sessionmaker() as s, s.begin():
            now = utcnow()
            second_step = await factor_queries.totp_enabled(s, user.id)
            # Signed in only once the second step is done, if there is one.
            values: dict[str, object] = {} if second_step else {"last_login_at": now}
            if new_hash:
                values["password_hash"] = new_hash
            current: User | None = user
            if values:
                current = await user_queries.update_user_if_hash_is(
                    s, user_id=user.id, password_hash=user.password_hash, values=values
                )
            if current is None:
                continue
            if not current.is_active:
                raise account_disabled(user.id)
            if second_step:
                return await challenges.issue(s, policy=factors, user=current, now=now)
            return await open_session(
                s,
                user=current,
                roles=await user_queries.role_names_of(s, current.id),
                policy=policy,
                client=client,
                now=now,
            )
    raise Rejected.one(ProblemCode.INVALID_CREDENTIALS, INVALID_CREDENTIALS)


async def _check_credentials(
    *, passwords: PasswordHasher, user: User | None, account: str, password: str
) -> tuple[User, str | None]:
    """Return the active user the credentials belong to (user, found by the login name
    account) and an upgraded hash, if any."""
    if user is None:
        await passwords.verify_dummy(password)
        log_security_event("login_failed", reason="credentials", login=login_digest(account))
        raise Rejected.one(ProblemCode.INVALID_CREDENTIALS, INVALID_CREDENTIALS)
    verified = await passwords.verify(password, user.password_hash)
    if not verified.ok:
        log_security_event("login_failed", reason="credentials", user_id=user.id)
        raise Rejected.one(ProblemCode.INVALID_CREDENTIALS, INVALID_CREDENTIALS)
    if not user.is_active:
        raise account_disabled(user.id)
    return user, verified.new_hash
