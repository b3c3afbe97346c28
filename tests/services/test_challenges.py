"""services/challenges.py against a real database: the challenge a right password earns an
account with TOTP on (issue) and the second step that trades it for a session (verify).

TOTP codes are computed by tests/totp.py on the secret start_enrollment returned, for the time
of a tests.totp.Clock given to the services as their TOTP clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from tests.client import DEFAULT_PASSWORD
from tests.helpers import CLIENT, codes_and_fields, disable, sign_up, stored_user
from tests.mail_rows import messages_to
from tests.totp import STEP, Clock, code, wrong_code
from usergraph.auth.throttle import Rule, Throttle
from usergraph.db import second_factors as factor_queries
from usergraph.db.models import (
    RecoveryCode,
    SecondFactorChallenge,
    TotpFactor,
    User,
    UserSession,
    utcnow,
)
from usergraph.runtime import Runtime
from usergraph.services import auth, challenges, second_factors
from usergraph.services.challenges import SecondFactorRequired
from usergraph.services.errors import ProblemCode, Rejected, Throttled
from usergraph.services.second_factors import Method, SecondFactorPolicy, code_guess_key
from usergraph.services.sessions import SignedIn
from usergraph.services.throttling import account_key

CHALLENGE_TOKEN = re.compile(r"ugc_[A-Za-z0-9_-]{43}")
INVALID_CODE = [(ProblemCode.INVALID_CODE, ("input", "code"))]
INVALID_CHALLENGE = [(ProblemCode.INVALID_CHALLENGE, ("input", "challengeToken"))]


@dataclass
class Enrolled:
    user: User
    secret: str
    recovery_codes: list[str]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def factors(runtime: Runtime, clock: Clock) -> SecondFactorPolicy:
    return dataclasses.replace(runtime.factors, clock=clock)


@pytest.fixture
async def small_limits() -> AsyncIterator[Throttle]:
    """Counters (in memory) with an account lockout of 3 and an ip limit of 4 a minute."""
    throttle = Throttle(
        {Rule.LOGIN_ACCOUNT: "3/minute", Rule.LOGIN_IP: "4/minute"}, key_prefix="challenges"
    )
    try:
        yield throttle
    finally:
        await throttle.close()


async def enroll(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock, username: str = "ann"
) -> Enrolled:
    """A new account with TOTP on; the clock is then moved a step on (the confirming code's
    step is used up)."""
    signed_up = await sign_up(runtime, username)
    user_id = signed_up.user.id
    enrollment = await second_factors.start_enrollment(
        db=runtime.db,
        passwords=runtime.passwords,
        throttle=runtime.throttle,
        policy=factors,
        user_id=user_id,
        password=DEFAULT_PASSWORD,
    )
    user, codes = await second_factors.confirm_enrollment(
        db=runtime.db,
        outbox=runtime.outbox,
        throttle=runtime.throttle,
        policy=factors,
        user_id=user_id,
        code=code(enrollment.secret, clock()),
    )
    clock.advance(STEP)
    return Enrolled(user=user, secret=enrollment.secret, recovery_codes=codes)


async def issue(
    runtime: Runtime, factors: SecondFactorPolicy, user: User, now: datetime | None = None
) -> SecondFactorRequired:
    async with runtime.db.sessionmaker() as s, s.begin():
        return await challenges.issue(s, policy=factors, user=user, now=now or utcnow())


async def verify(
    runtime: Runtime,
    factors: SecondFactorPolicy,
    token: str,
    code_value: str,
    *,
    throttle: Throttle | None = None,
    require_verified: bool = False,
) -> SignedIn:
    return await challenges.verify(
        db=runtime.db,
        policy=runtime.policy,
        factors=factors,
        throttle=throttle or runtime.throttle,
        outbox=runtime.outbox,
        challenge_token=token,
        code=code_value,
        client=CLIENT,
        require_verified=require_verified,
    )


async def refusal(
    runtime: Runtime,
    factors: SecondFactorPolicy,
    token: str,
    code_value: str,
    **kwargs: Throttle | bool,
) -> Rejected:
    with pytest.raises(Rejected) as caught:
        await verify(runtime, factors, token, code_value, **kwargs)  # type: ignore[arg-type]
    return caught.value


async def challenge_rows(runtime: Runtime, user_id: int) -> list[SecondFactorChallenge]:
    async with runtime.db.read_sessionmaker() as s:
        rows = await s.scalars(
            select(SecondFactorChallenge)
            .where(SecondFactorChallenge.user_id == user_id)
            .order_by(SecondFactorChallenge.id)
        )
        return list(rows.all())


async def the_challenge(runtime: Runtime, token: str) -> SecondFactorChallenge:
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    async with runtime.db.read_sessionmaker() as s:
        row = await s.scalar(
            select(SecondFactorChallenge).where(SecondFactorChallenge.token_hash == token_hash)
        )
    assert row is not None
    return row


async def session_rows(runtime: Runtime, user_id: int) -> list[UserSession]:
    async with runtime.db.read_sessionmaker() as s:
        rows = await s.scalars(
            select(UserSession)
            .where(UserSession.user_id == user_id)
            .order_by(UserSession.created_at)
        )
        return list(rows.all())


async def recovery_codes_left(runtime: Runtime, user_id: int) -> int:
    async with runtime.db.read_sessionmaker() as s:
        count = await s.scalar(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        )
    return int(count or 0)


def security_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "usergraph.security"]


# --- issue -----------------------------------------------------------------------------------


async def test_issue_stores_only_the_hash(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    now = utcnow()
    required = await issue(runtime, factors, ann.user, now)

    assert CHALLENGE_TOKEN.fullmatch(required.token), required
    assert required.expires_at == (now + timedelta(minutes=5)).replace(microsecond=0)
    assert required.methods == (Method.TOTP, Method.RECOVERY_CODE)
    [row] = await challenge_rows(runtime, ann.user.id)
    assert row.token_hash == hashlib.sha256(required.token.encode()).hexdigest()
    assert row.token_hash != required.token
    assert row.expires_at == now + timedelta(minutes=5)
    assert row.created_at == now
    assert (row.attempts, row.used_at) == (0, None)


async def test_each_challenge_is_new(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    tokens = {(await issue(runtime, factors, ann.user)).token for _ in range(4)}
    assert len(tokens) == 4
    assert len(await challenge_rows(runtime, ann.user.id)) == 4


async def test_the_policy_sets_the_lifetime(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    short = dataclasses.replace(factors, challenge_ttl=timedelta(seconds=42))
    now = utcnow()
    required = await issue(runtime, short, ann.user, now)
    assert required.expires_at == (now + timedelta(seconds=42)).replace(microsecond=0)


async def test_methods_without_recovery_codes_left(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(
            update(RecoveryCode).where(RecoveryCode.user_id == ann.user.id).values(used_at=utcnow())
        )
    assert (await issue(runtime, factors, ann.user)).methods == (Method.TOTP,)


async def test_issue_drops_the_users_dead_challenges(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock, "ann")
    bob = await enroll(runtime, factors, clock, "bob")
    used = await issue(runtime, factors, ann.user)
    expired = await issue(runtime, factors, ann.user)
    live = await issue(runtime, factors, ann.user)
    bobs_expired = await issue(runtime, factors, bob.user)
    async with runtime.db.sessionmaker() as s, s.begin():
        past = utcnow() - timedelta(seconds=1)
        for token in (expired.token, bobs_expired.token):
            token_hash = hashlib.sha256(token.encode()).hexdigest()
            await s.execute(
                update(SecondFactorChallenge)
                .where(SecondFactorChallenge.token_hash == token_hash)
                .values(expires_at=past)
            )
    await verify(runtime, factors, used.token, code(ann.secret, clock()))

    new = await issue(runtime, factors, ann.user)

    hashes = {row.token_hash for row in await challenge_rows(runtime, ann.user.id)}
    assert hashes == {hashlib.sha256(t.encode()).hexdigest() for t in (live.token, new.token)}
    # Another user's are left to that user's next challenge.
    assert len(await challenge_rows(runtime, bob.user.id)) == 1


async def test_login_answers_a_challenge_and_clears_nothing(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock, small_limits: Throttle
) -> None:
    ann = await enroll(runtime, factors, clock)
    await small_limits.hit(Rule.LOGIN_ACCOUNT, account_key(ann.user.id))
    result = await auth.login(
        db=runtime.db,
        passwords=runtime.passwords,
        policy=runtime.policy,
        factors=factors,
        throttle=small_limits,
        login="ann",
        password=DEFAULT_PASSWORD,
        client=CLIENT,
    )
    assert isinstance(result, SecondFactorRequired)
    assert len(await challenge_rows(runtime, ann.user.id)) == 1
    # Two attempts counted (the earlier one and this one): one more is allowed, not two.
    assert (await small_limits.hit(Rule.LOGIN_ACCOUNT, account_key(ann.user.id))).allowed
    assert not (await small_limits.hit(Rule.LOGIN_ACCOUNT, account_key(ann.user.id))).allowed


# --- verify ----------------------------------------------------------------------------------


async def test_verify_opens_a_session_with_both_methods(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    required = await issue(runtime, factors, ann.user)
    before = utcnow()

    signed_in = await verify(runtime, factors, required.token, code(ann.secret, clock()))

    assert signed_in.user.id == ann.user.id
    assert signed_in.roles == ("user",)
    sessions = await session_rows(runtime, ann.user.id)
    assert len(sessions) == 2  # registration's and this one
    user_session = next(row for row in sessions if row.id == signed_in.session_id)
    assert user_session.auth_methods == "pwd otp"
    assert user_session.authenticated_at >= before
    stored = await stored_user(runtime, ann.user.id)
    assert stored.last_login_at == user_session.authenticated_at
    claims = runtime.policy.tokens.decode_access_token(signed_in.access.token)
    assert claims.session_id == signed_in.session_id
    assert claims.auth_methods == ("pwd", "otp")
    assert claims.auth_time == user_session.authenticated_at.replace(microsecond=0)
    row = await the_challenge(runtime, required.token)
    assert row.used_at == user_session.authenticated_at
    assert row.attempts == 1


async def test_each_try_is_counted_on_the_challenge(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    required = await issue(runtime, factors, ann.user)
    wrong = wrong_code(ann.secret, clock())
    for attempts in (1, 2):
        assert codes_and_fields(await refusal(runtime, factors, required.token, wrong)) == (
            INVALID_CODE
        )
        assert (await the_challenge(runtime, required.token)).attempts == attempts
    await verify(runtime, factors, required.token, code(ann.secret, clock()))
    row = await the_challenge(runtime, required.token)
    assert row.attempts == 3 and row.used_at is not None


async def test_the_policy_sets_the_number_of_tries(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    two_tries = dataclasses.replace(factors, max_challenge_attempts=2)
    required = await issue(runtime, two_tries, ann.user)
    for _ in range(2):
        rejected = await refusal(
            runtime, two_tries, required.token, wrong_code(ann.secret, clock())
        )
        assert codes_and_fields(rejected) == INVALID_CODE
    rejected = await refusal(runtime, two_tries, required.token, code(ann.secret, clock()))
    assert codes_and_fields(rejected) == INVALID_CHALLENGE
    assert (await the_challenge(runtime, required.token)).attempts == 2


async def test_a_used_challenge_is_refused(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    required = await issue(runtime, factors, ann.user)
    await verify(runtime, factors, required.token, code(ann.secret, clock()))
    clock.advance(STEP)
    for attempt in (code(ann.secret, clock()), ann.recovery_codes[0]):
        assert codes_and_fields(await refusal(runtime, factors, required.token, attempt)) == (
            INVALID_CHALLENGE
        )
    assert await recovery_codes_left(runtime, ann.user.id) == 10
    assert len(await session_rows(runtime, ann.user.id)) == 2


async def test_an_expired_challenge_is_refused(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    required = await issue(runtime, factors, ann.user, utcnow() - timedelta(minutes=5, seconds=1))
    rejected = await refusal(runtime, factors, required.token, code(ann.secret, clock()))
    assert codes_and_fields(rejected) == INVALID_CHALLENGE
    assert (await the_challenge(runtime, required.token)).attempts == 0


@pytest.mark.parametrize("token", ["", "ugc_" + "x" * 43, "ugc_" + "x" * 125, "x" * 129])
async def test_no_such_challenge(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock, token: str
) -> None:
    ann = await enroll(runtime, factors, clock)
    await issue(runtime, factors, ann.user)
    rejected = await refusal(runtime, factors, token, code(ann.secret, clock()))
    assert codes_and_fields(rejected) == INVALID_CHALLENGE


async def test_a_challenge_is_checked_against_its_own_users_factors(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock, "ann")
    bob = await enroll(runtime, factors, clock, "bob")
    clock.advance(STEP)
    anns = await issue(runtime, factors, ann.user)
    for bobs_code in (code(bob.secret, clock()), bob.recovery_codes[0]):
        assert codes_and_fields(await refusal(runtime, factors, anns.token, bobs_code)) == (
            INVALID_CODE
        )
    assert await recovery_codes_left(runtime, bob.user.id) == 10
    signed_in = await verify(runtime, factors, anns.token, code(ann.secret, clock()))
    assert signed_in.user.id == ann.user.id


async def test_a_disabled_account_is_refused(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    required = await issue(runtime, factors, ann.user)
    await disable(runtime, ann.user.id)
    rejected = await refusal(runtime, factors, required.token, code(ann.secret, clock()))
    assert codes_and_fields(rejected) == [(ProblemCode.ACCOUNT_DISABLED, ())]
    assert len(await session_rows(runtime, ann.user.id)) == 1


async def test_totp_turned_off_ends_the_challenges(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    required = await issue(runtime, factors, ann.user)
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await factor_queries.delete_factors(s, ann.user.id)
    rejected = await refusal(runtime, factors, required.token, code(ann.secret, clock()))
    assert codes_and_fields(rejected) == INVALID_CHALLENGE
    assert len(await session_rows(runtime, ann.user.id)) == 1


async def test_required_verification(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    required = await issue(runtime, factors, ann.user)
    rejected = await refusal(
        runtime, factors, required.token, code(ann.secret, clock()), require_verified=True
    )
    assert codes_and_fields(rejected) == INVALID_CHALLENGE
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(User).values(email_verified_at=utcnow()))
    signed_in = await verify(
        runtime, factors, required.token, code(ann.secret, clock()), require_verified=True
    )
    assert signed_in.user.id == ann.user.id


# --- codes -----------------------------------------------------------------------------------


async def test_a_step_is_taken_once(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    used = code(ann.secret, clock())
    await verify(runtime, factors, (await issue(runtime, factors, ann.user)).token, used)
    async with runtime.db.read_sessionmaker() as s:
        factor = await s.get(TotpFactor, ann.user.id)
    assert factor is not None and factor.last_used_step == int(clock() // STEP)
    again = await issue(runtime, factors, ann.user)
    assert codes_and_fields(await refusal(runtime, factors, again.token, used)) == INVALID_CODE
    # An older step than the one used, within the window, is refused too.
    previous = code(ann.secret, clock() - STEP)
    assert codes_and_fields(await refusal(runtime, factors, again.token, previous)) == INVALID_CODE


async def test_a_recovery_code_is_used_up(
    runtime: Runtime,
    factors: SecondFactorPolicy,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ann = await enroll(runtime, factors, clock)
    recovery = ann.recovery_codes[5]
    caplog.set_level(logging.INFO, logger="usergraph.security")

    signed_in = await verify(
        runtime, factors, (await issue(runtime, factors, ann.user)).token, recovery.upper()
    )

    assert await recovery_codes_left(runtime, ann.user.id) == 9
    claims = runtime.policy.tokens.decode_access_token(signed_in.access.token)
    assert claims.auth_methods == ("pwd", "otp")
    [notice] = await messages_to(runtime.db, "ann@example.com", "recovery_code_used")
    assert "9 codes are left" in notice.text_body
    lines = security_lines(caplog)
    assert f"event=recovery_code_used user_id={ann.user.id} codes_left=9" in lines
    assert (
        f"event=login_succeeded user_id={ann.user.id} session_id={signed_in.session_id} "
        "method=RECOVERY_CODE"
    ) in lines
    [warning] = [r for r in caplog.records if r.getMessage().startswith("event=recovery_code_used")]
    assert warning.levelno == logging.WARNING

    again = await issue(runtime, factors, ann.user)
    assert codes_and_fields(await refusal(runtime, factors, again.token, recovery)) == INVALID_CODE
    assert await recovery_codes_left(runtime, ann.user.id) == 9


async def test_security_log_of_refusals(
    runtime: Runtime,
    factors: SecondFactorPolicy,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ann = await enroll(runtime, factors, clock)
    required = await issue(runtime, factors, ann.user)
    caplog.set_level(logging.INFO, logger="usergraph.security")
    wrong = wrong_code(ann.secret, clock())
    await refusal(runtime, factors, "ugc_" + "x" * 43, wrong)
    await refusal(runtime, factors, required.token, wrong)
    right = code(ann.secret, clock())
    signed_in = await verify(runtime, factors, required.token, right)
    await refusal(runtime, factors, required.token, right)
    lines = security_lines(caplog)
    assert lines == [
        "event=second_factor_failed user_id=- reason=challenge",
        f"event=second_factor_failed user_id={ann.user.id} reason=code",
        f"event=login_succeeded user_id={ann.user.id} session_id={signed_in.session_id} "
        "method=TOTP",
        f"event=second_factor_failed user_id={ann.user.id} reason=challenge",
    ]
    for line in lines:
        assert wrong not in line and right not in line and required.token not in line


# --- counters -------------------------------------------------------------------------------


async def test_wrong_codes_lock_the_account_under_its_own_key(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock, small_limits: Throttle
) -> None:
    ann = await enroll(runtime, factors, clock)
    required = await issue(runtime, factors, ann.user)
    wrong = wrong_code(ann.secret, clock())
    for _ in range(3):
        rejected = await refusal(runtime, factors, required.token, wrong, throttle=small_limits)
        assert codes_and_fields(rejected) == INVALID_CODE
    for key in (account_key(ann.user.id), code_guess_key(ann.user.id)):
        assert not (await small_limits.check(Rule.LOGIN_ACCOUNT, key)).allowed, key

    # What a right password elsewhere clears (the account's count) is not enough.
    await small_limits.clear(Rule.LOGIN_ACCOUNT, account_key(ann.user.id))
    rejected = await refusal(
        runtime, factors, required.token, code(ann.secret, clock()), throttle=small_limits
    )
    assert codes_and_fields(rejected) == [(ProblemCode.ACCOUNT_LOCKED, ("input", "code"))]
    assert rejected.problems[0].retry_after is not None and rejected.problems[0].retry_after > 0
    # The locked try was not counted on the challenge.
    assert (await the_challenge(runtime, required.token)).attempts == 3


async def test_a_right_code_clears_the_accounts_counts(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock, small_limits: Throttle
) -> None:
    ann = await enroll(runtime, factors, clock)
    await small_limits.hit(Rule.LOGIN_ACCOUNT, account_key(ann.user.id))  # the login
    required = await issue(runtime, factors, ann.user)
    await refusal(
        runtime, factors, required.token, wrong_code(ann.secret, clock()), throttle=small_limits
    )
    await verify(runtime, factors, required.token, code(ann.secret, clock()), throttle=small_limits)
    for key in (account_key(ann.user.id), code_guess_key(ann.user.id)):
        for _ in range(3):  # the whole budget again
            assert (await small_limits.hit(Rule.LOGIN_ACCOUNT, key)).allowed, key


async def test_wrong_codes_and_dead_challenges_count_against_the_ip(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock, small_limits: Throttle
) -> None:
    ann = await enroll(runtime, factors, clock)
    required = await issue(runtime, factors, ann.user)
    right = code(ann.secret, clock())
    for _ in range(2):
        await refusal(runtime, factors, "ugc_" + "x" * 43, right, throttle=small_limits)
    await refusal(
        runtime, factors, required.token, wrong_code(ann.secret, clock()), throttle=small_limits
    )
    # A right code does not count against the ip.
    await verify(runtime, factors, required.token, right, throttle=small_limits)
    await refusal(runtime, factors, required.token, right, throttle=small_limits)  # used: 4th
    with pytest.raises(Throttled):
        await verify(
            runtime,
            factors,
            (await issue(runtime, factors, ann.user)).token,
            right,
            throttle=small_limits,
        )


# --- concurrency -------------------------------------------------------------------------------


async def gather_outcomes(*tries: object) -> list[SignedIn | Rejected]:
    results = await asyncio.gather(*tries, return_exceptions=True)  # type: ignore[call-overload]
    outcomes: list[SignedIn | Rejected] = []
    for result in results:
        if not isinstance(result, SignedIn | Rejected):
            raise result
        outcomes.append(result)
    return outcomes


async def test_concurrent_right_codes_on_one_challenge_open_one_session(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    required = await issue(runtime, factors, ann.user)
    outcomes = await gather_outcomes(
        verify(runtime, factors, required.token, code(ann.secret, clock())),
        verify(runtime, factors, required.token, ann.recovery_codes[0]),
    )
    signed_in = [o for o in outcomes if isinstance(o, SignedIn)]
    rejected = [o for o in outcomes if isinstance(o, Rejected)]
    assert len(signed_in) == 1 and len(rejected) == 1, outcomes
    assert codes_and_fields(rejected[0]) == INVALID_CHALLENGE
    assert len(await session_rows(runtime, ann.user.id)) == 2
    # The loser's code was not used up: only the winner's counts.
    recovery_won = outcomes[1] is signed_in[0]
    assert await recovery_codes_left(runtime, ann.user.id) == (9 if recovery_won else 10)


async def test_one_code_on_two_challenges_at_once_works_once(
    runtime: Runtime, factors: SecondFactorPolicy, clock: Clock
) -> None:
    ann = await enroll(runtime, factors, clock)
    first = await issue(runtime, factors, ann.user)
    second = await issue(runtime, factors, ann.user)
    right = code(ann.secret, clock())
    outcomes = await gather_outcomes(
        verify(runtime, factors, first.token, right),
        verify(runtime, factors, second.token, right),
    )
    signed_in = [o for o in outcomes if isinstance(o, SignedIn)]
    rejected = [o for o in outcomes if isinstance(o, Rejected)]
    assert len(signed_in) == 1 and len(rejected) == 1, outcomes
    assert codes_and_fields(rejected[0]) == INVALID_CODE
    assert len(await session_rows(runtime, ann.user.id)) == 2
