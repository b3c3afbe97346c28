"""usergraph.db.second_factors against a real database: the compare-and-set writes that keep a
TOTP step, a recovery code and a challenge single use across workers, and the reads of a page
of users' factors.

Rows are written with chosen times, hashes and ciphertexts, so states are exact; the concurrent
tests run each contender in its own session and transaction, as separate requests would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.helpers import create_account
from usergraph.db import second_factors as factor_queries
from usergraph.db.models import RecoveryCode, SecondFactorChallenge, TotpFactor, User
from usergraph.runtime import Runtime

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
CONTENDERS = 6
T = TypeVar("T")


def hash_of(n: int) -> str:
    return f"{n:064x}"


async def in_transaction(runtime: Runtime, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async with runtime.db.sessionmaker() as s, s.begin():
        return await work(s)


async def enroll(runtime: Runtime, user_id: int, *, enabled: bool = True, codes: int = 0) -> None:
    """A TOTP row for the user (on, unless enabled is False) and recovery codes 1..codes."""
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await factor_queries.replace_pending_totp(
            s, user_id=user_id, secret_ciphertext=f"cipher-{user_id}", now=NOW
        )
        if enabled:
            assert await factor_queries.enable_totp(s, user_id=user_id, now=NOW)
        if codes:
            await factor_queries.replace_recovery_codes(
                s, user_id=user_id, code_hashes=[hash_of(n) for n in range(1, codes + 1)], now=NOW
            )


async def stored_factor(runtime: Runtime, user_id: int) -> TotpFactor | None:
    async with runtime.db.read_sessionmaker() as s:
        return await factor_queries.get_totp(s, user_id)


async def take(runtime: Runtime, user_id: int, step: int) -> bool:
    return await in_transaction(
        runtime, lambda s: factor_queries.take_step(s, user_id=user_id, step=step)
    )


async def add_challenge(
    runtime: Runtime, user_id: int, n: int, *, expires_at: datetime = LATER
) -> int:
    async with runtime.db.sessionmaker() as s, s.begin():
        await factor_queries.add_challenge(
            s, user_id=user_id, token_hash=hash_of(n), now=NOW, expires_at=expires_at
        )
        challenge = await factor_queries.get_challenge(s, hash_of(n))
        assert challenge is not None
        return challenge.id


async def count(runtime: Runtime, challenge_id: int, *, max_attempts: int, now: datetime) -> bool:
    return await in_transaction(
        runtime,
        lambda s: factor_queries.count_attempt(
            s, challenge_id=challenge_id, max_attempts=max_attempts, now=now
        ),
    )


async def use_challenge(runtime: Runtime, challenge_id: int) -> bool:
    return await in_transaction(
        runtime, lambda s: factor_queries.use_challenge(s, challenge_id=challenge_id, now=NOW)
    )


async def use_code(runtime: Runtime, user_id: int, n: int) -> bool:
    return await in_transaction(
        runtime,
        lambda s: factor_queries.use_recovery_code(
            s, user_id=user_id, code_hash=hash_of(n), now=NOW
        ),
    )


async def row_counts(runtime: Runtime, user_id: int) -> tuple[int, int, int]:
    """(TOTP rows, recovery codes, challenges) of the user."""
    async with runtime.db.read_sessionmaker() as s:
        counts = []
        for model in (TotpFactor, RecoveryCode, SecondFactorChallenge):
            rows = await s.scalars(select(model).where(model.user_id == user_id))
            counts.append(len(rows.all()))
    return counts[0], counts[1], counts[2]


Work = Callable[[AsyncSession], Awaitable[bool]]


async def race(runtime: Runtime, work: Work, contenders: int) -> list[bool]:
    """work, run by several sessions at once, each in its own transaction."""
    return await race_all(runtime, [work] * contenders)


async def race_all(runtime: Runtime, works: list[Work]) -> list[bool]:
    """Each work run at once in a session and transaction of its own; their answers in order.

    On PostgreSQL every transaction has started (and read the factor rows) before any of them
    writes, so the writes truly overlap. SQLite's transactions take the write lock when they
    begin (BEGIN IMMEDIATE): they queue on the busy timeout instead, and waiting for the others
    inside one would deadlock.
    """
    overlap = runtime.db.engine.dialect.name != "sqlite"
    barrier = asyncio.Barrier(len(works))

    async def contender(work: Work) -> bool:
        async with runtime.db.sessionmaker() as s, s.begin():
            if overlap:
                await s.execute(select(TotpFactor.user_id))
                await barrier.wait()
            return await work(s)

    return list(await asyncio.gather(*(contender(work) for work in works)))


# --- TOTP steps ------------------------------------------------------------------------------


async def test_take_step_is_a_compare_and_set(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await enroll(runtime, ann.id)
    factor = await stored_factor(runtime, ann.id)
    assert factor is not None and factor.last_used_step is None
    assert await take(runtime, ann.id, 1000) is True
    assert await take(runtime, ann.id, 1000) is False  # the same step again
    assert await take(runtime, ann.id, 999) is False  # an older one
    assert await take(runtime, ann.id, 500) is False
    factor = await stored_factor(runtime, ann.id)
    assert factor is not None and factor.last_used_step == 1000
    assert await take(runtime, ann.id, 1001) is True  # a newer one
    assert await take(runtime, ann.id, 1000) is False
    factor = await stored_factor(runtime, ann.id)
    assert factor is not None and factor.last_used_step == 1001


async def test_take_step_is_per_user(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    bob = await create_account(runtime, "bob")
    await enroll(runtime, ann.id)
    await enroll(runtime, bob.id)
    assert await take(runtime, ann.id, 2000) is True
    assert await take(runtime, bob.id, 2000) is True
    assert await take(runtime, bob.id, 1999) is False
    # Steps beyond 32 bits (BigInteger) are stored as they are.
    assert await take(runtime, bob.id, 2**40) is True
    factor = await stored_factor(runtime, bob.id)
    assert factor is not None and factor.last_used_step == 2**40


async def test_take_step_without_a_factor_is_refused(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    assert await take(runtime, ann.id, 1) is False
    assert await take(runtime, 987654, 1) is False


async def test_one_of_concurrent_takes_of_a_step_wins(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await enroll(runtime, ann.id)
    results = await race(
        runtime, lambda s: factor_queries.take_step(s, user_id=ann.id, step=3000), CONTENDERS
    )
    assert sorted(results) == [False] * (CONTENDERS - 1) + [True]
    factor = await stored_factor(runtime, ann.id)
    assert factor is not None and factor.last_used_step == 3000
    # And again from there: one of the next step's takers wins too.
    results = await race(
        runtime, lambda s: factor_queries.take_step(s, user_id=ann.id, step=3001), CONTENDERS
    )
    assert results.count(True) == 1


async def test_concurrent_takes_of_different_steps_keep_the_newest(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await enroll(runtime, ann.id)
    steps = list(range(4000, 4000 + CONTENDERS))

    def taking(step: int) -> Work:
        return lambda s: factor_queries.take_step(s, user_id=ann.id, step=step)

    results = await race_all(runtime, [taking(step) for step in steps])
    # Whatever order they ran in, the newest step is taken (nothing newer can stop it), and
    # it is what stays stored: an older one never overwrites it.
    assert results[-1] is True
    factor = await stored_factor(runtime, ann.id)
    assert factor is not None and factor.last_used_step == steps[-1]
    assert [await take(runtime, ann.id, step) for step in steps] == [False] * len(steps)


# --- recovery codes --------------------------------------------------------------------------


async def test_a_recovery_code_works_once(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    bob = await create_account(runtime, "bob")
    await enroll(runtime, ann.id, codes=3)
    await enroll(runtime, bob.id, codes=3)
    assert await use_code(runtime, ann.id, 2) is True
    assert await use_code(runtime, ann.id, 2) is False
    assert await use_code(runtime, ann.id, 4) is False  # not one of hers
    assert await use_code(runtime, bob.id, 2) is True  # the same hash, another user's code
    assert await use_code(runtime, ann.id, 1) is True
    async with runtime.db.read_sessionmaker() as s:
        left = await factor_queries.recovery_codes_left(s, [ann.id, bob.id])
        rows = (await s.scalars(select(RecoveryCode).where(RecoveryCode.user_id == ann.id))).all()
    assert left == {ann.id: 1, bob.id: 2}
    assert {row.code_hash: row.used_at for row in rows} == {
        hash_of(1): NOW,
        hash_of(2): NOW,
        hash_of(3): None,
    }


async def test_one_of_concurrent_uses_of_a_recovery_code_wins(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await enroll(runtime, ann.id, codes=10)
    results = await race(
        runtime,
        lambda s: factor_queries.use_recovery_code(
            s, user_id=ann.id, code_hash=hash_of(7), now=NOW
        ),
        CONTENDERS,
    )
    assert sorted(results) == [False] * (CONTENDERS - 1) + [True]
    async with runtime.db.read_sessionmaker() as s:
        assert await factor_queries.recovery_codes_left(s, [ann.id]) == {ann.id: 9}


async def test_replace_recovery_codes_drops_the_old_ones(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await enroll(runtime, ann.id, codes=10)
    assert await use_code(runtime, ann.id, 1) is True
    async with runtime.db.sessionmaker() as s, s.begin():
        await factor_queries.replace_recovery_codes(
            s, user_id=ann.id, code_hashes=[hash_of(n) for n in range(100, 110)], now=LATER
        )
    assert await use_code(runtime, ann.id, 2) is False
    assert await use_code(runtime, ann.id, 100) is True
    async with runtime.db.read_sessionmaker() as s:
        assert await factor_queries.recovery_codes_left(s, [ann.id]) == {ann.id: 9}


# --- challenges ------------------------------------------------------------------------------


async def test_get_challenge_by_hash(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    challenge_id = await add_challenge(runtime, ann.id, 1)
    async with runtime.db.read_sessionmaker() as s:
        challenge = await factor_queries.get_challenge(s, hash_of(1))
        assert await factor_queries.get_challenge(s, hash_of(2)) is None
    assert challenge is not None
    assert (challenge.id, challenge.user_id, challenge.attempts, challenge.used_at) == (
        challenge_id,
        ann.id,
        0,
        None,
    )
    assert (challenge.created_at, challenge.expires_at) == (NOW, LATER)


async def test_count_attempt_stops_at_the_maximum(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    challenge_id = await add_challenge(runtime, ann.id, 1)
    other_id = await add_challenge(runtime, ann.id, 2)
    results = [await count(runtime, challenge_id, max_attempts=3, now=NOW) for _ in range(5)]
    assert results == [True, True, True, False, False]
    # A higher maximum would let it go on: the count is 3, not more.
    assert await count(runtime, challenge_id, max_attempts=4, now=NOW) is True
    assert await count(runtime, challenge_id, max_attempts=4, now=NOW) is False
    # Another challenge has its own count.
    assert await count(runtime, other_id, max_attempts=3, now=NOW) is True
    async with runtime.db.read_sessionmaker() as s:
        challenge = await factor_queries.get_challenge(s, hash_of(1))
        other = await factor_queries.get_challenge(s, hash_of(2))
    assert challenge is not None and challenge.attempts == 4
    assert other is not None and other.attempts == 1


async def test_concurrent_attempts_do_not_exceed_the_maximum(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    challenge_id = await add_challenge(runtime, ann.id, 1)
    results = await race(
        runtime,
        lambda s: factor_queries.count_attempt(
            s, challenge_id=challenge_id, max_attempts=2, now=NOW
        ),
        CONTENDERS,
    )
    assert results.count(True) == 2
    async with runtime.db.read_sessionmaker() as s:
        challenge = await factor_queries.get_challenge(s, hash_of(1))
    assert challenge is not None and challenge.attempts == 2


async def test_count_attempt_refuses_an_expired_challenge(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    challenge_id = await add_challenge(runtime, ann.id, 1)
    assert await count(runtime, challenge_id, max_attempts=5, now=LATER - timedelta(seconds=1))
    assert not await count(runtime, challenge_id, max_attempts=5, now=LATER)  # at expiry
    assert not await count(runtime, challenge_id, max_attempts=5, now=LATER + timedelta(days=1))


async def test_count_attempt_refuses_a_used_or_unknown_challenge(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    challenge_id = await add_challenge(runtime, ann.id, 1)
    assert await count(runtime, challenge_id, max_attempts=5, now=NOW)
    assert await use_challenge(runtime, challenge_id)
    assert not await count(runtime, challenge_id, max_attempts=5, now=NOW)
    assert not await count(runtime, challenge_id + 1000, max_attempts=5, now=NOW)


async def test_a_challenge_is_used_once(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    challenge_id = await add_challenge(runtime, ann.id, 1)
    other_id = await add_challenge(runtime, ann.id, 2)
    assert await use_challenge(runtime, challenge_id) is True
    assert await use_challenge(runtime, challenge_id) is False
    assert await use_challenge(runtime, other_id) is True
    async with runtime.db.read_sessionmaker() as s:
        challenge = await factor_queries.get_challenge(s, hash_of(1))
    assert challenge is not None and challenge.used_at == NOW


async def test_one_of_concurrent_uses_of_a_challenge_wins(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    challenge_id = await add_challenge(runtime, ann.id, 1)
    results = await race(
        runtime,
        lambda s: factor_queries.use_challenge(s, challenge_id=challenge_id, now=NOW),
        CONTENDERS,
    )
    assert sorted(results) == [False] * (CONTENDERS - 1) + [True]


async def test_delete_dead_challenges_keeps_the_live_ones(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    bob = await create_account(runtime, "bob")
    await add_challenge(runtime, ann.id, 1)  # live
    await add_challenge(runtime, ann.id, 2, expires_at=NOW - timedelta(seconds=1))  # expired
    used = await add_challenge(runtime, ann.id, 3)
    assert await use_challenge(runtime, used)
    await add_challenge(runtime, bob.id, 4, expires_at=NOW - timedelta(seconds=1))  # not hers
    async with runtime.db.sessionmaker() as s, s.begin():
        await factor_queries.delete_dead_challenges(s, user_id=ann.id, now=NOW)
    async with runtime.db.read_sessionmaker() as s:
        left = (await s.scalars(select(SecondFactorChallenge.token_hash))).all()
    assert sorted(left) == [hash_of(1), hash_of(4)]


# --- enrollment and removal ------------------------------------------------------------------


async def test_replace_pending_totp_replaces_a_pending_secret(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    later = NOW + timedelta(minutes=1)
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await factor_queries.replace_pending_totp(
            s, user_id=ann.id, secret_ciphertext="first", now=NOW
        )
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await factor_queries.replace_pending_totp(
            s, user_id=ann.id, secret_ciphertext="second", now=later
        )
    factor = await stored_factor(runtime, ann.id)
    assert factor is not None
    assert (factor.secret_ciphertext, factor.created_at, factor.enabled_at) == (
        "second",
        later,
        None,
    )
    async with runtime.db.read_sessionmaker() as s:
        assert await factor_queries.totp_enabled(s, ann.id) is False
    assert (await row_counts(runtime, ann.id))[0] == 1


async def test_concurrent_enrollments_of_one_user_take_turns(runtime: Runtime) -> None:
    """Started at once, each stores its secret in turn (the last one stays): none fails on the
    primary key, as two inserts of a pending row would."""
    ann = await create_account(runtime, "ann")

    def starting(n: int) -> Work:
        return lambda s: factor_queries.replace_pending_totp(
            s, user_id=ann.id, secret_ciphertext=f"secret-{n}", now=NOW
        )

    results = await race_all(runtime, [starting(n) for n in range(CONTENDERS)])
    assert results == [True] * CONTENDERS
    assert (await row_counts(runtime, ann.id))[0] == 1
    factor = await stored_factor(runtime, ann.id)
    assert factor is not None and factor.secret_ciphertext.startswith("secret-")


async def test_replace_pending_totp_refuses_when_totp_is_on(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await enroll(runtime, ann.id)
    assert await take(runtime, ann.id, 77)
    async with runtime.db.sessionmaker() as s, s.begin():
        assert not await factor_queries.replace_pending_totp(
            s, user_id=ann.id, secret_ciphertext="intruder", now=LATER
        )
    factor = await stored_factor(runtime, ann.id)
    assert factor is not None
    assert (factor.secret_ciphertext, factor.enabled_at, factor.last_used_step) == (
        f"cipher-{ann.id}",
        NOW,
        77,
    )
    async with runtime.db.read_sessionmaker() as s:
        assert await factor_queries.totp_enabled(s, ann.id) is True


async def test_enable_totp_once(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await enroll(runtime, ann.id, enabled=False)
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await factor_queries.enable_totp(s, user_id=ann.id, now=LATER)
        assert not await factor_queries.enable_totp(s, user_id=ann.id, now=LATER)
    factor = await stored_factor(runtime, ann.id)
    assert factor is not None and factor.enabled_at == LATER
    bob = await create_account(runtime, "bob")
    async with runtime.db.sessionmaker() as s, s.begin():
        assert not await factor_queries.enable_totp(s, user_id=bob.id, now=LATER)  # none pending


async def test_delete_factors(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    bob = await create_account(runtime, "bob")
    await enroll(runtime, ann.id, codes=10)
    await enroll(runtime, bob.id, codes=10)
    await add_challenge(runtime, ann.id, 1)
    await add_challenge(runtime, bob.id, 2)
    assert await row_counts(runtime, ann.id) == (1, 10, 1)
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await factor_queries.delete_factors(s, ann.id) is True
    assert await row_counts(runtime, ann.id) == (0, 0, 0)
    assert await row_counts(runtime, bob.id) == (1, 10, 1)
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await factor_queries.delete_factors(s, ann.id) is False  # nothing left


async def test_delete_factors_of_a_pending_secret(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await enroll(runtime, ann.id, enabled=False)
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await factor_queries.delete_factors(s, ann.id) is False  # TOTP was not on
    assert await row_counts(runtime, ann.id) == (0, 0, 0)


# --- a page of users -------------------------------------------------------------------------


async def test_factor_states_of_a_mix_of_users(runtime: Runtime) -> None:
    on = await create_account(runtime, "on_with_codes")
    spent = await create_account(runtime, "on_without_codes")
    pending = await create_account(runtime, "pending")
    plain = await create_account(runtime, "plain")
    await enroll(runtime, on.id, codes=10)
    await enroll(runtime, spent.id, codes=2)
    await enroll(runtime, pending.id, enabled=False, codes=3)
    for n in (1, 2):
        assert await use_code(runtime, spent.id, n)
    assert await use_code(runtime, on.id, 5)
    ids = [on.id, spent.id, pending.id, plain.id, 10**9]
    async with runtime.db.read_sessionmaker() as s:
        states = await factor_queries.factor_states(s, ids)
        enabled = await factor_queries.enabled_totp_of(s, ids)
        left = await factor_queries.recovery_codes_left(s, ids)
        assert await factor_queries.factor_states(s, [plain.id, pending.id]) == {}
        assert await factor_queries.factor_states(s, []) == {}
    assert states == {
        on.id: factor_queries.FactorState(totp_enabled_at=NOW, recovery_codes_left=9),
        spent.id: factor_queries.FactorState(totp_enabled_at=NOW, recovery_codes_left=0),
    }
    assert enabled == {on.id: NOW, spent.id: NOW}
    assert left == {on.id: 9, pending.id: 3}


async def test_totp_factors_after_pages_by_user_id(runtime: Runtime) -> None:
    users = [await create_account(runtime, f"user_{n}") for n in range(5)]
    for user in users:
        await enroll(runtime, user.id, enabled=user is not users[2])
    ids = sorted(user.id for user in users)
    async with runtime.db.sessionmaker() as s, s.begin():
        first = await factor_queries.totp_factors_after(s, user_id=0, limit=2, lock=True)
        second = await factor_queries.totp_factors_after(s, user_id=first[-1].user_id, limit=2)
        rest = await factor_queries.totp_factors_after(s, user_id=second[-1].user_id, limit=2)
        none = await factor_queries.totp_factors_after(s, user_id=ids[-1], limit=2)
    assert [row.user_id for row in first + second + rest] == ids  # pending ones too
    assert [len(first), len(second), len(rest), len(none)] == [2, 2, 1, 0]


# --- deleting a user -------------------------------------------------------------------------


async def test_deleting_a_user_deletes_their_factors(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    bob = await create_account(runtime, "bob")
    await enroll(runtime, ann.id, codes=10)
    await enroll(runtime, bob.id, codes=10)
    await add_challenge(runtime, ann.id, 1)
    await add_challenge(runtime, bob.id, 2)
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(delete(User).where(User.id == ann.id))
    assert await row_counts(runtime, ann.id) == (0, 0, 0)
    assert await row_counts(runtime, bob.id) == (1, 10, 1)
    # The database itself cascades (not only the ORM): a plain SQL delete does too.
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(text("DELETE FROM users WHERE id = :id"), {"id": bob.id})
    assert await row_counts(runtime, bob.id) == (0, 0, 0)
