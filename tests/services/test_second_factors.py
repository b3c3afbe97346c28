"""services/second_factors.py against a real database: enrollment, checking a code (TOTP or
recovery code, each used up by working), turning off, new recovery codes and an
administrator's reset, with the rows each writes, its notices, its log events and its counts
against the account's lockout. TOTP codes come from tests/totp.py, at a controllable clock."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from sqlalchemy import select

from tests.client import DEFAULT_PASSWORD
from tests.helpers import CLIENT, codes_and_fields, create_account
from tests.mail_rows import kinds, messages
from tests.totp import STEP, Clock, code, secret_key, wrong_code
from usergraph.auth.throttle import Rule, Throttle
from usergraph.auth.tokens import hash_token
from usergraph.db import second_factors as factor_queries
from usergraph.db.models import RecoveryCode, SecondFactorChallenge, TotpFactor, User, utcnow
from usergraph.runtime import Runtime
from usergraph.services import auth, passwords, second_factors
from usergraph.services.access import Actor
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.second_factors import Method, SecondFactorPolicy, code_guess_key

WRONG = "not the password at all"
OTHER_PASSWORD = "another long passphrase 99"
SECURITY = "usergraph.security"
INVALID_CODE = [(ProblemCode.INVALID_CODE, ("input", "code"))]


@dataclasses.dataclass
class Enrolled:
    user: User
    secret: str
    codes: list[str]


@pytest.fixture
def totp_clock() -> Clock:
    return Clock()


@pytest.fixture
def policy(runtime: Runtime, totp_clock: Clock) -> SecondFactorPolicy:
    """The runtime's second-factor policy, counting TOTP steps by totp_clock."""
    return dataclasses.replace(runtime.factors, clock=totp_clock)


@pytest.fixture
def security_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def lockout(limit: str = "3/minute") -> Throttle:
    """A throttle whose accounts lock after `limit` (the rest generous)."""
    return Throttle(
        {
            Rule.LOGIN_ACCOUNT: limit,
            Rule.LOGIN_IP: "1000/minute",
            Rule.REGISTER_IP: "1000/minute",
            Rule.REFRESH_IP: "1000/minute",
            Rule.EMAIL_ADDRESS: "1000/minute",
            Rule.EMAIL_IP: "1000/minute",
        }
    )


def events(caplog: pytest.LogCaptureFixture, name: str | None = None) -> list[dict[str, Any]]:
    found = [
        {**record.security_event, "level": record.levelno}  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == SECURITY
    ]
    return [event for event in found if name is None or event["event"] == name]


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records) + caplog.text


async def login_problem(
    runtime: Runtime, throttle: Throttle, login: str, password: str = DEFAULT_PASSWORD
) -> ProblemCode | None:
    """The first problem of auth.login with these credentials; None when it signs in or
    answers a challenge."""
    try:
        await auth.login(
            db=runtime.db, passwords=runtime.passwords, policy=runtime.policy,
            factors=runtime.factors, throttle=throttle, login=login, password=password,
            client=CLIENT,
        )  # fmt: skip
    except Rejected as exc:
        return exc.problems[0].code
    return None


async def failures_left(runtime: Runtime, throttle: Throttle, login: str) -> int:
    """How many wrong passwords the account takes before ACCOUNT_LOCKED (using them up)."""
    left = 0
    while await login_problem(runtime, throttle, login, WRONG) is ProblemCode.INVALID_CREDENTIALS:
        left += 1
        assert left <= 100
    return left


async def change_password(
    runtime: Runtime, throttle: Throttle, user_id: int, current: str, new: str
) -> None:
    """services.passwords.change_password: a right password, which clears the login count."""
    await passwords.change_password(
        db=runtime.db, passwords=runtime.passwords, throttle=throttle, user_id=user_id,
        current_session_id=None, current_password=current, new_password=new,
    )  # fmt: skip


# --- calling the services -----------------------------------------------------------------


async def start(
    runtime: Runtime,
    policy: SecondFactorPolicy,
    user_id: int,
    password: str = DEFAULT_PASSWORD,
    *,
    throttle: Throttle | None = None,
) -> second_factors.Enrollment:
    return await second_factors.start_enrollment(
        db=runtime.db,
        passwords=runtime.passwords,
        throttle=throttle or runtime.throttle,
        policy=policy,
        user_id=user_id,
        password=password,
    )


async def confirm(
    runtime: Runtime, policy: SecondFactorPolicy, user_id: int, code_value: str
) -> tuple[User, list[str]]:
    return await second_factors.confirm_enrollment(
        db=runtime.db,
        outbox=runtime.outbox,
        throttle=runtime.throttle,
        policy=policy,
        user_id=user_id,
        code=code_value,
    )


async def disable(
    runtime: Runtime,
    policy: SecondFactorPolicy,
    user_id: int,
    code_value: str,
    password: str = DEFAULT_PASSWORD,
    *,
    throttle: Throttle | None = None,
) -> User:
    return await second_factors.disable(
        db=runtime.db,
        passwords=runtime.passwords,
        throttle=throttle or runtime.throttle,
        outbox=runtime.outbox,
        policy=policy,
        user_id=user_id,
        password=password,
        code=code_value,
    )


async def regenerate(
    runtime: Runtime,
    policy: SecondFactorPolicy,
    user_id: int,
    code_value: str,
    password: str = DEFAULT_PASSWORD,
    *,
    throttle: Throttle | None = None,
) -> list[str]:
    return await second_factors.regenerate_recovery_codes(
        db=runtime.db,
        passwords=runtime.passwords,
        throttle=throttle or runtime.throttle,
        outbox=runtime.outbox,
        policy=policy,
        user_id=user_id,
        password=password,
        code=code_value,
    )


async def reset(runtime: Runtime, actor: User, user_id: int) -> User:
    return await second_factors.reset(
        db=runtime.db,
        outbox=runtime.outbox,
        actor=Actor(user_id=actor.id, roles=frozenset({"admin", "user"})),
        user_id=user_id,
    )


async def enrolled(
    runtime: Runtime, policy: SecondFactorPolicy, clock: Clock, username: str = "ann"
) -> Enrolled:
    """An account with TOTP on (its current step used by the confirmation)."""
    user = await create_account(runtime, username)
    secret = (await start(runtime, policy, user.id)).secret
    _, codes = await confirm(runtime, policy, user.id, code(secret, clock()))
    return Enrolled(user, secret, codes)


async def check(runtime: Runtime, policy: SecondFactorPolicy, user_id: int, value: str) -> Any:
    """check_code in a transaction of its own (committed)."""
    async with runtime.db.sessionmaker() as s, s.begin():
        factor = await factor_queries.get_totp(s, user_id)
        assert factor is not None
        return await second_factors.check_code(s, policy=policy, factor=factor, code=value)


async def totp_row(runtime: Runtime, user_id: int) -> TotpFactor | None:
    async with runtime.db.read_sessionmaker() as s:
        return await s.get(TotpFactor, user_id)


async def recovery_rows(runtime: Runtime, user_id: int) -> list[RecoveryCode]:
    async with runtime.db.read_sessionmaker() as s:
        query = select(RecoveryCode).where(RecoveryCode.user_id == user_id)
        return list((await s.scalars(query.order_by(RecoveryCode.id))).all())


async def challenge_rows(runtime: Runtime, user_id: int) -> list[SecondFactorChallenge]:
    async with runtime.db.read_sessionmaker() as s:
        query = select(SecondFactorChallenge).where(SecondFactorChallenge.user_id == user_id)
        return list((await s.scalars(query)).all())


async def add_challenge(runtime: Runtime, user_id: int) -> None:
    async with runtime.db.sessionmaker() as s, s.begin():
        now = utcnow()
        await factor_queries.add_challenge(
            s, user_id=user_id, token_hash=hash_token(f"ugc_test_{user_id}"), now=now,
            expires_at=now + runtime.factors.challenge_ttl,
        )  # fmt: skip


async def unused_hashes(runtime: Runtime, user_id: int) -> set[str]:
    return {row.code_hash for row in await recovery_rows(runtime, user_id) if row.used_at is None}


def hashes_of(codes: list[str]) -> set[str]:
    return {hash_token(value.replace("-", "")) for value in codes}


# --- start_enrollment ---------------------------------------------------------------------


async def test_start_stores_the_secret_encrypted_and_pending(
    runtime: Runtime, policy: SecondFactorPolicy, security_log: pytest.LogCaptureFixture
) -> None:
    ann = await create_account(runtime, "ann")
    enrollment = await start(runtime, policy, ann.id)
    assert len(secret_key(enrollment.secret)) == 20
    uri = urlsplit(enrollment.otpauth_uri)
    assert unquote(uri.path) == f"/{runtime.factors.issuer}:ann"
    assert parse_qs(uri.query)["secret"] == [enrollment.secret]
    assert enrollment.qr_code_svg.startswith("<svg")

    row = await totp_row(runtime, ann.id)
    assert row is not None
    assert row.enabled_at is None and row.last_used_step is None
    assert enrollment.secret not in row.secret_ciphertext
    assert runtime.factors.cipher.decrypt(row.secret_ciphertext) == enrollment.secret
    assert await recovery_rows(runtime, ann.id) == []
    assert [(e["event"], e["user_id"]) for e in events(security_log)] == [
        ("totp_enrollment_started", ann.id)
    ]
    assert enrollment.secret not in log_text(security_log)
    assert await messages(runtime.db) == []


async def test_start_again_replaces_the_pending_secret(
    runtime: Runtime, policy: SecondFactorPolicy
) -> None:
    ann = await create_account(runtime, "ann")
    first = await start(runtime, policy, ann.id)
    second = await start(runtime, policy, ann.id)
    assert first.secret != second.secret
    async with runtime.db.read_sessionmaker() as s:
        rows = list((await s.scalars(select(TotpFactor))).all())
    assert [row.user_id for row in rows] == [ann.id]
    assert runtime.factors.cipher.decrypt(rows[0].secret_ciphertext) == second.secret


async def test_start_with_a_wrong_password(
    runtime: Runtime, policy: SecondFactorPolicy, security_log: pytest.LogCaptureFixture
) -> None:
    ann = await create_account(runtime, "ann")
    with pytest.raises(Rejected) as refused:
        await start(runtime, policy, ann.id, WRONG)
    assert codes_and_fields(refused.value) == [
        (ProblemCode.INVALID_CREDENTIALS, ("input", "password"))
    ]
    assert await totp_row(runtime, ann.id) is None
    assert [(e["event"], e.get("reason")) for e in events(security_log)] == [
        ("totp_enrollment_failed", "credentials")
    ]
    assert WRONG not in log_text(security_log)


async def test_start_when_on_and_for_nobody(
    runtime: Runtime, policy: SecondFactorPolicy, totp_clock: Clock
) -> None:
    ann = await enrolled(runtime, policy, totp_clock)
    with pytest.raises(Rejected) as on:
        await start(runtime, policy, ann.user.id, WRONG)  # before the password
    assert codes_and_fields(on.value) == [(ProblemCode.TOTP_ALREADY_ENABLED, ())]
    row = await totp_row(runtime, ann.user.id)
    assert row is not None and runtime.factors.cipher.decrypt(row.secret_ciphertext) == ann.secret
    with pytest.raises(Rejected) as nobody:
        await start(runtime, policy, 999_999_999)
    assert codes_and_fields(nobody.value) == [(ProblemCode.NOT_FOUND, ())]


async def test_start_counts_wrong_passwords_against_the_account(
    runtime: Runtime, policy: SecondFactorPolicy
) -> None:
    ann = await create_account(runtime, "ann")
    throttle = lockout("2/minute")
    try:
        for _ in range(2):
            with pytest.raises(Rejected) as wrong:
                await start(runtime, policy, ann.id, WRONG, throttle=throttle)
            assert codes_and_fields(wrong.value)[0][0] is ProblemCode.INVALID_CREDENTIALS
        with pytest.raises(Rejected) as locked:
            await start(runtime, policy, ann.id, throttle=throttle)
        [problem] = locked.value.problems
        assert problem.code is ProblemCode.ACCOUNT_LOCKED
        assert problem.retry_after is not None and 0 < problem.retry_after <= 60
        # The login lockout's count: the right password cannot sign in either.
        assert await login_problem(runtime, throttle, "ann") is ProblemCode.ACCOUNT_LOCKED
    finally:
        await throttle.close()


# --- confirm_enrollment -------------------------------------------------------------------


async def test_confirm_turns_totp_on(
    runtime: Runtime,
    policy: SecondFactorPolicy,
    totp_clock: Clock,
    security_log: pytest.LogCaptureFixture,
) -> None:
    ann = await create_account(runtime, "ann")
    secret = (await start(runtime, policy, ann.id)).secret
    user, codes = await confirm(runtime, policy, ann.id, code(secret, totp_clock()))
    assert user.id == ann.id
    assert len(set(codes)) == 10

    row = await totp_row(runtime, ann.id)
    assert row is not None and row.enabled_at is not None
    assert row.last_used_step == int(totp_clock() // STEP)  # the confirming step, used up
    # Only the hashes are kept, of the codes without their dashes.
    assert await unused_hashes(runtime, ann.id) == hashes_of(codes)
    assert kinds(await messages(runtime.db)) == [("totp_enabled", "ann@example.com", "pending")]
    assert [e["event"] for e in events(security_log)][-1] == "totp_enabled"
    text = log_text(security_log)
    assert secret not in text
    assert not any(value in text for value in codes)


async def test_confirm_refusals(
    runtime: Runtime, policy: SecondFactorPolicy, totp_clock: Clock
) -> None:
    ann = await create_account(runtime, "ann")
    with pytest.raises(Rejected) as nothing_pending:
        await confirm(runtime, policy, ann.id, "123456")
    assert codes_and_fields(nothing_pending.value) == [
        (ProblemCode.TOTP_NOT_ENABLED, ("input", "code"))
    ]
    secret = (await start(runtime, policy, ann.id)).secret
    for value in (wrong_code(secret, totp_clock()), "abcd-efgh-ijkl-mnop", "", "1234567"):
        with pytest.raises(Rejected) as wrong:
            await confirm(runtime, policy, ann.id, value)
        assert codes_and_fields(wrong.value) == INVALID_CODE, value
    row = await totp_row(runtime, ann.id)
    assert row is not None and row.enabled_at is None and row.last_used_step is None
    assert await recovery_rows(runtime, ann.id) == []
    assert await messages(runtime.db) == []

    await confirm(runtime, policy, ann.id, code(secret, totp_clock()))
    totp_clock.advance(STEP)
    with pytest.raises(Rejected) as on:
        await confirm(runtime, policy, ann.id, code(secret, totp_clock()))
    assert codes_and_fields(on.value) == [(ProblemCode.TOTP_ALREADY_ENABLED, ())]
    assert len(await recovery_rows(runtime, ann.id)) == 10


# --- check_code: which factor a code proves -----------------------------------------------


async def test_check_code_takes_each_totp_step_once(
    runtime: Runtime, policy: SecondFactorPolicy, totp_clock: Clock
) -> None:
    ann = await enrolled(runtime, policy, totp_clock)
    uid, secret, now = ann.user.id, ann.secret, totp_clock()
    # The confirming step and the one before it are used (never older than the newest).
    assert await check(runtime, policy, uid, code(secret, now)) is None
    earlier = code(secret, now - STEP)
    if earlier != code(secret, now + STEP):
        assert await check(runtime, policy, uid, earlier) is None
    # The next step works, once; then the current one is older than the newest used.
    assert await check(runtime, policy, uid, code(secret, now + STEP)) is Method.TOTP
    assert await check(runtime, policy, uid, code(secret, now + STEP)) is None
    row = await totp_row(runtime, uid)
    assert row is not None and row.last_used_step == int(now // STEP) + 1
    # Spaces and dashes are ignored.
    totp_clock.advance(3 * STEP)
    typed = code(secret, totp_clock())
    assert await check(runtime, policy, uid, f" {typed[:3]}-{typed[3:]} ") is Method.TOTP
    # Recovery codes are untouched by all this.
    assert await unused_hashes(runtime, uid) == hashes_of(ann.codes)


async def test_check_code_uses_each_recovery_code_once(
    runtime: Runtime, policy: SecondFactorPolicy, totp_clock: Clock
) -> None:
    ann = await enrolled(runtime, policy, totp_clock)
    uid = ann.user.id
    before = await totp_row(runtime, uid)
    assert before is not None
    first, second, third = ann.codes[:3]
    assert await check(runtime, policy, uid, first) is Method.RECOVERY_CODE
    assert await check(runtime, policy, uid, first) is None
    # Case and dashes are ignored.
    assert (
        await check(runtime, policy, uid, second.upper().replace("-", "")) is Method.RECOVERY_CODE
    )
    assert await check(runtime, policy, uid, f" {third.upper()} ") is Method.RECOVERY_CODE
    assert await unused_hashes(runtime, uid) == hashes_of(ann.codes[3:])
    # A recovery code takes no TOTP step.
    after = await totp_row(runtime, uid)
    assert after is not None and after.last_used_step == before.last_used_step


async def test_check_code_chooses_by_the_shape_of_the_code(
    runtime: Runtime, policy: SecondFactorPolicy, totp_clock: Clock
) -> None:
    ann = await enrolled(runtime, policy, totp_clock)
    bob = await enrolled(runtime, policy, totp_clock, "bob")
    uid = ann.user.id
    before = await totp_row(runtime, uid)
    assert before is not None
    for value in (
        "",
        "12345",  # too short for TOTP
        "1234567",
        "12345a",
        "abcdefgh",
        "2345-6723-4567-2345",  # shaped like a recovery code (base32 digits), not one
        ann.codes[0][:-1],
        ann.codes[0] + "a",
        bob.codes[0],  # another user's
        ann.codes[0].replace("-", "") * 4,  # too long to be anything
        wrong_code(ann.secret, totp_clock() + STEP),
    ):
        assert await check(runtime, policy, uid, value) is None, value
    # None of those used anything up.
    after = await totp_row(runtime, uid)
    assert after is not None and after.last_used_step == before.last_used_step
    assert await unused_hashes(runtime, uid) == hashes_of(ann.codes)
    assert await unused_hashes(runtime, bob.user.id) == hashes_of(bob.codes)


async def test_check_code_counts_steps_from_the_policys_clock(
    runtime: Runtime, policy: SecondFactorPolicy, totp_clock: Clock
) -> None:
    ann = await enrolled(runtime, policy, totp_clock)
    later = totp_clock() + 10 * STEP
    value = code(ann.secret, later)
    while value in {code(ann.secret, totp_clock() + d) for d in (-STEP, 0, STEP)}:
        later += STEP
        value = code(ann.secret, later)
    # Not yet: the code belongs to a step ten away from the policy's now...
    assert await check(runtime, policy, ann.user.id, value) is None
    # ...and once the clock is there, it works.
    totp_clock.now = later
    assert await check(runtime, policy, ann.user.id, value) is Method.TOTP


async def test_check_code_in_a_rolled_back_transaction_uses_nothing_up(
    runtime: Runtime, policy: SecondFactorPolicy, totp_clock: Clock
) -> None:
    ann = await enrolled(runtime, policy, totp_clock)
    uid = ann.user.id
    totp_value = code(ann.secret, totp_clock() + STEP)

    class Undo(Exception):
        pass

    with pytest.raises(Undo):
        async with runtime.db.sessionmaker() as s, s.begin():
            factor = await factor_queries.get_totp(s, uid)
            assert factor is not None
            check_code = second_factors.check_code
            assert await check_code(s, policy=policy, factor=factor, code=totp_value) is Method.TOTP
            assert (
                await check_code(s, policy=policy, factor=factor, code=ann.codes[0])
                is Method.RECOVERY_CODE
            )
            raise Undo
    assert await check(runtime, policy, uid, totp_value) is Method.TOTP
    assert await check(runtime, policy, uid, ann.codes[0]) is Method.RECOVERY_CODE


# --- disable ------------------------------------------------------------------------------


async def test_disable_with_a_totp_code_removes_every_factor(
    runtime: Runtime,
    policy: SecondFactorPolicy,
    totp_clock: Clock,
    security_log: pytest.LogCaptureFixture,
) -> None:
    ann = await enrolled(runtime, policy, totp_clock)
    bob = await enrolled(runtime, policy, totp_clock, "bob")
    await add_challenge(runtime, ann.user.id)
    security_log.clear()
    totp_clock.advance(STEP)
    user = await disable(runtime, policy, ann.user.id, code(ann.secret, totp_clock()))
    assert user.id == ann.user.id
    assert await totp_row(runtime, ann.user.id) is None
    assert await recovery_rows(runtime, ann.user.id) == []
    assert await challenge_rows(runtime, ann.user.id) == []
    # bob keeps his.
    assert await totp_row(runtime, bob.user.id) is not None
    assert len(await recovery_rows(runtime, bob.user.id)) == 10

    [notice] = [m for m in await messages(runtime.db) if m.kind == "totp_disabled"]
    assert notice.to_address == "ann@example.com"
    assert "ann" in notice.text_body and "recovery code" not in notice.text_body
    assert [(e["event"], e["user_id"], e.get("method")) for e in events(security_log)] == [
        ("totp_disabled", ann.user.id, "TOTP")
    ]


async def test_disable_with_a_recovery_code(
    runtime: Runtime,
    policy: SecondFactorPolicy,
    totp_clock: Clock,
    security_log: pytest.LogCaptureFixture,
) -> None:
    ann = await enrolled(runtime, policy, totp_clock)
    await disable(runtime, policy, ann.user.id, ann.codes[9].upper())
    assert await totp_row(runtime, ann.user.id) is None
    [notice] = [m for m in await messages(runtime.db) if m.kind == "totp_disabled"]
    assert "with a recovery code" in notice.text_body
    [event] = events(security_log, "totp_disabled")
    assert event["method"] == "RECOVERY_CODE"
    assert not any(value in log_text(security_log) for value in ann.codes)


async def test_disable_refusals_change_nothing(
    runtime: Runtime,
    policy: SecondFactorPolicy,
    totp_clock: Clock,
    security_log: pytest.LogCaptureFixture,
) -> None:
    off = await create_account(runtime, "off")
    with pytest.raises(Rejected) as not_on:
        await disable(runtime, policy, off.id, "123456", WRONG)
    assert codes_and_fields(not_on.value) == [(ProblemCode.TOTP_NOT_ENABLED, ())]

    ann = await enrolled(runtime, policy, totp_clock)
    security_log.clear()
    right = code(ann.secret, totp_clock() + STEP)
    with pytest.raises(Rejected) as wrong_password:
        await disable(runtime, policy, ann.user.id, right, WRONG)
    assert codes_and_fields(wrong_password.value) == [
        (ProblemCode.INVALID_CREDENTIALS, ("input", "password"))
    ]
    for value in (wrong_code(ann.secret, totp_clock()), "abcd-efgh-ijkl-mnop", ""):
        with pytest.raises(Rejected) as wrong:
            await disable(runtime, policy, ann.user.id, value)
        assert codes_and_fields(wrong.value) == INVALID_CODE
    row = await totp_row(runtime, ann.user.id)
    assert row is not None and row.enabled_at is not None
    assert await unused_hashes(runtime, ann.user.id) == hashes_of(ann.codes)
    assert [m.kind for m in await messages(runtime.db)] == ["totp_enabled"]
    assert [e.get("reason") for e in events(security_log, "totp_disable_failed")] == [
        "credentials",
        "code",
        "code",
        "code",
    ]
    # The right code was not spent by the refused password.
    await disable(runtime, policy, ann.user.id, right)
    assert await totp_row(runtime, ann.user.id) is None


# --- the lockout of code guesses ----------------------------------------------------------


async def test_code_guesses_lock_the_account_and_only_a_right_code_clears_them(
    runtime: Runtime, policy: SecondFactorPolicy, totp_clock: Clock
) -> None:
    ann = await enrolled(runtime, policy, totp_clock)
    uid = ann.user.id
    throttle = lockout("3/minute")
    passwords_in_turn = [DEFAULT_PASSWORD, OTHER_PASSWORD]
    try:
        wrong = wrong_code(ann.secret, totp_clock())
        refused = []
        for attempt in range(4):
            current, new = passwords_in_turn[attempt % 2], passwords_in_turn[(attempt + 1) % 2]
            with pytest.raises(Rejected) as tried:
                await disable(runtime, policy, uid, wrong, current, throttle=throttle)
            refused.append(tried.value.problems[0])
            # A right password elsewhere clears the login count each time...
            await change_password(runtime, throttle, uid, current, new)
        # ...but not the count of code guesses, which locks on the fourth.
        assert [problem.code for problem in refused] == [ProblemCode.INVALID_CODE] * 3 + [
            ProblemCode.ACCOUNT_LOCKED
        ]
        assert refused[-1].retry_after is not None and refused[-1].retry_after > 0
        assert not (await throttle.check(Rule.LOGIN_ACCOUNT, code_guess_key(uid))).allowed
        # Not even a right code gets through now.
        right = code(ann.secret, totp_clock() + STEP)
        with pytest.raises(Rejected) as locked:
            await disable(runtime, policy, uid, right, throttle=throttle)
        assert locked.value.problems[0].code is ProblemCode.ACCOUNT_LOCKED
        assert await totp_row(runtime, uid) is not None
        # Once the guesses' window is past (cleared here), a right code clears every count:
        # the guesses, and the login count that attempt left.
        await throttle.clear(Rule.LOGIN_ACCOUNT, code_guess_key(uid))
        await regenerate(runtime, policy, uid, right, throttle=throttle)
        for _ in range(3):
            assert (await throttle.hit(Rule.LOGIN_ACCOUNT, code_guess_key(uid))).allowed
        assert await failures_left(runtime, throttle, "ann") == 3
    finally:
        await throttle.close()


async def test_a_right_password_with_a_wrong_code_stays_counted(
    runtime: Runtime, policy: SecondFactorPolicy, totp_clock: Clock
) -> None:
    ann = await enrolled(runtime, policy, totp_clock)
    throttle = lockout("3/minute")
    try:
        with pytest.raises(Rejected) as wrong:
            await regenerate(
                runtime, policy, ann.user.id, wrong_code(ann.secret, totp_clock()),
                throttle=throttle,
            )  # fmt: skip
        assert codes_and_fields(wrong.value) == INVALID_CODE
        # The attempt still counts against the login: fewer than 3 failures are left.
        assert await failures_left(runtime, throttle, "ann") < 3
    finally:
        await throttle.close()


# --- regenerate_recovery_codes ------------------------------------------------------------


async def test_regenerate_replaces_the_codes(
    runtime: Runtime,
    policy: SecondFactorPolicy,
    totp_clock: Clock,
    security_log: pytest.LogCaptureFixture,
) -> None:
    ann = await enrolled(runtime, policy, totp_clock)
    uid = ann.user.id
    assert await check(runtime, policy, uid, ann.codes[0]) is Method.RECOVERY_CODE
    security_log.clear()
    new = await regenerate(runtime, policy, uid, ann.codes[1])
    assert len(set(new)) == 10 and not set(new) & set(ann.codes)
    rows = await recovery_rows(runtime, uid)
    assert len(rows) == 10  # the old ones, used or not, are gone
    assert {row.code_hash for row in rows} == hashes_of(new)
    assert all(row.used_at is None for row in rows)
    for old in ann.codes[2:4]:
        assert await check(runtime, policy, uid, old) is None
    assert await check(runtime, policy, uid, new[0]) is Method.RECOVERY_CODE
    # TOTP is untouched.
    row = await totp_row(runtime, uid)
    assert row is not None and row.enabled_at is not None

    [notice] = [m for m in await messages(runtime.db) if m.kind == "recovery_codes_regenerated"]
    assert notice.to_address == "ann@example.com"
    assert "with a recovery code" in notice.text_body
    [event] = events(security_log, "recovery_codes_regenerated")
    assert (event["user_id"], event["method"]) == (uid, "RECOVERY_CODE")
    text = log_text(security_log)
    assert not any(value in text for value in ann.codes + new)


async def test_regenerate_refusals_change_nothing(
    runtime: Runtime, policy: SecondFactorPolicy, totp_clock: Clock
) -> None:
    off = await create_account(runtime, "off")
    with pytest.raises(Rejected) as not_on:
        await regenerate(runtime, policy, off.id, "123456")
    assert codes_and_fields(not_on.value) == [(ProblemCode.TOTP_NOT_ENABLED, ())]
    ann = await enrolled(runtime, policy, totp_clock)
    with pytest.raises(Rejected) as wrong_password:
        await regenerate(runtime, policy, ann.user.id, ann.codes[0], WRONG)
    assert codes_and_fields(wrong_password.value) == [
        (ProblemCode.INVALID_CREDENTIALS, ("input", "password"))
    ]
    with pytest.raises(Rejected) as wrong:
        await regenerate(runtime, policy, ann.user.id, "abcd-efgh-ijkl-mnop")
    assert codes_and_fields(wrong.value) == INVALID_CODE
    assert await unused_hashes(runtime, ann.user.id) == hashes_of(ann.codes)


# --- reset --------------------------------------------------------------------------------


async def test_reset_removes_every_factor_and_is_logged_with_the_actor(
    runtime: Runtime,
    policy: SecondFactorPolicy,
    totp_clock: Clock,
    security_log: pytest.LogCaptureFixture,
) -> None:
    admin = await create_account(runtime, "root", admin=True)
    ann = await enrolled(runtime, policy, totp_clock)
    await add_challenge(runtime, ann.user.id)
    security_log.clear()
    user = await reset(runtime, admin, ann.user.id)
    assert user.id == ann.user.id
    assert await totp_row(runtime, ann.user.id) is None
    assert await recovery_rows(runtime, ann.user.id) == []
    assert await challenge_rows(runtime, ann.user.id) == []
    assert kinds(await messages(runtime.db))[-1] == (
        "second_factors_reset",
        "ann@example.com",
        "pending",
    )
    [event] = events(security_log)
    assert event == {
        "event": "second_factors_reset",
        "user_id": ann.user.id,
        "actor_id": admin.id,
        "level": logging.WARNING,
    }


async def test_reset_refusals(runtime: Runtime, policy: SecondFactorPolicy) -> None:
    admin = await create_account(runtime, "root", admin=True)
    ann = await create_account(runtime, "ann")
    with pytest.raises(Rejected) as off:
        await reset(runtime, admin, ann.id)
    assert codes_and_fields(off.value) == [(ProblemCode.TOTP_NOT_ENABLED, ("input", "userId"))]
    # A pending secret is not on, and the refusal leaves it as it was.
    await start(runtime, policy, ann.id)
    with pytest.raises(Rejected) as pending:
        await reset(runtime, admin, ann.id)
    assert codes_and_fields(pending.value) == [(ProblemCode.TOTP_NOT_ENABLED, ("input", "userId"))]
    assert await totp_row(runtime, ann.id) is not None
    with pytest.raises(Rejected) as nobody:
        await reset(runtime, admin, 999_999_999)
    assert codes_and_fields(nobody.value) == [(ProblemCode.NOT_FOUND, ("input", "userId"))]
    assert await messages(runtime.db) == []
